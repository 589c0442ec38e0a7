#include "models/llama.h"

#include <torch/torch.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <limits>
#include <optional>

#include "io/safetensors.h"
#include "models/weights.h"
#include "util/error.h"

namespace guardkit::models {

// ---------------------------------------------------------------------------------------------------------------
// KVCache

void KVCache::reserve(int64_t capacity) {
  if (capacity <= capacity_) return;
  // Geometric growth so token-by-token decoding copies the cache O(log n) times, not n times.
  const int64_t grown = std::max(capacity, capacity_ + capacity_ / 2);
  auto options = at::TensorOptions().dtype(dtype_).device(device_);
  for (size_t layer = 0; layer < keys_.size(); ++layer) {
    for (auto* storage : {&keys_[layer], &values_[layer]}) {
      at::Tensor bigger = at::empty({batch_, kv_heads_, grown, head_dim_}, options);
      if (length_ > 0) bigger.narrow(2, 0, length_).copy_(storage->narrow(2, 0, length_));
      *storage = bigger;
    }
  }
  at::Tensor valid = at::zeros({batch_, grown}, at::TensorOptions().dtype(at::kBool).device(device_));
  if (length_ > 0) valid.narrow(1, 0, length_).copy_(valid_.narrow(1, 0, length_));
  valid_ = valid;
  capacity_ = grown;
}

KVCache KVCache::select_rows(const std::vector<int64_t>& rows, int64_t extra_capacity, int64_t length) const {
  for (int64_t row : rows)
    if (row < 0 || row >= batch_) fail("KV cache row {} out of range (batch {})", row, batch_);
  if (length > length_) fail("KV cache holds {} slots, cannot keep {}", length_, length);
  if (length < 0) length = length_;
  at::Tensor index = at::tensor(rows, at::TensorOptions().dtype(at::kLong)).to(device_);
  KVCache out;
  out.batch_ = static_cast<int64_t>(rows.size());
  out.kv_heads_ = kv_heads_;
  out.head_dim_ = head_dim_;
  out.dtype_ = dtype_;
  out.device_ = device_;
  out.keys_.resize(keys_.size());
  out.values_.resize(values_.size());
  out.reserve(length + std::max<int64_t>(extra_capacity, 1));
  for (size_t layer = 0; layer < keys_.size() && length > 0; ++layer) {
    out.keys_[layer].narrow(2, 0, length).copy_(keys_[layer].narrow(2, 0, length).index_select(0, index));
    out.values_[layer].narrow(2, 0, length).copy_(values_[layer].narrow(2, 0, length).index_select(0, index));
  }
  if (length > 0) out.valid_.narrow(1, 0, length).copy_(valid_.narrow(1, 0, length).index_select(0, index));
  // Real tokens among the kept slots: the positions the rows continue from.
  out.real_tokens_ = out.valid_.narrow(1, 0, length).to(at::kLong).sum(1);
  out.length_ = length;
  return out;
}

KVCache KVCache::repeat(int64_t batch, int64_t row, int64_t extra_capacity, int64_t length) const {
  if (batch <= 0) fail("KV cache repeat needs a positive batch, got {}", batch);
  return select_rows(std::vector<int64_t>(static_cast<size_t>(batch), row), extra_capacity, length);
}

KVCache KVCache::clone(int64_t extra_capacity) const {
  std::vector<int64_t> rows(static_cast<size_t>(batch_));
  for (int64_t i = 0; i < batch_; ++i) rows[static_cast<size_t>(i)] = i;
  return select_rows(rows, extra_capacity);
}

int64_t KVCache::nbytes() const {
  int64_t total = 0;
  for (const auto& t : keys_) total += t.defined() ? static_cast<int64_t>(t.nbytes()) : 0;
  for (const auto& t : values_) total += t.defined() ? static_cast<int64_t>(t.nbytes()) : 0;
  return total;
}

// ---------------------------------------------------------------------------------------------------------------
// Construction

LlamaModel::LlamaModel(LlamaConfig config, c10::ScalarType dtype, c10::Device device)
    : config_(std::move(config)), dtype_(dtype), device_(device) {
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kHalf)
    fail("Llama: unsupported compute dtype {}", c10::toString(dtype));
  const std::vector<float> inv_freq = config_.rope_inv_freq();
  inv_freq_ = at::tensor(inv_freq, at::TensorOptions().dtype(at::kFloat)).to(device_);
}

void LlamaModel::build(const ParamSource& source) {
  const LlamaConfig& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size, hd = c.head_dim;
  const int64_t q_dim = c.num_attention_heads * hd, kv_dim = c.num_key_value_heads * hd;
  auto matrix = [&](const std::string& name, std::vector<int64_t> shape) { return source(name, shape, ParamRole::Matrix); };
  auto norm = [&](const std::string& name, int64_t n) { return source(name, {n}, ParamRole::Norm); };
  auto bias = [&](const std::string& name, int64_t n) { return source(name, {n}, ParamRole::Bias); };
  embed_tokens_ = matrix("model.embed_tokens.weight", {V, H});
  if (!c.tie_word_embeddings) lm_head_ = matrix("lm_head.weight", {V, H});
  final_norm_ = norm("model.norm.weight", H);
  layers_.clear();
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    Layer layer;
    layer.input_norm = norm(p + "input_layernorm.weight", H);
    layer.post_attention_norm = norm(p + "post_attention_layernorm.weight", H);
    layer.q_weight = matrix(p + "self_attn.q_proj.weight", {q_dim, H});
    layer.k_weight = matrix(p + "self_attn.k_proj.weight", {kv_dim, H});
    layer.v_weight = matrix(p + "self_attn.v_proj.weight", {kv_dim, H});
    layer.o_weight = matrix(p + "self_attn.o_proj.weight", {H, q_dim});
    layer.gate_weight = matrix(p + "mlp.gate_proj.weight", {I, H});
    layer.up_weight = matrix(p + "mlp.up_proj.weight", {I, H});
    layer.down_weight = matrix(p + "mlp.down_proj.weight", {H, I});
    if (c.attention_bias) {
      layer.q_bias = bias(p + "self_attn.q_proj.bias", q_dim);
      layer.k_bias = bias(p + "self_attn.k_proj.bias", kv_dim);
      layer.v_bias = bias(p + "self_attn.v_proj.bias", kv_dim);
      layer.o_bias = bias(p + "self_attn.o_proj.bias", H);
    }
    if (c.mlp_bias) {
      layer.gate_bias = bias(p + "mlp.gate_proj.bias", I);
      layer.up_bias = bias(p + "mlp.up_proj.bias", I);
      layer.down_bias = bias(p + "mlp.down_proj.bias", H);
    }
    if (c.qk_norm) {
      layer.q_norm = norm(p + "self_attn.q_norm.weight", hd);
      layer.k_norm = norm(p + "self_attn.k_norm.weight", hd);
    }
    layers_.push_back(std::move(layer));
  }
}

std::vector<std::pair<std::string, at::Tensor>> LlamaModel::make_parameters(const LlamaConfig& config,
                                                                            const ParamSource& source) {
  std::vector<std::pair<std::string, at::Tensor>> named;
  LlamaModel scratch(config, at::kFloat, at::kCPU);  // only walks the names; its tensors are dropped
  scratch.build([&](const std::string& name, const std::vector<int64_t>& shape, ParamRole role) {
    at::Tensor t = source(name, shape, role);
    named.emplace_back(name, t);
    return t;
  });
  return named;
}

std::shared_ptr<LlamaModel> LlamaModel::load(const std::filesystem::path& dir, c10::ScalarType dtype,
                                             c10::Device device, const std::vector<std::string>& extra_tensors) {
  LlamaConfig config = LlamaConfig::from_file(dir);
  auto checkpoint = std::make_shared<const io::Checkpoint>(io::Checkpoint::open(dir));
  std::shared_ptr<LlamaModel> model(new LlamaModel(std::move(config), dtype, device));
  model->checkpoint_ = checkpoint;
  WeightLoader loader(checkpoint, dtype, device);
  model->build([&](const std::string& name, const std::vector<int64_t>& shape, ParamRole) {
    return loader.get(name, shape);
  });
  // HF may save the RoPE buffers; a tied model may still store a copy of the LM head (unused, as in HF).
  std::vector<std::string> ignored = extra_tensors;
  ignored.push_back("rotary_emb.inv_freq");
  if (model->config_.tie_word_embeddings) ignored.push_back("lm_head.weight");
  loader.check_all_used(ignored);
  return model;
}

std::shared_ptr<LlamaModel> LlamaModel::from_tensors(const LlamaConfig& config,
                                                     const std::map<std::string, at::Tensor>& tensors,
                                                     c10::ScalarType dtype, c10::Device device) {
  std::shared_ptr<LlamaModel> model(new LlamaModel(config, dtype, device));
  model->build([&](const std::string& name, const std::vector<int64_t>& shape, ParamRole) {
    auto it = tensors.find(name);
    if (it == tensors.end()) fail("Llama weights: missing tensor '{}'", name);
    if (it->second.sizes().vec() != shape)
      fail("Llama weights: tensor '{}' has shape [{}] but the config implies [{}]", name,
           fmt::join(it->second.sizes().vec(), ", "), fmt::join(shape, ", "));
    return it->second.to(device, dtype).contiguous();
  });
  return model;
}

std::map<std::string, at::Tensor> LlamaModel::random_tensors(const LlamaConfig& c, uint64_t seed, double std,
                                                              c10::ScalarType dtype) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto options = at::TensorOptions().dtype(at::kFloat);
  auto parameters = make_parameters(c, [&](const std::string&, const std::vector<int64_t>& shape, ParamRole role) {
    at::Tensor noise = at::randn(shape, generator, options);
    switch (role) {
      case ParamRole::Norm: return (1.0 + 0.1 * noise).to(dtype);
      case ParamRole::Bias: return (0.1 * noise).to(dtype);
      case ParamRole::Matrix: break;
    }
    return (noise * std).to(dtype);
  });
  return std::map<std::string, at::Tensor>(parameters.begin(), parameters.end());
}

KVCache LlamaModel::new_cache(int64_t batch, int64_t capacity) const {
  if (batch <= 0) fail("KV cache needs a positive batch, got {}", batch);
  KVCache cache;
  cache.batch_ = batch;
  cache.kv_heads_ = config_.num_key_value_heads;
  cache.head_dim_ = config_.head_dim;
  cache.dtype_ = dtype_;
  cache.device_ = device_;
  cache.keys_.resize(static_cast<size_t>(config_.num_hidden_layers));
  cache.values_.resize(static_cast<size_t>(config_.num_hidden_layers));
  cache.real_tokens_ = at::zeros({batch}, at::TensorOptions().dtype(at::kLong).device(device_));
  cache.reserve(std::max<int64_t>(capacity, 16));
  return cache;
}

// ---------------------------------------------------------------------------------------------------------------
// Layers

// x: [..., H] -> [..., H]. As HF LlamaRMSNorm: normalise in float32, cast back, then scale by the weight.
at::Tensor LlamaModel::rms_norm(const at::Tensor& x, const at::Tensor& weight) const {
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + config_.rms_norm_eps);
  return weight * normed.to(x.scalar_type());
}

namespace {

// x: [..., d] -> [-x2, x1] with x1, x2 the two halves (HF rotate_half layout, not interleaved pairs).
at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  return bias.defined() ? at::linear(x, weight, bias) : at::linear(x, weight);
}

}  // namespace

// x: [B, T, H] (normed), cos/sin: [B, 1, T, hd], mask: [B, 1, 1, T, S] additive -> [B, T, H].
// Appends this chunk's keys/values to `cache` (when given) and attends over all S = cached + T slots.
at::Tensor LlamaModel::attention(const Layer& layer, int64_t index, const at::Tensor& x, const at::Tensor& cos,
                                 const at::Tensor& sin, const at::Tensor& mask, KVCache* cache) const {
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t heads = config_.num_attention_heads, kv_heads = config_.num_key_value_heads;
  const int64_t hd = config_.head_dim, groups = config_.query_groups();

  at::Tensor q = linear(x, layer.q_weight, layer.q_bias).view({B, T, heads, hd});     // [B, T, nh, hd]
  at::Tensor k = linear(x, layer.k_weight, layer.k_bias).view({B, T, kv_heads, hd});  // [B, T, kvh, hd]
  if (config_.qk_norm) {  // Qwen3: each head's vector normalised over head_dim, one weight shared by all heads
    q = rms_norm(q, layer.q_norm);
    k = rms_norm(k, layer.k_norm);
  }
  q = q.transpose(1, 2);  // [B, nh, T, hd]
  k = k.transpose(1, 2);  // [B, kvh, T, hd]
  at::Tensor v = linear(x, layer.v_weight, layer.v_bias).view({B, T, kv_heads, hd}).transpose(1, 2);  // [B, kvh, T, hd]
  q = q * cos + rotate_half(q) * sin;
  k = k * cos + rotate_half(k) * sin;

  at::Tensor keys = k, values = v;  // [B, kvh, S, hd]
  if (cache) {
    const int64_t past = cache->length_;
    at::Tensor& key_store = cache->keys_[static_cast<size_t>(index)];
    at::Tensor& value_store = cache->values_[static_cast<size_t>(index)];
    key_store.narrow(2, past, T).copy_(k);
    value_store.narrow(2, past, T).copy_(v);
    keys = key_store.narrow(2, 0, past + T);
    values = value_store.narrow(2, 0, past + T);
  }
  const int64_t S = keys.size(2);

  // Grouped-query attention without copying K/V per query head: query head h = kv_head * groups + g uses kv head
  // h / groups (HF repeat_kv), so the groups' queries stack into one matrix per kv head.
  // The attention products run in float32 whatever the model dtype: q, k, v are small ([T, heads * hd]) to
  // convert, while the [T, S] score matrix would otherwise pay two bf16<->fp32 round trips around the float32
  // softmax that HF uses (and float32 scores are more accurate).
  at::Tensor grouped_q = q.reshape({B, kv_heads, groups * T, hd}).to(at::kFloat);                // [B, kvh, g*T, hd]
  at::Tensor scores = at::matmul(grouped_q, keys.to(at::kFloat).transpose(2, 3)) / std::sqrt(static_cast<double>(hd));
  scores = scores.view({B, kv_heads, groups, T, S}) + mask;                                      // [B, kvh, g, T, S]
  at::Tensor probs = at::softmax(scores, -1);
  at::Tensor context = at::matmul(probs.view({B, kv_heads, groups * T, S}), values.to(at::kFloat));  // [B, kvh, g*T, hd]
  context = context.view({B, heads, T, hd}).transpose(1, 2).reshape({B, T, heads * hd}).to(dtype_);  // [B, T, nh*hd]
  return linear(context, layer.o_weight, layer.o_bias);                                           // [B, T, H]
}

// x: [B, T, H] (normed) -> [B, T, H]: down(act(gate(x)) * up(x)).
at::Tensor LlamaModel::mlp(const Layer& layer, const at::Tensor& x) const {
  at::Tensor gate = linear(x, layer.gate_weight, layer.gate_bias);  // [B, T, I]
  const std::string& act = config_.hidden_act;
  if (act == "silu" || act == "swish") gate = at::silu(gate);
  else if (act == "gelu") gate = at::gelu(gate);
  else if (act == "gelu_new" || act == "gelu_pytorch_tanh") gate = at::gelu(gate, "tanh");
  else if (act == "relu") gate = at::relu(gate);
  else fail("Llama: unsupported hidden_act '{}'", act);
  return linear(gate * linear(x, layer.up_weight, layer.up_bias), layer.down_weight, layer.down_bias);
}

// ---------------------------------------------------------------------------------------------------------------
// Forward

ForwardOutput LlamaModel::forward(const at::Tensor& input_ids_in, const at::Tensor& attention_mask, KVCache* cache,
                                  const ForwardOptions& options) const {
  std::optional<at::NoGradGuard> no_grad;
  if (!options.enable_grad) no_grad.emplace();
  if (input_ids_in.dim() != 2 || input_ids_in.size(1) == 0 || input_ids_in.size(0) == 0)
    fail("Llama forward: input_ids must be [batch, tokens] with both > 0, got [{}]",
         fmt::join(input_ids_in.sizes().vec(), ", "));
  const int64_t B = input_ids_in.size(0), T = input_ids_in.size(1), H = config_.hidden_size;
  at::Tensor input_ids = input_ids_in.to(device_, at::kLong);
  {
    auto [min_id, max_id] = at::aminmax(input_ids);
    if (min_id.item<int64_t>() < 0 || max_id.item<int64_t>() >= config_.vocab_size)
      fail("Llama forward: token id out of range [0, {}): min {}, max {}", config_.vocab_size,
           min_id.item<int64_t>(), max_id.item<int64_t>());
  }
  at::Tensor real;  // [B, T] bool
  if (attention_mask.defined()) {
    if (attention_mask.sizes() != input_ids.sizes())
      fail("Llama forward: attention_mask shape [{}] differs from input_ids [{}]",
           fmt::join(attention_mask.sizes().vec(), ", "), fmt::join(input_ids.sizes().vec(), ", "));
    real = attention_mask.to(device_).ne(0);
  } else {
    real = at::ones({B, T}, at::TensorOptions().dtype(at::kBool).device(device_));
  }
  // Index of each row's last real token in this chunk; a row without one has nothing to read out.
  at::Tensor steps = at::arange(1, T + 1, at::TensorOptions().dtype(at::kLong).device(device_));
  at::Tensor last_index = (real.to(at::kLong) * steps).amax(1) - 1;  // [B]
  if (last_index.min().item<int64_t>() < 0) fail("Llama forward: a row of the batch has no real token");

  int64_t past = 0;
  at::Tensor real_before = at::zeros({B}, at::TensorOptions().dtype(at::kLong).device(device_));
  if (cache) {
    if (cache->keys_.size() != static_cast<size_t>(config_.num_hidden_layers) ||
        cache->kv_heads_ != config_.num_key_value_heads || cache->head_dim_ != config_.head_dim ||
        cache->dtype_ != dtype_)
      fail("Llama forward: the KV cache was made for a different model");
    if (cache->batch_ != B) fail("Llama forward: KV cache holds {} rows but the batch has {}", cache->batch_, B);
    past = cache->length_;
    real_before = cache->real_tokens_;
    cache->reserve(past + T);
    cache->valid_.narrow(1, past, T).copy_(real);
  }
  const int64_t S = past + T;

  // Positions: each row counts its own real tokens (left padding and cached prefixes both shift them).
  at::Tensor positions = (real_before.unsqueeze(1) + real.to(at::kLong).cumsum(1) - 1).clamp_min(0);  // [B, T]
  at::Tensor angles = positions.to(at::kFloat).unsqueeze(-1) * inv_freq_;  // [B, T, hd/2], float32 as HF
  at::Tensor emb = at::cat({angles, angles}, -1);                         // [B, T, hd]
  const float scaling = config_.rope_attention_scaling();                  // yarn's attention factor, else 1
  at::Tensor cos = (emb.cos() * scaling).to(dtype_).unsqueeze(1);         // [B, 1, T, hd]
  at::Tensor sin = (emb.sin() * scaling).to(dtype_).unsqueeze(1);

  // Additive float32 mask [B, 1, 1, T, S]: slot j is visible to new token t when it holds a real token and j <= past + t.
  // The dtype's lowest value (not -inf) as in HF, so a padding query with nothing visible gets a uniform softmax
  // instead of NaN.
  at::Tensor key_valid = cache ? cache->valid_.narrow(1, 0, S) : real;  // [B, S]
  at::Tensor key_pos = at::arange(S, at::TensorOptions().dtype(at::kLong).device(device_));
  at::Tensor query_pos = at::arange(past, S, at::TensorOptions().dtype(at::kLong).device(device_));
  at::Tensor causal = key_pos.unsqueeze(0) <= query_pos.unsqueeze(1);     // [T, S]
  at::Tensor visible = key_valid.unsqueeze(1) & causal.unsqueeze(0);     // [B, T, S]
  at::Tensor mask = at::zeros({B, 1, 1, T, S}, at::TensorOptions().dtype(at::kFloat).device(device_))
                        .masked_fill_(visible.logical_not().view({B, 1, 1, T, S}), std::numeric_limits<float>::lowest());

  ForwardOutput out;
  out.last_index = last_index;
  at::Tensor rows = at::arange(B, at::TensorOptions().dtype(at::kLong).device(device_));
  auto at_last = [&](const at::Tensor& h) { return h.index({rows, last_index}).to(at::kFloat); };  // [B, H]

  at::Tensor x = embed_tokens_.index_select(0, input_ids.reshape({-1})).view({B, T, H});  // [B, T, H]
  if (options.layer_hidden_at_last) out.layer_hidden.push_back(at_last(x));
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& layer = layers_[i];
    at::Tensor h = x + attention(layer, static_cast<int64_t>(i), rms_norm(x, layer.input_norm), cos, sin, mask, cache);
    x = h + mlp(layer, rms_norm(h, layer.post_attention_norm));  // [B, T, H]
    if (options.layer_hidden_at_last && i + 1 < layers_.size()) out.layer_hidden.push_back(at_last(x));
  }
  if (cache) {
    cache->length_ = S;
    cache->real_tokens_ = real_before + real.to(at::kLong).sum(1);
  }

  at::Tensor last_normed;  // [B, H] in the model dtype
  if (options.logits == LogitsMode::All || options.all_hidden) {
    at::Tensor normed = rms_norm(x, final_norm_);                        // [B, T, H]
    if (options.all_hidden) out.hidden = normed.to(at::kFloat);
    if (options.logits == LogitsMode::All) out.logits = at::linear(normed, lm_head()).to(at::kFloat);  // [B, T, V]
    last_normed = normed.index({rows, last_index});
  }
  if (options.logits != LogitsMode::All) {
    if (!last_normed.defined()) last_normed = rms_norm(x.index({rows, last_index}), final_norm_);  // [B, H]
    if (options.logits == LogitsMode::Last) {
      out.logits = at::linear(last_normed, lm_head()).to(at::kFloat);  // [B, V]
    } else if (options.logits == LogitsMode::LastChosen) {
      if (options.chosen_ids.empty()) fail("Llama forward: LastChosen logits need chosen_ids");
      for (int64_t id : options.chosen_ids)
        if (id < 0 || id >= config_.vocab_size) fail("Llama forward: chosen id {} out of range", id);
      at::Tensor ids = at::tensor(options.chosen_ids, at::TensorOptions().dtype(at::kLong)).to(device_);
      // Only these rows of the LM head: 2 x H instead of V x H multiply-adds per row.
      out.logits = at::linear(last_normed, lm_head().index_select(0, ids)).to(at::kFloat);  // [B, n]
    }
  }
  out.last_hidden = last_normed.to(at::kFloat);
  if (options.layer_hidden_at_last) out.layer_hidden.push_back(out.last_hidden);
  return out;
}

ForwardOutput LlamaModel::forward(const std::vector<int64_t>& ids, KVCache* cache,
                                  const ForwardOptions& options) const {
  if (ids.empty()) fail("Llama forward: empty input");
  at::Tensor input = at::tensor(ids, at::TensorOptions().dtype(at::kLong)).view({1, -1});
  return forward(input, at::Tensor(), cache, options);
}

std::pair<at::Tensor, at::Tensor> LlamaModel::pad_batch(const std::vector<std::vector<int64_t>>& sequences,
                                                        int64_t pad_id, bool left_padding) {
  if (sequences.empty()) fail("pad_batch: no sequences");
  size_t longest = 0;
  for (const auto& s : sequences) longest = std::max(longest, s.size());
  if (longest == 0) fail("pad_batch: every sequence is empty");
  const int64_t B = static_cast<int64_t>(sequences.size()), T = static_cast<int64_t>(longest);
  at::Tensor ids = at::full({B, T}, pad_id, at::TensorOptions().dtype(at::kLong));
  at::Tensor mask = at::zeros({B, T}, at::TensorOptions().dtype(at::kLong));
  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    const auto& s = sequences[static_cast<size_t>(b)];
    const int64_t offset = left_padding ? T - static_cast<int64_t>(s.size()) : 0;
    for (size_t t = 0; t < s.size(); ++t) {
      ids_a[b][offset + static_cast<int64_t>(t)] = s[t];
      mask_a[b][offset + static_cast<int64_t>(t)] = 1;
    }
  }
  return {ids, mask};
}

}  // namespace guardkit::models
