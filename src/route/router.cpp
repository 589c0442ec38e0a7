#include "route/router.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "io/safetensors.h"
#include "models/weights.h"
#include "util/error.h"
#include "util/paths.h"
#include "util/progress.h"

namespace guardkit::route {

namespace fs = std::filesystem;
using nlohmann::json;

RouteBatch RouteBatch::of(const FeatureCache& cache) {
  RouteBatch batch;
  batch.n = cache.size();
  batch.dim = cache.dim;
  batch.features = cache.features.data();
  batch.p_small = cache.p_small.data();
  batch.p_large = cache.p_large.size() == cache.size() ? cache.p_large.data() : nullptr;
  batch.labels = cache.labels.size() == cache.size() ? cache.labels.data() : nullptr;
  return batch;
}

namespace {

// torchbnn's BayesLinear: a diagonal Gaussian posterior N(mu, exp(log_sigma)^2) over every weight and bias.
struct BayesLinear {
  at::Tensor weight_mu, weight_log_sigma;  // [out, in]
  at::Tensor bias_mu, bias_log_sigma;      // [out]
};

struct LayerNormParams {
  at::Tensor weight, bias;  // [hidden]
};

at::Generator make_generator(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

// splitmix64: independent seeds for (seed, stream) pairs, so every epoch draws from its own generator.
uint64_t mix_seed(uint64_t seed, uint64_t stream) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (stream + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

}  // namespace

struct SafeRouteRouter::State {
  RouterConfig config;
  int64_t dim = 0;
  std::string feature_source;
  BayesLinear l1, l2, l3;
  LayerNormParams n1, n2;
  std::vector<TrainEpochStats> history;
  uint64_t mc_seed = 0;

  // Names follow the authors' nn.Sequential state_dict ("cls.0.weight_mu", ...), so checkpoints map one to one.
  std::vector<std::pair<std::string, at::Tensor*>> named_parameters() {
    return {{"cls.0.weight_mu", &l1.weight_mu}, {"cls.0.weight_log_sigma", &l1.weight_log_sigma},
            {"cls.0.bias_mu", &l1.bias_mu},     {"cls.0.bias_log_sigma", &l1.bias_log_sigma},
            {"cls.1.weight", &n1.weight},       {"cls.1.bias", &n1.bias},
            {"cls.3.weight_mu", &l2.weight_mu}, {"cls.3.weight_log_sigma", &l2.weight_log_sigma},
            {"cls.3.bias_mu", &l2.bias_mu},     {"cls.3.bias_log_sigma", &l2.bias_log_sigma},
            {"cls.4.weight", &n2.weight},       {"cls.4.bias", &n2.bias},
            {"cls.6.weight_mu", &l3.weight_mu}, {"cls.6.weight_log_sigma", &l3.weight_log_sigma},
            {"cls.6.bias_mu", &l3.bias_mu},     {"cls.6.bias_log_sigma", &l3.bias_log_sigma}};
  }

  std::vector<int64_t> shape_of(const std::string& name) const {
    const int64_t h = config.hidden;
    if (name.starts_with("cls.0.weight")) return {h, dim};
    if (name.starts_with("cls.3.weight")) return {h, h};
    if (name.starts_with("cls.6.weight")) return {1, h};
    if (name.starts_with("cls.6.bias")) return {1};
    return {h};
  }

  // Posterior init as the authors' BNN: weight_mu Kaiming-normal (fan_in, gain √2), bias_mu U(±1/√fan_in),
  // log_sigma = log(prior_sigma).
  void init(uint64_t seed) {
    auto gen = make_generator(mix_seed(seed, 0xC0FFEE));
    auto bayes = [&](BayesLinear& layer, int64_t in, int64_t out) {
      const double log_sigma = std::log(config.prior_sigma);
      layer.weight_mu = at::empty({out, in}).normal_(0.0, std::sqrt(2.0 / in), gen);
      layer.weight_log_sigma = at::full({out, in}, log_sigma);
      const double bound = 1.0 / std::sqrt(static_cast<double>(in));
      layer.bias_mu = at::empty({out}).uniform_(-bound, bound, gen);
      layer.bias_log_sigma = at::full({out}, log_sigma);
    };
    bayes(l1, dim, config.hidden);
    bayes(l2, config.hidden, config.hidden);
    bayes(l3, config.hidden, 1);
    n1 = {at::ones({config.hidden}), at::zeros({config.hidden})};
    n2 = {at::ones({config.hidden}), at::zeros({config.hidden})};
  }

  // w = mu + σ·ε with ε ~ N(0, 1) when sampling, w = mu (posterior mean) otherwise.
  static at::Tensor draw(const at::Tensor& mu, const at::Tensor& log_sigma, std::optional<at::Generator>& gen) {
    if (!gen) return mu;
    at::Tensor w = at::empty(mu.sizes()).normal_(0.0, 1.0, *gen);
    return w.mul_(at::exp(log_sigma)).add_(mu);
  }

  // x @ w^T + b with the GEMM in `gemm_type` (fp32 or bf16) and the result, bias and gradients back in fp32.
  static at::Tensor linear_in(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, at::ScalarType gemm_type) {
    if (gemm_type == at::kFloat) return at::linear(x, w, b);
    return at::linear(x.to(gemm_type), w.to(gemm_type)).to(at::kFloat).add(b);
  }

  // x [B, d] -> logits [B] for given weights (one posterior sample, or the posterior mean).
  at::Tensor forward_with(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                          const at::Tensor& b2, const at::Tensor& w3, const at::Tensor& b3,
                          at::ScalarType gemm_type = at::kFloat) const {
    const int64_t h = config.hidden;
    at::Tensor a = at::relu(at::layer_norm(linear_in(x, w1, b1, gemm_type), {h}, n1.weight, n1.bias, 1e-5));  // [B, h]
    a = at::relu(at::layer_norm(linear_in(a, w2, b2, gemm_type), {h}, n2.weight, n2.bias, 1e-5));             // [B, h]
    return at::linear(a, w3, b3).squeeze(-1);                                                                 // [B]
  }

  // x [B, d] -> logits [B]. One weight sample per call when `gen` is set (torchbnn draws one per forward, in the
  // order w1, b1, w2, b2, w3, b3).
  at::Tensor forward(const at::Tensor& x, std::optional<at::Generator> gen) {
    at::Tensor w1 = draw(l1.weight_mu, l1.weight_log_sigma, gen), b1 = draw(l1.bias_mu, l1.bias_log_sigma, gen);
    at::Tensor w2 = draw(l2.weight_mu, l2.weight_log_sigma, gen), b2 = draw(l2.bias_mu, l2.bias_log_sigma, gen);
    at::Tensor w3 = draw(l3.weight_mu, l3.weight_log_sigma, gen), b3 = draw(l3.bias_mu, l3.bias_log_sigma, gen);
    return forward_with(x, w1, b1, w2, b2, w3, b3);
  }
};

namespace {

json config_to_json(const RouterConfig& c) {
  return {{"hidden", c.hidden},         {"prior_mu", c.prior_mu},
          {"prior_sigma", c.prior_sigma}, {"kl_weight", c.kl_weight},
          {"lr", c.lr},                 {"weight_decay", c.weight_decay},
          {"warmup_steps", c.warmup_steps}, {"batch_size", c.batch_size},
          {"epochs", c.epochs},         {"class_balanced", c.class_balanced},
          {"seed", c.seed},             {"mc_samples", c.mc_samples},
          {"delta", c.delta},           {"threshold", c.threshold},
          {"bf16", c.bf16}};
}

RouterConfig config_from_json(const json& j, const std::string& origin) {
  RouterConfig c;
  try {
    c.hidden = j.at("hidden").get<int64_t>();
    c.prior_mu = j.value("prior_mu", 0.0);
    c.prior_sigma = j.at("prior_sigma").get<double>();
    c.kl_weight = j.value("kl_weight", c.kl_weight);
    c.lr = j.value("lr", c.lr);
    c.weight_decay = j.value("weight_decay", c.weight_decay);
    c.warmup_steps = j.value("warmup_steps", c.warmup_steps);
    c.batch_size = j.value("batch_size", c.batch_size);
    c.epochs = j.value("epochs", c.epochs);
    c.class_balanced = j.value("class_balanced", c.class_balanced);
    c.seed = j.value("seed", c.seed);
    c.mc_samples = j.value("mc_samples", c.mc_samples);
    c.delta = j.value("delta", c.delta);
    c.threshold = j.value("threshold", c.threshold);
    c.bf16 = j.value("bf16", c.bf16);
  } catch (const json::exception& e) {
    fail("{}: bad router config: {}", origin, e.what());
  }
  if (c.hidden <= 0 || !(c.prior_sigma > 0)) fail("{}: bad router config (hidden/prior_sigma)", origin);
  return c;
}

void validate_config(const RouterConfig& c) {
  if (c.hidden <= 0) fail("router: hidden size must be positive, got {}", c.hidden);
  if (!(c.prior_sigma > 0)) fail("router: prior sigma must be positive, got {}", c.prior_sigma);
  if (!(c.lr > 0)) fail("router: learning rate must be positive, got {}", c.lr);
  if (c.batch_size <= 0) fail("router: batch size must be positive, got {}", c.batch_size);
  if (c.epochs <= 0) fail("router: epochs must be positive, got {}", c.epochs);
  if (c.warmup_steps < 0) fail("router: warmup steps must be >= 0, got {}", c.warmup_steps);
  if (c.mc_samples < 0) fail("router: MC samples must be >= 0, got {}", c.mc_samples);
}

// transformers' get_linear_schedule_with_warmup: the k-th optimizer step (0-based) uses lr * factor(k).
double schedule_factor(int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return static_cast<double>(step) / std::max<int64_t>(1, warmup);
  return std::max(0.0, static_cast<double>(total - step) / std::max<int64_t>(1, total - warmup));
}

// torch.optim.AdamW (betas 0.9/0.999, eps 1e-8), written out so its state can be checkpointed as plain tensors.
struct AdamW {
  std::vector<at::Tensor> m, v;
  std::vector<at::Tensor> denom;  // scratch: a fresh multi-MB tensor per step costs page faults worth several passes
  int64_t step = 0;
  void init(const std::vector<at::Tensor*>& params) {
    m.clear();
    v.clear();
    denom.clear();
    for (auto* p : params) {
      m.push_back(at::zeros_like(*p));
      v.push_back(at::zeros_like(*p));
      denom.push_back(at::empty_like(*p));
    }
  }
  // One step for parameter i with gradient g (the router's training assembles g itself: see train()).
  void update_one(size_t i, at::Tensor& p, const at::Tensor& g, double lr, double weight_decay) {
    constexpr double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    const double bc1 = 1.0 - std::pow(b1, static_cast<double>(step));
    const double bc2 = 1.0 - std::pow(b2, static_cast<double>(step));
    p.mul_(1.0 - lr * weight_decay);
    m[i].mul_(b1).add_(g, 1.0 - b1);
    v[i].mul_(b2).addcmul_(g, g, 1.0 - b2);
    at::sqrt_out(denom[i], v[i]).div_(std::sqrt(bc2)).add_(eps);
    p.addcdiv_(m[i], denom[i], -lr / bc1);
  }
};

json history_to_json(const std::vector<TrainEpochStats>& history) {
  json out = json::array();
  for (const auto& h : history) out.push_back({{"epoch", h.epoch}, {"bce", h.bce}, {"kl", h.kl}, {"seconds", h.seconds}});
  return out;
}

std::vector<TrainEpochStats> history_from_json(const json& j) {
  std::vector<TrainEpochStats> out;
  if (!j.is_array()) return out;
  for (const auto& h : j)
    out.push_back({h.value("epoch", int64_t{0}), h.value("bce", 0.0), h.value("kl", 0.0), h.value("seconds", 0.0)});
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> to_named(const std::vector<std::pair<std::string, at::Tensor*>>& ps,
                                                         const std::string& prefix = "") {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& [name, t] : ps) out.emplace_back(prefix + name, t->detach());
  return out;
}

// What must match for a saved training state to be resumed.
json training_fingerprint(const RouterConfig& c, const FeatureCache& data) {
  json f = config_to_json(c);
  f.erase("mc_samples");
  f.erase("threshold");
  f["n"] = data.size();
  f["dim"] = data.dim;
  double checksum = 0;
  for (size_t i = 0; i < data.features.size(); i += 997) checksum += data.features[i];
  f["feature_checksum"] = checksum;
  return f;
}

}  // namespace

SafeRouteRouter SafeRouteRouter::train(const FeatureCache& data, const RouterConfig& config,
                                       const fs::path& checkpoint_dir,
                                       const std::function<void(const TrainEpochStats&)>& on_epoch) {
  validate_config(config);
  if (data.size() == 0) fail("router training: the feature cache is empty");
  if (data.dim <= 0) fail("router training: the feature cache has no features (dim {})", data.dim);
  auto state = std::make_shared<State>();
  state->config = config;
  state->dim = data.dim;
  state->feature_source = data.feature_source;
  state->init(config.seed);

  const int64_t n = static_cast<int64_t>(data.size());
  const at::ScalarType gemm_type = config.bf16 ? at::kBFloat16 : at::kFloat;
  at::Tensor features =
      at::from_blob(const_cast<float*>(data.features.data()), {n, data.dim}, at::kFloat);  // [N, d], read-only
  if (config.bf16) features = features.to(at::kBFloat16);  // converted once, not per batch
  const std::vector<int> t = data.routing_labels(config.delta);
  at::Tensor targets = at::empty({n}, at::kFloat);
  int64_t positives = 0;
  for (int64_t i = 0; i < n; ++i) {
    targets.data_ptr<float>()[i] = static_cast<float>(t[i]);
    positives += t[i];
  }
  // WeightedRandomSampler weights: 1 / frequency of the item's class.
  at::Tensor sample_weights = at::empty({n}, at::kDouble);
  {
    const double w1 = positives ? 1.0 / positives : 0.0;
    const double w0 = (n - positives) ? 1.0 / (n - positives) : 0.0;
    auto acc = sample_weights.accessor<double, 1>();
    for (int64_t i = 0; i < n; ++i) acc[i] = t[i] ? w1 : w0;
  }
  const int64_t steps_per_epoch = (n + config.batch_size - 1) / config.batch_size;
  const int64_t total_steps = steps_per_epoch * config.epochs;

  std::vector<at::Tensor*> params;
  for (auto& [name, p] : state->named_parameters()) params.push_back(p);
  AdamW optimizer;
  optimizer.init(params);
  int64_t first_epoch = 0;
  const json fingerprint = training_fingerprint(config, data);
  const fs::path state_file = checkpoint_dir.empty() ? fs::path() : checkpoint_dir / "train_state.safetensors";

  if (!state_file.empty() && fs::exists(state_file)) {
    auto file = io::SafetensorsFile::open(state_file);
    auto meta_it = file->metadata().find("guardkit");
    json meta = meta_it == file->metadata().end() ? json() : json::parse(meta_it->second, nullptr, false);
    if (meta.is_object() && meta.value("fingerprint", json()) == fingerprint) {
      auto named = state->named_parameters();
      for (size_t i = 0; i < named.size(); ++i) {
        auto load = [&](const std::string& name) {
          const io::TensorView* view = file->find(name);
          if (!view) fail("{}: missing tensor '{}'", state_file.string(), name);
          return models::tensor_from_view(*view, at::kFloat, at::kCPU, false).clone();
        };
        *named[i].second = load("param." + named[i].first);
        optimizer.m[i] = load("adam_m." + named[i].first);
        optimizer.v[i] = load("adam_v." + named[i].first);
      }
      optimizer.step = meta.value("step", int64_t{0});
      first_epoch = meta.value("epochs_done", int64_t{0});
      state->history = history_from_json(meta.value("history", json::array()));
      spdlog::info("router: resuming from {} at epoch {}/{}", state_file.string(), first_epoch, config.epochs);
    } else {
      spdlog::warn("router: {} belongs to another run (config or data differ); starting over", state_file.string());
    }
  }
  // The step below is the authors' (torchbnn) step computed without tracing the Bayesian layers: one posterior sample
  // w = mu + σ·ε is drawn into preallocated buffers, autograd runs only through the network given w (dLoss/dw), and
  // the chain rule through the sample (dw/dmu = 1, dw/dlog σ = σ·ε) and the closed-form KL gradient are applied by
  // hand. Same loss, same gradients, same random stream as tracing everything; about 20 fewer full passes over the
  // 1.3M Bayesian parameters per step and no KL graph. (The local reparameterisation trick would sample
  // pre-activations instead, but needs a second GEMM per Bayesian layer forward and backward — measured slower here,
  // where the GEMMs dominate.)
  struct BayesSample {
    size_t mu, log_sigma;      // indices into params
    at::Tensor sigma, eps, w;  // σ = exp(log σ), ε ~ N(0, 1), w = mu + σ·ε (a leaf: autograd gives dLoss/dw)
    at::Tensor g_log_sigma;    // scratch for dLoss/dlog σ
  };
  std::vector<BayesSample> samples;
  for (auto [mu, ls] : {std::pair<size_t, size_t>{0, 1}, {2, 3}, {6, 7}, {8, 9}, {12, 13}, {14, 15}}) {
    const at::Tensor& p = *params[mu];
    samples.push_back({mu, ls, at::empty_like(p), at::empty_like(p), at::empty_like(p), at::empty_like(p)});
    samples.back().w.set_requires_grad(true);
  }
  const std::vector<size_t> plain = {4, 5, 10, 11};  // LayerNorm weights and biases: ordinary parameters
  for (size_t i : plain) params[i]->set_requires_grad(true);
  int64_t kl_count = 0;
  for (const auto& bs : samples) kl_count += params[bs.mu]->numel();
  const double prior_var = config.prior_sigma * config.prior_sigma;
  const double kl_grad_scale = config.kl_weight / static_cast<double>(kl_count);

  // One training step on x [B, d], y [B]: returns (BCE, KL) before the update.
  auto train_step = [&](const at::Tensor& x, const at::Tensor& y, at::Generator& gen) -> std::pair<double, double> {
    {
      at::NoGradGuard no_grad;
      for (auto& bs : samples) {
        at::exp_out(bs.sigma, *params[bs.log_sigma]);
        bs.eps.normal_(0.0, 1.0, gen);
        at::addcmul_out(bs.w, *params[bs.mu], bs.sigma, bs.eps);
        bs.w.mutable_grad() = at::Tensor();
      }
      for (size_t i : plain) params[i]->mutable_grad() = at::Tensor();
    }
    const at::Tensor logits = state->forward_with(x, samples[0].w, samples[1].w, samples[2].w, samples[3].w,
                                                  samples[4].w, samples[5].w, gemm_type);  // [B]
    const at::Tensor bce = at::binary_cross_entropy_with_logits(logits, y);
    bce.backward();

    at::NoGradGuard no_grad;
    ++optimizer.step;
    const double lr = config.lr * schedule_factor(optimizer.step - 1, config.warmup_steps, total_steps);
    // Closed-form KL(q || prior) per weight: log σp − log σ + (σ² + (mu − mp)²) / (2σp²) − 1/2 (torchbnn).
    double kl_total = 0;
    for (auto& bs : samples) {
      at::Tensor& mu = *params[bs.mu];
      at::Tensor& log_sigma = *params[bs.log_sigma];
      const double count = static_cast<double>(mu.numel());
      const double sum_mu = mu.sum().item<double>();
      const double sum_sq_mu_dev = at::dot(mu.view(-1), mu.view(-1)).item<double>() -
                                   2.0 * config.prior_mu * sum_mu + count * config.prior_mu * config.prior_mu;
      kl_total += count * (std::log(config.prior_sigma) - 0.5) - log_sigma.sum().item<double>() +
                  (at::dot(bs.sigma.view(-1), bs.sigma.view(-1)).item<double>() + sum_sq_mu_dev) / (2.0 * prior_var);
      const at::Tensor& g_w = bs.w.grad();  // dBCE/dw
      // dLoss/dlog σ = dBCE/dw · σε + λ/K · (σ²/σp² − 1); σε = w − mu (mu not yet updated)
      at::Tensor& g_log_sigma = at::sub_out(bs.g_log_sigma, bs.w, mu);
      g_log_sigma.mul_(g_w).addcmul_(bs.sigma, bs.sigma, kl_grad_scale / prior_var).sub_(kl_grad_scale);
      // dLoss/dmu = dBCE/dw + λ/K · (mu − mp)/σp²  (g_w is ours to modify: autograd is done with it)
      at::Tensor g_mu = g_w.add_(mu, kl_grad_scale / prior_var);
      if (config.prior_mu != 0) g_mu.sub_(kl_grad_scale * config.prior_mu / prior_var);
      optimizer.update_one(bs.mu, mu, g_mu, lr, config.weight_decay);
      optimizer.update_one(bs.log_sigma, log_sigma, g_log_sigma, lr, config.weight_decay);
    }
    for (size_t i : plain) optimizer.update_one(i, *params[i], params[i]->grad(), lr, config.weight_decay);
    return {bce.item<double>(), kl_total / static_cast<double>(kl_count)};
  };

  auto save_state = [&](int64_t epochs_done) {
    fs::create_directories(checkpoint_dir);
    std::vector<std::pair<std::string, at::Tensor>> tensors = to_named(state->named_parameters(), "param.");
    auto named = state->named_parameters();
    for (size_t i = 0; i < named.size(); ++i) {
      tensors.emplace_back("adam_m." + named[i].first, optimizer.m[i]);
      tensors.emplace_back("adam_v." + named[i].first, optimizer.v[i]);
    }
    std::vector<io::TensorToWrite> writes;
    std::vector<at::Tensor> keep;
    for (auto& [name, tensor] : tensors) {
      keep.push_back(tensor.contiguous());
      writes.push_back({name, io::DType::F32, keep.back().sizes().vec(), keep.back().data_ptr(),
                        static_cast<size_t>(keep.back().numel()) * sizeof(float)});
    }
    json meta = {{"fingerprint", fingerprint},
                 {"epochs_done", epochs_done},
                 {"step", optimizer.step},
                 {"history", history_to_json(state->history)}};
    io::write_safetensors(state_file, writes, {{"format", "pt"}, {"guardkit", meta.dump()}});
  };

  at::Tensor x_full = at::empty({config.batch_size, data.dim}, features.scalar_type());  // reused by full batches
  ProgressBar bar("router", static_cast<size_t>(config.epochs), config.progress);
  bar.update(static_cast<size_t>(first_epoch));
  auto last_save = std::chrono::steady_clock::now();
  for (int64_t epoch = first_epoch; epoch < config.epochs; ++epoch) {
    const auto epoch_start = std::chrono::steady_clock::now();
    auto gen = make_generator(mix_seed(config.seed, static_cast<uint64_t>(epoch) + 1));
    const at::Tensor order = config.class_balanced ? at::multinomial(sample_weights, n, /*replacement=*/true, gen)
                                                   : at::randperm(n, gen);
    double bce_sum = 0, kl_sum = 0;
    for (int64_t s = 0; s < steps_per_epoch; ++s) {
      const int64_t begin = s * config.batch_size;
      const int64_t end = std::min(n, begin + config.batch_size);
      const at::Tensor index = order.slice(0, begin, end);
      if (end - begin == config.batch_size) at::index_select_out(x_full, features, 0, index);
      const at::Tensor x = end - begin == config.batch_size ? x_full : features.index_select(0, index);  // [B, d]
      const at::Tensor y = targets.index_select(0, index);   // [B]
      const auto [bce, kl] = train_step(x, y, gen);
      bce_sum += bce;
      kl_sum += kl;
    }
    TrainEpochStats stats{epoch + 1, bce_sum / steps_per_epoch, kl_sum / steps_per_epoch,
                          std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count()};
    state->history.push_back(stats);
    bar.update(static_cast<size_t>(epoch + 1), fmt::format("bce {:.4f} kl {:.4f}", stats.bce, stats.kl));
    const bool last = epoch + 1 == config.epochs;
    if (!state_file.empty() && !last &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - last_save).count() >=
            config.checkpoint_seconds) {
      save_state(epoch + 1);
      last_save = std::chrono::steady_clock::now();
    }
    if (on_epoch) on_epoch(stats);
  }
  bar.finish();
  for (auto* p : params) {
    if (p->requires_grad()) p->set_requires_grad(false);
    *p = p->detach();
  }
  if (!state_file.empty() && fs::exists(state_file)) fs::remove(state_file);
  return SafeRouteRouter(state);
}

std::vector<double> SafeRouteRouter::logits(const float* features, size_t n) const {
  at::NoGradGuard no_grad;
  if (n == 0) return {};
  const at::Tensor x = at::from_blob(const_cast<float*>(features), {static_cast<int64_t>(n), state_->dim}, at::kFloat);
  const at::Tensor out = state_->forward(x, std::nullopt).contiguous();
  return std::vector<double>(out.data_ptr<float>(), out.data_ptr<float>() + n);
}

std::vector<double> SafeRouteRouter::scores(const RouteBatch& batch) {
  if (batch.n == 0) return {};
  if (batch.dim != state_->dim)
    fail("router expects {}-d features ({}), got {}-d", state_->dim, state_->feature_source, batch.dim);
  if (!batch.features) fail("router: the batch carries no features");
  at::NoGradGuard no_grad;
  const at::Tensor x =
      at::from_blob(const_cast<float*>(batch.features), {static_cast<int64_t>(batch.n), state_->dim}, at::kFloat);
  at::Tensor probs;
  const int samples = state_->config.mc_samples;
  if (samples == 0) {
    probs = at::sigmoid(state_->forward(x, std::nullopt));  // posterior mean (the authors' eval mode)
  } else {
    auto gen = make_generator(mix_seed(state_->mc_seed, 0xACE));
    probs = at::zeros({static_cast<int64_t>(batch.n)});
    for (int k = 0; k < samples; ++k) probs += at::sigmoid(state_->forward(x, gen));
    probs /= static_cast<double>(samples);
  }
  probs = probs.to(at::kDouble).contiguous();
  return std::vector<double>(probs.data_ptr<double>(), probs.data_ptr<double>() + batch.n);
}

double SafeRouteRouter::default_threshold() const { return state_->config.threshold; }
const RouterConfig& SafeRouteRouter::config() const { return state_->config; }
int64_t SafeRouteRouter::input_dim() const { return state_->dim; }
const std::string& SafeRouteRouter::feature_source() const { return state_->feature_source; }
void SafeRouteRouter::set_threshold(double threshold) { state_->config.threshold = threshold; }
void SafeRouteRouter::set_mc_samples(int samples, uint64_t seed) {
  if (samples < 0) fail("router: MC samples must be >= 0, got {}", samples);
  state_->config.mc_samples = samples;
  state_->mc_seed = seed;
}
const std::vector<TrainEpochStats>& SafeRouteRouter::history() const { return state_->history; }

void SafeRouteRouter::save(const fs::path& dir) const {
  fs::create_directories(dir);
  json meta = {{"kind", "guardkit.route.saferoute"},
               {"version", 1},
               {"architecture", "BayesLinear(d,h)-LayerNorm-ReLU-BayesLinear(h,h)-LayerNorm-ReLU-BayesLinear(h,1)"},
               {"feature_source", state_->feature_source},
               {"input_dim", state_->dim},
               {"threshold", state_->config.threshold},
               {"config", config_to_json(state_->config)},
               {"history", history_to_json(state_->history)}};
  models::save_tensors((dir / "router.safetensors").string(), to_named(state_->named_parameters()));
  const fs::path tmp = dir / "router.json.tmp";
  {
    std::ofstream out(tmp);
    out << meta.dump(2) << "\n";
    if (!out) fail("{}: cannot write", tmp.string());
  }
  fs::rename(tmp, dir / "router.json");
}

SafeRouteRouter SafeRouteRouter::load(const fs::path& dir) {
  const fs::path meta_path = dir / "router.json";
  if (!fs::exists(meta_path)) fail("{}: no router.json (not a SafeRoute router directory)", dir.string());
  json meta = json::parse(read_file(meta_path), nullptr, false);
  if (!meta.is_object() || meta.value("kind", "") != "guardkit.route.saferoute")
    fail("{}: not a SafeRoute router description", meta_path.string());
  auto state = std::make_shared<State>();
  state->config = config_from_json(meta.value("config", json::object()), meta_path.string());
  state->config.threshold = meta.value("threshold", state->config.threshold);
  state->dim = meta.value("input_dim", int64_t{0});
  if (state->dim <= 0) fail("{}: bad input_dim", meta_path.string());
  state->feature_source = meta.value("feature_source", "");
  state->history = history_from_json(meta.value("history", json::array()));
  const auto checkpoint = std::make_shared<io::Checkpoint>(io::Checkpoint::open(dir / "router.safetensors"));
  models::WeightLoader loader(checkpoint, at::kFloat, at::kCPU);
  for (auto& [name, tensor] : state->named_parameters())
    *tensor = loader.get(name, state->shape_of(name)).clone();
  loader.check_all_used();
  return SafeRouteRouter(state);
}

}  // namespace guardkit::route
