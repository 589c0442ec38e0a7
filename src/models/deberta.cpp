#include "models/deberta.h"

#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <mutex>

#include "io/safetensors.h"
#include "models/weights.h"
#include "util/error.h"

namespace guardkit::models {
namespace {

// ---------------------------------------------------------------------------------------------------------------
// Parameters: where tensors come from (a checkpoint or a random initialiser) and the named list they end up in.

class ParamSource {
 public:
  virtual ~ParamSource() = default;
  virtual at::Tensor get(const std::string& name, const std::vector<int64_t>& shape) = 0;
  virtual bool has(const std::string& name) const = 0;
};

class CheckpointSource : public ParamSource {
 public:
  explicit CheckpointSource(const WeightLoader& loader) : loader_(loader) {}
  at::Tensor get(const std::string& name, const std::vector<int64_t>& shape) override { return loader_.get(name, shape); }
  bool has(const std::string& name) const override { return loader_.has(name); }

 private:
  const WeightLoader& loader_;
};

class RandomSource : public ParamSource {
 public:
  RandomSource(uint64_t seed, double range, c10::ScalarType dtype, c10::Device device)
      : generator_(at::detail::createCPUGenerator(seed)), range_(range), dtype_(dtype), device_(device) {}
  at::Tensor get(const std::string& name, const std::vector<int64_t>& shape) override {
    auto ends_with = [&](const std::string& suffix) {
      return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    at::Tensor noise = at::normal(0.0, 1.0, shape, generator_, at::TensorOptions().dtype(at::kFloat));
    at::Tensor value;
    if (ends_with("LayerNorm.weight")) value = 1.0 + 0.1 * noise;  // not exactly 1 so a port ignoring it shows
    else if (ends_with(".bias")) value = 0.1 * range_ * noise;
    else value = range_ * noise;
    return value.to(device_, dtype_);
  }
  bool has(const std::string&) const override { return true; }

 private:
  at::Generator generator_;
  double range_;
  c10::ScalarType dtype_;
  c10::Device device_;
};

// Collects parameters under their full HF names while the modules are built.
class ParamBuilder {
 public:
  ParamBuilder(ParamSource& source, std::vector<std::pair<std::string, at::Tensor>>& named)
      : source_(source), named_(named) {}
  at::Tensor take(const std::string& name, const std::vector<int64_t>& shape) {
    at::Tensor tensor = source_.get(name, shape);
    named_.emplace_back(name, tensor);
    return tensor;
  }
  bool has(const std::string& name) const { return source_.has(name); }

 private:
  ParamSource& source_;
  std::vector<std::pair<std::string, at::Tensor>>& named_;
};

std::string join(const std::string& prefix, const std::string& name) { return prefix.empty() ? name : prefix + "." + name; }

// ---------------------------------------------------------------------------------------------------------------
// Modules. Each has a build function (parameters by HF name) and one forward function with shapes.

struct Linear {
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out] or undefined
  at::Tensor operator()(const at::Tensor& x) const { return at::linear(x, weight, bias); }  // [..., in] -> [..., out]
};

Linear build_linear(ParamBuilder& b, const std::string& prefix, int64_t in, int64_t out, bool bias = true) {
  Linear linear;
  linear.weight = b.take(join(prefix, "weight"), {out, in});
  if (bias) linear.bias = b.take(join(prefix, "bias"), {out});
  return linear;
}

struct LayerNorm {
  at::Tensor weight, bias;  // [H]
  double eps = 1e-7;
  at::Tensor operator()(const at::Tensor& x) const {  // [..., H] -> [..., H]
    return at::layer_norm(x, {weight.size(0)}, weight, bias, eps);
  }
};

LayerNorm build_layer_norm(ParamBuilder& b, const std::string& prefix, int64_t size, double eps) {
  LayerNorm norm;
  norm.eps = eps;
  // Old DeBERTa checkpoints name LayerNorm parameters gamma/beta (HF renames them at load); we read either and keep
  // the modern names, which save_pretrained writes.
  if (!b.has(join(prefix, "weight")) && b.has(join(prefix, "gamma"))) {
    norm.weight = b.take(join(prefix, "gamma"), {size});
    norm.bias = b.take(join(prefix, "beta"), {size});
  } else {
    norm.weight = b.take(join(prefix, "weight"), {size});
    norm.bias = b.take(join(prefix, "bias"), {size});
  }
  return norm;
}

at::Tensor activation(const std::string& name, const at::Tensor& x) {
  if (name == "gelu" || name == "gelu_python") return at::gelu(x);
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return at::gelu(x, "tanh");
  if (name == "quick_gelu") return x * at::sigmoid(1.702 * x);
  if (name == "relu") return at::relu(x);
  if (name == "silu" || name == "swish") return at::silu(x);
  if (name == "tanh") return at::tanh(x);
  if (name == "mish") return at::mish(x);
  if (name == "linear") return x;
  fail("unsupported activation '{}'", name);
}

struct Embeddings {
  at::Tensor word;        // [V, E]
  at::Tensor position;    // [max_position_embeddings, E] when position_biased_input
  at::Tensor token_type;  // [type_vocab_size, E] when type_vocab_size > 0
  Linear embed_proj;      // E -> H (no bias) when embedding_size != hidden_size
  LayerNorm norm;
};

struct SelfAttention {
  Linear query, key, value;  // H -> A
  Linear pos_key, pos_query; // H -> A, only when relative attention without share_att_key (c2p / p2c)
};

struct EncoderLayer {
  SelfAttention attention;
  Linear attention_output;  // A -> H
  LayerNorm attention_norm;
  Linear intermediate;      // H -> I
  Linear output;            // I -> H
  LayerNorm output_norm;
};

struct Encoder {
  std::vector<EncoderLayer> layers;
  at::Tensor rel_embeddings;  // [2 * span, H] when relative_attention
  LayerNorm rel_norm;         // when norm_rel_ebd contains layer_norm
  bool has_rel_norm = false;
};

// The position-key / position-query projections of the relative embeddings for one layer, in head layout.
struct RelativeProjections {
  at::Tensor pos_key;        // [heads, 2*span, d] (c2p)
  at::Tensor pos_query;      // [heads, 2*span, d] (p2c)
};

}  // namespace

struct DebertaClassifier::Impl {
  DebertaConfig config;
  c10::ScalarType dtype = at::kFloat;
  c10::Device device = c10::Device(c10::kCPU);
  bool trainable = false;
  std::vector<std::pair<std::string, at::Tensor>> named;
  // Weights may alias the checkpoint's mmap (zero-copy load): the mapping lives as long as the model.
  std::shared_ptr<const io::Checkpoint> checkpoint;
  Embeddings embeddings;
  Encoder encoder;
  Linear pooler;      // P -> P
  Linear classifier;  // P -> num_labels

  // Inference cache of the relative projections (they depend only on weights): valid while every tensor they were
  // computed from keeps its version counter (any in-place update, e.g. an optimizer step, bumps it).
  mutable std::mutex cache_mutex;
  mutable std::vector<RelativeProjections> cached_projections;
  mutable std::vector<int64_t> cached_versions;

  void build(ParamSource& source);
  std::vector<int64_t> projection_versions() const;
  std::vector<RelativeProjections> relative_projections() const;
  std::vector<RelativeProjections> projections_for_forward() const;
};

void DebertaClassifier::Impl::build(ParamSource& source) {
  const DebertaConfig& c = config;
  ParamBuilder b(source, named);
  const int64_t H = c.hidden_size, E = c.embed_size(), A = c.all_head_size(), I = c.intermediate_size;
  const double eps = c.layer_norm_eps;

  embeddings.word = b.take("deberta.embeddings.word_embeddings.weight", {c.vocab_size, E});
  if (c.position_biased_input)
    embeddings.position = b.take("deberta.embeddings.position_embeddings.weight", {c.max_position_embeddings, E});
  if (c.type_vocab_size > 0)
    embeddings.token_type = b.take("deberta.embeddings.token_type_embeddings.weight", {c.type_vocab_size, E});
  if (E != H) embeddings.embed_proj = build_linear(b, "deberta.embeddings.embed_proj", E, H, /*bias=*/false);
  embeddings.norm = build_layer_norm(b, "deberta.embeddings.LayerNorm", H, eps);

  if (c.relative_attention)
    encoder.rel_embeddings = b.take("deberta.encoder.rel_embeddings.weight", {2 * c.relative_span(), H});
  // HF builds this LayerNorm from norm_rel_ebd alone, with or without relative attention.
  encoder.has_rel_norm = c.norm_relative_embeddings();
  if (encoder.has_rel_norm) encoder.rel_norm = build_layer_norm(b, "deberta.encoder.LayerNorm", H, eps);

  encoder.layers.resize(c.num_hidden_layers);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "deberta.encoder.layer." + std::to_string(i);
    EncoderLayer& layer = encoder.layers[i];
    layer.attention.query = build_linear(b, p + ".attention.self.query_proj", H, A);
    layer.attention.key = build_linear(b, p + ".attention.self.key_proj", H, A);
    layer.attention.value = build_linear(b, p + ".attention.self.value_proj", H, A);
    if (c.relative_attention && !c.share_att_key) {
      if (c.has_c2p()) layer.attention.pos_key = build_linear(b, p + ".attention.self.pos_key_proj", H, A);
      if (c.has_p2c()) layer.attention.pos_query = build_linear(b, p + ".attention.self.pos_query_proj", H, A);
    }
    layer.attention_output = build_linear(b, p + ".attention.output.dense", A, H);
    layer.attention_norm = build_layer_norm(b, p + ".attention.output.LayerNorm", H, eps);
    layer.intermediate = build_linear(b, p + ".intermediate.dense", H, I);
    layer.output = build_linear(b, p + ".output.dense", I, H);
    layer.output_norm = build_layer_norm(b, p + ".output.LayerNorm", H, eps);
  }
  const int64_t P = c.pooler_size();
  if (P != H) fail("pooler_hidden_size {} differs from hidden_size {}: the ContextPooler reads the [CLS] state", P, H);
  pooler = build_linear(b, "pooler.dense", P, P);
  classifier = build_linear(b, "classifier", P, c.num_labels);
}

namespace {

// HF make_log_bucket_position, op for op in float32 so bucket edges round identically. relative: int64, any shape.
at::Tensor log_bucket(const at::Tensor& relative, int64_t bucket_size, int64_t max_position) {
  if (bucket_size <= 0 || max_position <= 0) return relative;
  const int64_t mid = bucket_size / 2;
  at::Tensor sign = at::sign(relative);
  at::Tensor abs_pos = at::where((relative < mid).logical_and(relative > -mid),
                                 at::scalar_tensor(mid - 1, at::kLong), at::abs(relative));
  at::Tensor log_denominator = at::log(at::scalar_tensor(static_cast<double>(max_position - 1) / mid, at::kFloat));
  at::Tensor log_pos = at::ceil(at::log(abs_pos.to(at::kFloat) / static_cast<double>(mid)) / log_denominator *
                                static_cast<double>(mid - 1)) + static_cast<double>(mid);
  at::Tensor bucket = at::where(abs_pos <= mid, relative.to(at::kFloat), log_pos * sign);
  return bucket.to(at::kLong);
}

// HF build_relative_position: [T, T] int64 with entry [q, k] = bucket(q - k).
at::Tensor relative_positions(int64_t T, int64_t bucket_size, int64_t max_position) {
  at::Tensor ids = at::arange(T, at::kLong);
  return log_bucket(ids.unsqueeze(1) - ids.unsqueeze(0), bucket_size, max_position);
}

// rel [2*span, H] -> [heads, 2*span, d]
at::Tensor to_heads(const at::Tensor& x, int64_t heads) {
  return x.view({x.size(0), heads, -1}).permute({1, 0, 2}).contiguous();
}

RelativeProjections project_relative(const SelfAttention& a, const DebertaConfig& c, const at::Tensor& rel) {
  RelativeProjections out;
  const int64_t heads = c.num_attention_heads;
  if (c.has_c2p()) {
    out.pos_key = to_heads(c.share_att_key ? a.key(rel) : a.pos_key(rel), heads);
  }
  if (c.has_p2c()) out.pos_query = to_heads(c.share_att_key ? a.query(rel) : a.pos_query(rel), heads);
  return out;
}

// x [B, T, A] -> [B, heads, T, d]
at::Tensor split_heads(const at::Tensor& x, int64_t heads) {
  return x.view({x.size(0), x.size(1), heads, -1}).permute({0, 2, 1, 3});
}

// A [B, h, T, 2T-1] whose column r holds the score for relative distance T-1-r -> the [B, h, T, T] view whose
// [i, j] entry is A[i, T-1 + j - i]: offset i*(2T-2) + (T-1) + j. Zero-copy: replaces HF's torch.gather.
at::Tensor diagonal_view(const at::Tensor& A, int64_t T) {
  const int64_t B = A.size(0), h = A.size(1), W = 2 * T - 1;
  return A.as_strided({B, h, T, T}, {h * T * W, T * W, W - 1, 1}, A.storage_offset() + T - 1);
}

struct AttentionContext {
  at::Tensor keep;       // [B, 1, T, T] bool: attention allowed (undefined when nothing is padded)
  bool gather = false;   // HF's formulation (reference): [T, T] index tensors and torch.gather
  at::Tensor relative;   // gather: [T, T] bucketed relative positions bucket(q - k)
  // diagonal: for each distance delta_r = T-1-r (r = 0..2T-2), the row of pos_key (c2p) and pos_query (p2c) HF's
  // clamp(bucket(delta) + span) / clamp(span - bucket(delta)) selects. The 2T-1 selected rows are multiplied once and
  // the T x T scores read as a strided view: no T x T x 2span product and no gather.
  at::Tensor c2p_rows, p2c_rows;  // [2T-1] int64
  int64_t span = 0;
};

// One DisentangledSelfAttention. x [B, T, H] -> context [B, T, A]
at::Tensor self_attention_forward(const SelfAttention& a, const DebertaConfig& c, const at::Tensor& x,
                                  const AttentionContext& ctx, const RelativeProjections& rel) {
  const int64_t B = x.size(0), T = x.size(1), heads = c.num_attention_heads, d = c.head_size();
  // HF: sqrt(float32(d * scale_factor)), scale_factor = 1 + [c2p] + [p2c]; dividing q once scales every term.
  const double scale = std::sqrt(static_cast<double>(static_cast<float>(d * c.attention_scale_factor())));
  at::Tensor q = split_heads(a.query(x), heads) / scale;    // [B, h, T, d], pre-scaled
  at::Tensor k = split_heads(a.key(x), heads);              // [B, h, T, d]
  at::Tensor v = split_heads(a.value(x), heads);            // [B, h, T, d]
  at::Tensor scores = at::matmul(q, k.transpose(-1, -2));   // [B, h, T, T]

  if (c.relative_attention) {
    const int64_t span = ctx.span;
    if (c.has_c2p()) {  // content -> position: q_i . pos_key[clamp(bucket(i - j) + span)]
      at::Tensor c2p;
      if (ctx.gather) {
        at::Tensor all = at::matmul(q, rel.pos_key.transpose(-1, -2));                 // [B, h, T, 2span]
        at::Tensor index = at::clamp(ctx.relative + span, 0, 2 * span - 1);           // [T, T]
        c2p = at::gather(all, -1, index.expand({B, heads, T, T}));
      } else {
        at::Tensor rows = rel.pos_key.index_select(1, ctx.c2p_rows);                  // [h, 2T-1, d]
        c2p = diagonal_view(at::matmul(q, rows.transpose(-1, -2)).contiguous(), T);   // [B, h, T, T]
      }
      scores = scores + c2p;
    }
    if (c.has_p2c()) {  // position -> content: k_j . pos_query[clamp(span - bucket(j - i))], transposed
      at::Tensor p2c;
      if (ctx.gather) {
        at::Tensor all = at::matmul(k, (rel.pos_query / scale).transpose(-1, -2));    // [B, h, Tk, 2span]
        at::Tensor index = at::clamp(-ctx.relative + span, 0, 2 * span - 1);          // [Tk, Tq]
        p2c = at::gather(all, -1, index.expand({B, heads, T, T}));                    // [B, h, Tk, Tq]
      } else {
        at::Tensor rows = rel.pos_query.index_select(1, ctx.p2c_rows) / scale;        // [h, 2T-1, d]
        p2c = diagonal_view(at::matmul(k, rows.transpose(-1, -2)).contiguous(), T);   // [B, h, Tk, Tq]
      }
      scores = scores + p2c.transpose(-1, -2);
    }
  }

  at::Tensor probs;  // [B, h, T, T]; HF XSoftmax: masked scores -> finfo.min, softmax, masked probs -> 0
  if (ctx.keep.defined()) {
    at::Tensor masked = ~ctx.keep;
    const double lowest = scores.scalar_type() == at::kBFloat16 ? -3.3895313892515355e38
                                                                : static_cast<double>(std::numeric_limits<float>::lowest());
    probs = at::softmax(scores.masked_fill(masked, lowest), -1).masked_fill(masked, 0.0);
  } else {
    probs = at::softmax(scores, -1);
  }
  at::Tensor context = at::matmul(probs, v);                        // [B, h, T, d]
  return context.permute({0, 2, 1, 3}).reshape({B, T, heads * d});  // [B, T, A]
}

// One DebertaV2Layer. x [B, T, H] -> [B, T, H]
at::Tensor layer_forward(const EncoderLayer& layer, const DebertaConfig& c, const at::Tensor& x,
                         const AttentionContext& ctx, const RelativeProjections& rel) {
  at::Tensor context = self_attention_forward(layer.attention, c, x, ctx, rel);
  at::Tensor attended = layer.attention_norm(layer.attention_output(context) + x);              // [B, T, H]
  at::Tensor hidden = activation(c.hidden_act, layer.intermediate(attended));                  // [B, T, I]
  return layer.output_norm(layer.output(hidden) + attended);                                   // [B, T, H]
}

// DebertaV2Embeddings. ids, types [B, T] int64, mask [B, T] -> [B, T, H]
at::Tensor embeddings_forward(const Embeddings& e, const DebertaConfig& c, const at::Tensor& ids,
                              const at::Tensor& types, const at::Tensor& mask) {
  at::Tensor x = at::embedding(e.word, ids, c.pad_token_id);  // [B, T, E]
  if (e.position.defined()) {
    const int64_t T = ids.size(1);
    x = x + at::embedding(e.position, at::arange(T, ids.options()).unsqueeze(0));
  }
  if (e.token_type.defined()) x = x + at::embedding(e.token_type, types);
  if (e.embed_proj.weight.defined()) x = e.embed_proj(x);  // [B, T, H]
  x = e.norm(x);
  return x * mask.unsqueeze(2).to(x.scalar_type());
}

}  // namespace

std::vector<int64_t> DebertaClassifier::Impl::projection_versions() const {
  std::vector<int64_t> versions;
  auto add = [&](const at::Tensor& t) { versions.push_back(t.defined() ? static_cast<int64_t>(t._version()) : -1); };
  add(encoder.rel_embeddings);
  add(encoder.rel_norm.weight);
  add(encoder.rel_norm.bias);
  for (const EncoderLayer& layer : encoder.layers)
    for (const Linear* linear : {&layer.attention.query, &layer.attention.key, &layer.attention.pos_key,
                                 &layer.attention.pos_query}) {
      add(linear->weight);
      add(linear->bias);
    }
  return versions;
}

std::vector<RelativeProjections> DebertaClassifier::Impl::relative_projections() const {
  std::vector<RelativeProjections> projections(encoder.layers.size());
  if (!config.relative_attention) return projections;
  at::Tensor rel = encoder.rel_embeddings;  // HF get_rel_embedding: LayerNorm over all rows when configured
  if (encoder.has_rel_norm) rel = encoder.rel_norm(rel);
  rel = rel.narrow(0, 0, 2 * config.relative_span());
  for (size_t i = 0; i < encoder.layers.size(); ++i)
    projections[i] = project_relative(encoder.layers[i].attention, config, rel);
  return projections;
}

std::vector<RelativeProjections> DebertaClassifier::Impl::projections_for_forward() const {
  // With gradients the projections are part of the graph: recompute. Without, reuse while the weights are unchanged.
  if (at::GradMode::is_enabled() && trainable) return relative_projections();
  std::lock_guard<std::mutex> lock(cache_mutex);
  std::vector<int64_t> versions = projection_versions();
  if (cached_projections.empty() || versions != cached_versions) {
    at::NoGradGuard no_grad;
    cached_projections = relative_projections();
    cached_versions = std::move(versions);
  }
  return cached_projections;
}

DebertaClassifier::DebertaClassifier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DebertaClassifier::DebertaClassifier(DebertaClassifier&&) noexcept = default;
DebertaClassifier& DebertaClassifier::operator=(DebertaClassifier&&) noexcept = default;
DebertaClassifier::~DebertaClassifier() = default;

namespace {
void check_dtype(const DebertaLoadOptions& options) {
  if (options.dtype != at::kFloat && options.dtype != at::kBFloat16 && options.dtype != at::kHalf)
    fail("deberta: dtype {} is not a model dtype (use fp32 or bf16)", c10::toString(options.dtype));
  if (options.dtype == at::kHalf && options.device.is_cpu())
    fail("deberta: fp16 needs a GPU (libtorch's CPU kernels lack half-precision LayerNorm); use bf16 on CPU");
}
}  // namespace

DebertaClassifier DebertaClassifier::load(const std::filesystem::path& dir, const DebertaLoadOptions& options) {
  check_dtype(options);
  auto impl = std::make_unique<Impl>();
  impl->config = DebertaConfig::load(dir);
  impl->dtype = options.dtype;
  impl->device = options.device;
  auto checkpoint = std::make_shared<io::Checkpoint>(io::Checkpoint::open(dir));
  impl->checkpoint = checkpoint;
  WeightLoader loader(checkpoint, options.dtype, options.device);
  CheckpointSource source(loader);
  impl->build(source);
  try {
    loader.check_all_used({"position_ids"});
  } catch (const Error& e) {
    // HF ignores unexpected tensors with a warning; so do we (the expected ones were all found and shape-checked).
    spdlog::warn("{}", e.what());
  }
  DebertaClassifier model(std::move(impl));
  if (options.trainable) model.set_trainable(true);
  return model;
}

DebertaClassifier DebertaClassifier::random(const DebertaConfig& config, uint64_t seed,
                                            const DebertaLoadOptions& options, double initializer_range) {
  config.validate();
  check_dtype(options);
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->dtype = options.dtype;
  impl->device = options.device;
  RandomSource source(seed, initializer_range, options.dtype, options.device);
  impl->build(source);
  DebertaClassifier model(std::move(impl));
  if (options.trainable) model.set_trainable(true);
  return model;
}

DebertaOutput DebertaClassifier::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                         const at::Tensor& token_type_ids, const DebertaForwardOptions& options) const {
  const Impl& m = *impl_;
  const DebertaConfig& c = m.config;
  if (!input_ids.defined() || input_ids.dim() != 2 || input_ids.size(0) == 0 || input_ids.size(1) == 0)
    fail("deberta forward: input_ids must be a non-empty [batch, length] tensor");
  if (at::isFloatingType(input_ids.scalar_type())) fail("deberta forward: input_ids must be integers");
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  at::Tensor ids = input_ids.to(m.device, at::kLong);
  {
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= c.vocab_size) fail("deberta forward: token id {} outside the vocabulary [0, {})", lo < 0 ? lo : hi, c.vocab_size);
  }
  if (c.position_biased_input && T > c.max_position_embeddings)
    fail("deberta forward: sequence length {} exceeds max_position_embeddings {}", T, c.max_position_embeddings);

  at::Tensor mask;
  if (attention_mask.defined()) {
    if (attention_mask.sizes() != input_ids.sizes())
      fail("deberta forward: attention_mask shape [{}] differs from input_ids [{}, {}]", fmt::join(attention_mask.sizes(), ", "), B, T);
    mask = attention_mask.to(m.device, at::kLong);
  } else {
    mask = at::ones({B, T}, ids.options());
  }
  at::Tensor types;
  if (token_type_ids.defined()) {
    if (token_type_ids.sizes() != input_ids.sizes())
      fail("deberta forward: token_type_ids shape [{}] differs from input_ids [{}, {}]", fmt::join(token_type_ids.sizes(), ", "), B, T);
    types = token_type_ids.to(m.device, at::kLong);
    if (c.type_vocab_size > 0) {
      const int64_t lo = types.min().item<int64_t>(), hi = types.max().item<int64_t>();
      if (lo < 0 || hi >= c.type_vocab_size)
        fail("deberta forward: token type {} outside [0, {})", lo < 0 ? lo : hi, c.type_vocab_size);
    }
  } else {
    types = at::zeros({B, T}, ids.options());
  }

  AttentionContext ctx;
  if (!mask.ne(0).all().item<bool>()) {
    at::Tensor keep_1d = mask.ne(0);                                        // [B, T]
    ctx.keep = (keep_1d.unsqueeze(1) & keep_1d.unsqueeze(2)).unsqueeze(1);  // [B, 1, T, T] = m_i * m_j as HF
  }
  std::vector<RelativeProjections> projections;
  if (c.relative_attention) {
    ctx.span = c.relative_span();
    ctx.gather = options.force_gather;
    if (ctx.gather) {
      ctx.relative = relative_positions(T, c.position_buckets, c.max_relative()).to(m.device);
    } else {
      at::Tensor deltas = at::arange(T - 1, -T, -1, at::kLong);  // [2T-1]: T-1 ... -(T-1)
      at::Tensor buckets = log_bucket(deltas, c.position_buckets, c.max_relative());
      ctx.c2p_rows = at::clamp(buckets + ctx.span, 0, 2 * ctx.span - 1).to(m.device);
      ctx.p2c_rows = at::clamp(-buckets + ctx.span, 0, 2 * ctx.span - 1).to(m.device);
    }
    projections = m.projections_for_forward();
  } else {
    projections.resize(m.encoder.layers.size());
  }

  DebertaOutput out;
  at::Tensor x = embeddings_forward(m.embeddings, c, ids, types, mask);  // [B, T, H]
  if (options.cls_per_layer) out.cls_per_layer.push_back(x.select(1, 0).to(at::kFloat));
  for (size_t i = 0; i < m.encoder.layers.size(); ++i) {
    x = layer_forward(m.encoder.layers[i], c, x, ctx, projections[i]);
    if (options.cls_per_layer) out.cls_per_layer.push_back(x.select(1, 0).to(at::kFloat));
  }
  out.last_hidden = x;
  at::Tensor cls = x.select(1, 0);                                         // [B, H]
  at::Tensor pooled = activation(c.pooler_hidden_act, m.pooler(cls));      // [B, P]
  at::Tensor logits = m.classifier(pooled);                                // [B, L]
  out.cls_hidden = cls.to(at::kFloat);
  out.pooled = pooled.to(at::kFloat);
  out.logits = logits.to(at::kFloat);
  out.probs = at::softmax(out.logits, -1);
  return out;
}

const DebertaConfig& DebertaClassifier::config() const { return impl_->config; }
c10::ScalarType DebertaClassifier::dtype() const { return impl_->dtype; }
c10::Device DebertaClassifier::device() const { return impl_->device; }
bool DebertaClassifier::trainable() const { return impl_->trainable; }

const std::vector<std::pair<std::string, at::Tensor>>& DebertaClassifier::named_parameters() const {
  return impl_->named;
}

int64_t DebertaClassifier::parameter_count() const {
  int64_t count = 0;
  for (const auto& [name, tensor] : impl_->named) count += tensor.numel();
  return count;
}

void DebertaClassifier::set_trainable(bool trainable) {
  for (auto& [name, tensor] : impl_->named) {
    if (trainable && !tensor.requires_grad()) {
      // set_data swaps the storage under every handle sharing this tensor (the module fields included), so the
      // modules and the named list stay one tensor; the copy detaches it from the read-only mmap.
      tensor.set_data(tensor.detach().clone());
    }
    tensor.requires_grad_(trainable);
  }
  impl_->trainable = trainable;
}

void DebertaClassifier::save_pretrained(const std::filesystem::path& dir) const {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) fail("{}: cannot create the output directory ({})", dir.string(), error.message());
  nlohmann::json config = impl_->config.to_json();
  config["torch_dtype"] = impl_->dtype == at::kBFloat16 ? "bfloat16" : impl_->dtype == at::kHalf ? "float16" : "float32";
  {
    const std::filesystem::path path = dir / "config.json";
    std::ofstream out(path);
    if (!out) fail("{}: cannot write", path.string());
    out << config.dump(2) << "\n";
    if (!out) fail("{}: write failed", path.string());
  }
  save_tensors((dir / "model.safetensors").string(), impl_->named);
}

double DebertaClassifier::forward_flops(int64_t tokens) const {
  const DebertaConfig& c = impl_->config;
  const double T = static_cast<double>(tokens), H = c.hidden_size, A = c.all_head_size(), I = c.intermediate_size;
  const double E = c.embed_size();
  double per_layer = 2.0 * T * (3 * H * A + A * H + 2 * H * I);  // q, k, v, attention output, FFN in and out
  double attention_terms = 2;                                    // QK^T and PV
  if (c.relative_attention) attention_terms += (c.has_c2p() ? 1 : 0) + (c.has_p2c() ? 1 : 0);
  per_layer += attention_terms * 2.0 * T * T * A;
  double total = per_layer * c.num_hidden_layers;
  if (E != H) total += 2.0 * T * E * H;
  total += 2.0 * c.pooler_size() * c.pooler_size() + 2.0 * c.pooler_size() * c.num_labels;
  return total;
}

}  // namespace guardkit::models
