#include "models/deberta_mlm.h"

#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>
#include <fstream>

#include "io/safetensors.h"
#include "models/weights.h"
#include "util/error.h"

namespace guardkit::models {
namespace {

const char* const kWordEmbeddings = "deberta.embeddings.word_embeddings.weight";
const char* const kHead = "lm_predictions.lm_head.";

bool is_encoder_name(const std::string& name) { return name.rfind("deberta.", 0) == 0; }

// ACT2FN for the head's transform (the encoder's hidden_act); the same set DebertaConfig validates.
at::Tensor head_activation(const std::string& name, const at::Tensor& x) {
  if (name == "gelu" || name == "gelu_python") return at::gelu(x);
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return at::gelu(x, "tanh");
  if (name == "quick_gelu") return x * at::sigmoid(1.702 * x);
  if (name == "relu") return at::relu(x);
  if (name == "silu" || name == "swish") return at::silu(x);
  if (name == "tanh") return at::tanh(x);
  if (name == "mish") return at::mish(x);
  if (name == "linear") return x;
  fail("deberta masked LM: unsupported hidden_act '{}'", name);
}

}  // namespace

struct DebertaMaskedLM::Impl {
  DebertaClassifier encoder;  // its pooler and classifier are unused here
  at::Tensor word;            // [V, H], the encoder's own tensor (tied decoder)
  at::Tensor dense_weight, dense_bias, norm_weight, norm_bias, bias;  // [H, H], [H], [H], [H], [V]
  std::vector<std::pair<std::string, at::Tensor>> named;

  explicit Impl(DebertaClassifier model) : encoder(std::move(model)) {}

  void collect() {
    named.clear();
    for (const auto& [name, tensor] : encoder.named_parameters()) {
      if (is_encoder_name(name)) named.emplace_back(name, tensor);
      if (name == kWordEmbeddings) word = tensor;
    }
    named.emplace_back(std::string(kHead) + "dense.weight", dense_weight);
    named.emplace_back(std::string(kHead) + "dense.bias", dense_bias);
    named.emplace_back(std::string(kHead) + "LayerNorm.weight", norm_weight);
    named.emplace_back(std::string(kHead) + "LayerNorm.bias", norm_bias);
    named.emplace_back(std::string(kHead) + "bias", bias);
  }

  // hidden [N, H] -> logits [N, V]
  at::Tensor head(const at::Tensor& hidden) const {
    const DebertaConfig& c = encoder.config();
    at::Tensor x = head_activation(c.hidden_act, at::linear(hidden, dense_weight, dense_bias));  // [N, H]
    x = at::layer_norm(x, {norm_weight.size(0)}, norm_weight, norm_bias, c.layer_norm_eps);       // [N, H]
    return at::matmul(x, word.t()) + bias;                                                       // [N, V]
  }
};

DebertaMaskedLM::DebertaMaskedLM(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DebertaMaskedLM::DebertaMaskedLM(DebertaMaskedLM&&) noexcept = default;
DebertaMaskedLM& DebertaMaskedLM::operator=(DebertaMaskedLM&&) noexcept = default;
DebertaMaskedLM::~DebertaMaskedLM() = default;

namespace {
void check_tied_shape(const DebertaConfig& c) {
  // The tied decoder multiplies H-wide states by the [V, E] embedding: HF's non-legacy head needs E == H.
  if (c.embed_size() != c.hidden_size)
    fail("deberta masked LM: embedding_size {} differs from hidden_size {} (the tied decoder needs them equal)",
         c.embed_size(), c.hidden_size);
}
}  // namespace

DebertaMaskedLM DebertaMaskedLM::random(const DebertaConfig& config, uint64_t seed, const DebertaLoadOptions& options,
                                        double initializer_range) {
  check_tied_shape(config);
  auto impl = std::make_unique<Impl>(DebertaClassifier::random(config, seed, options, initializer_range));
  const int64_t H = config.hidden_size, V = config.vocab_size;
  auto generator = at::detail::createCPUGenerator(seed ^ 0x9e3779b97f4a7c15ULL);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  auto place = [&](at::Tensor t) { return t.to(options.device, options.dtype); };
  // HF _init_weights: Linear weight normal(0, range) and bias 0, LayerNorm 1 and 0, the output bias 0.
  impl->dense_weight = place(at::normal(0.0, initializer_range, {H, H}, generator, f32));
  impl->dense_bias = place(at::zeros({H}, f32));
  impl->norm_weight = place(at::ones({H}, f32));
  impl->norm_bias = place(at::zeros({H}, f32));
  impl->bias = place(at::zeros({V}, f32));
  impl->collect();
  DebertaMaskedLM model(std::move(impl));
  if (options.trainable) model.set_trainable(true);
  return model;
}

DebertaMaskedLM DebertaMaskedLM::load(const std::filesystem::path& dir, const DebertaLoadOptions& options) {
  const DebertaConfig config = DebertaConfig::load(dir);
  check_tied_shape(config);
  DebertaLoadOptions build = options;
  build.trainable = false;
  auto impl = std::make_unique<Impl>(DebertaClassifier::random(config, 0, build));
  load_encoder_weights(impl->encoder, dir);
  auto checkpoint = std::make_shared<io::Checkpoint>(io::Checkpoint::open(dir));
  WeightLoader loader(checkpoint, options.dtype, options.device);
  const int64_t H = config.hidden_size, V = config.vocab_size;
  const std::string p = kHead;
  // Owned copies: the model may be trained further.
  auto take = [&](const std::string& name, std::vector<int64_t> shape) { return loader.get(name, shape).clone(); };
  impl->dense_weight = take(p + "dense.weight", {H, H});
  impl->dense_bias = take(p + "dense.bias", {H});
  impl->norm_weight = take(p + "LayerNorm.weight", {H});
  impl->norm_bias = take(p + "LayerNorm.bias", {H});
  impl->bias = take(p + "bias", {V});
  impl->collect();
  DebertaMaskedLM model(std::move(impl));
  if (options.trainable) model.set_trainable(true);
  return model;
}

at::Tensor DebertaMaskedLM::logits(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                   const at::Tensor& positions) const {
  const Impl& m = *impl_;
  at::Tensor hidden = m.encoder.forward(input_ids, attention_mask).last_hidden;  // [B, T, H]
  hidden = hidden.reshape({-1, hidden.size(-1)});                                 // [B*T, H]
  if (positions.defined()) {
    at::Tensor index = positions.to(hidden.device(), at::kLong);
    if (index.numel() > 0 && (index.min().item<int64_t>() < 0 || index.max().item<int64_t>() >= hidden.size(0)))
      fail("deberta masked LM: a position lies outside the {} tokens of the batch", hidden.size(0));
    hidden = hidden.index_select(0, index);                                       // [N, H]
  }
  return m.head(hidden).to(at::kFloat);                                           // [N, V]
}

at::Tensor DebertaMaskedLM::loss(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                 const at::Tensor& labels) const {
  if (!labels.defined() || labels.sizes() != input_ids.sizes())
    fail("deberta masked LM: labels must have the shape of input_ids");
  at::Tensor flat = labels.reshape({-1}).to(at::kLong);
  at::Tensor positions = flat.ne(-100).nonzero().reshape({-1});  // [N]
  if (positions.numel() == 0) fail("deberta masked LM: no position to predict (every label is -100)");
  // Only the predicted positions go through the head: the [N, V] product instead of [B*T, V]. The mean over them
  // equals HF's CrossEntropyLoss(ignore_index=-100) over all positions.
  at::Tensor out = logits(input_ids, attention_mask, positions);
  return at::cross_entropy_loss(out, flat.index_select(0, positions).to(out.device()));  // mean
}

const DebertaConfig& DebertaMaskedLM::config() const { return impl_->encoder.config(); }

const std::vector<std::pair<std::string, at::Tensor>>& DebertaMaskedLM::named_parameters() const {
  return impl_->named;
}

void DebertaMaskedLM::set_trainable(bool trainable) {
  Impl& m = *impl_;
  m.encoder.set_trainable(trainable);  // may swap storages under the encoder's tensors: the handles stay the same
  for (at::Tensor* t : {&m.dense_weight, &m.dense_bias, &m.norm_weight, &m.norm_bias, &m.bias}) t->requires_grad_(trainable);
  m.collect();
}

void DebertaMaskedLM::save_pretrained(const std::filesystem::path& dir) const {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) fail("{}: cannot create the output directory ({})", dir.string(), error.message());
  nlohmann::json json = config().to_json();
  json["architectures"] = {"DebertaV2ForMaskedLM"};
  json["legacy"] = false;  // transformers >= 4.48 reads the head as lm_predictions.lm_head (tied decoder)
  json["torch_dtype"] = "float32";
  {
    const std::filesystem::path path = dir / "config.json";
    std::ofstream out(path);
    if (!out) fail("{}: cannot write", path.string());
    out << json.dump(2) << "\n";
    if (!out) fail("{}: write failed", path.string());
  }
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [name, tensor] : impl_->named) tensors.emplace_back(name, tensor.detach());
  save_tensors((dir / "model.safetensors").string(), tensors);
}

int64_t load_encoder_weights(DebertaClassifier& model, const std::filesystem::path& dir) {
  auto checkpoint = std::make_shared<io::Checkpoint>(io::Checkpoint::open(dir));
  WeightLoader loader(checkpoint, model.dtype(), model.device());
  // A loaded model's weights may alias a read-only mmap: make them owned before writing into them.
  const bool was_trainable = model.trainable();
  if (!was_trainable) model.set_trainable(true);
  torch::NoGradGuard no_grad;
  int64_t copied = 0;
  for (const auto& [name, tensor] : model.named_parameters()) {
    if (!is_encoder_name(name)) continue;
    if (!loader.has(name)) fail("{}: the pretrained checkpoint has no tensor {}", dir.string(), name);
    at::Tensor value = loader.get(name, tensor.sizes().vec());
    // copy_ into the model's tensor: every handle on it (modules, named list, optimizer) sees the new values.
    tensor.copy_(value);
    ++copied;
  }
  if (!was_trainable) model.set_trainable(false);
  return copied;
}

}  // namespace guardkit::models
