#include "route/features.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "util/error.h"
#include "eval/datasets.h"
#include "util/progress.h"

namespace guardkit::route {

namespace fs = std::filesystem;
using nlohmann::json;

int routing_label(double p_small, double p_large, int label, double delta) {
  const int small_pred = p_small > delta ? 1 : 0;
  const int large_pred = p_large > delta ? 1 : 0;
  return (large_pred == label && small_pred != label) ? 1 : 0;
}

std::vector<LabeledExample> load_labeled(const std::string& name_or_path) {
  std::vector<LabeledExample> examples;
  for (auto& example : eval::load_dataset(name_or_path)) {
    LabeledExample labeled;
    labeled.id = std::move(example.id);
    labeled.conversation = guard::Conversation::from_pair(std::move(example.prompt), std::move(example.response));
    labeled.label = example.label;
    examples.push_back(std::move(labeled));
  }
  if (examples.empty()) fail("{}: no examples", name_or_path);
  return examples;
}

std::vector<int> FeatureCache::routing_labels(double delta) const {
  std::vector<int> t(size());
  for (size_t i = 0; i < size(); ++i) t[i] = routing_label(p_small[i], p_large[i], labels[i], delta);
  return t;
}

FeatureCache FeatureCache::subset(const std::vector<size_t>& indices) const {
  FeatureCache out;
  out.dim = dim;
  out.feature_source = feature_source;
  out.small_name = small_name;
  out.large_name = large_name;
  out.p_small_content_free = p_small_content_free;
  const double share = size() ? static_cast<double>(indices.size()) / size() : 0.0;
  out.seconds_small = seconds_small * share;
  out.seconds_large = seconds_large * share;
  out.features.reserve(indices.size() * dim);
  for (size_t i : indices) {
    if (i >= size()) fail("feature cache subset: index {} out of range ({} items)", i, size());
    out.features.insert(out.features.end(), row(i), row(i) + dim);
    out.p_small.push_back(p_small[i]);
    out.p_large.push_back(p_large[i]);
    out.labels.push_back(labels[i]);
    out.ids.push_back(ids[i]);
    out.flops_small.push_back(flops_small[i]);
    out.flops_large.push_back(flops_large[i]);
  }
  return out;
}

void FeatureCache::append(const FeatureCache& other) {
  if (size() == 0 && dim == 0) {
    *this = other;
    return;
  }
  if (other.dim != dim) fail("feature caches differ in dimension: {} vs {}", dim, other.dim);
  features.insert(features.end(), other.features.begin(), other.features.end());
  p_small.insert(p_small.end(), other.p_small.begin(), other.p_small.end());
  p_large.insert(p_large.end(), other.p_large.begin(), other.p_large.end());
  labels.insert(labels.end(), other.labels.begin(), other.labels.end());
  ids.insert(ids.end(), other.ids.begin(), other.ids.end());
  flops_small.insert(flops_small.end(), other.flops_small.begin(), other.flops_small.end());
  flops_large.insert(flops_large.end(), other.flops_large.begin(), other.flops_large.end());
  seconds_small += other.seconds_small;
  seconds_large += other.seconds_large;
  if (!p_small_content_free) p_small_content_free = other.p_small_content_free;
}

void FeatureCache::check() const {
  const size_t n = size();
  if (dim < 0) fail("feature cache: negative dimension {}", dim);
  if (features.size() != n * static_cast<size_t>(dim) || p_small.size() != n || p_large.size() != n ||
      labels.size() != n || flops_small.size() != n || flops_large.size() != n)
    fail("feature cache: inconsistent sizes (n={}, dim={}, features={}, p_small={}, p_large={}, labels={})", n, dim,
         features.size(), p_small.size(), p_large.size(), labels.size());
  for (size_t i = 0; i < n; ++i) {
    if (!(p_small[i] >= 0 && p_small[i] <= 1) || !(p_large[i] >= 0 && p_large[i] <= 1))
      fail("feature cache: item {} ('{}') has a probability outside [0, 1]", i, ids[i]);
    if (labels[i] != 0 && labels[i] != 1) fail("feature cache: item {} has label {}", i, labels[i]);
  }
  for (size_t k = 0; k < features.size(); ++k)
    if (!std::isfinite(features[k])) fail("feature cache: non-finite feature at item {}", k / dim);
}

FeatureCache make_feature_cache(int64_t dim, std::vector<float> features, std::vector<float> p_small,
                                std::vector<float> p_large, std::vector<int8_t> labels, std::string feature_source) {
  FeatureCache cache;
  cache.dim = dim;
  cache.features = std::move(features);
  cache.p_small = std::move(p_small);
  cache.p_large = std::move(p_large);
  cache.labels = std::move(labels);
  const size_t n = cache.labels.size();
  for (size_t i = 0; i < n; ++i) cache.ids.push_back(std::to_string(i));
  cache.flops_small.assign(n, 0.0);
  cache.flops_large.assign(n, 0.0);
  cache.feature_source = std::move(feature_source);
  cache.check();
  return cache;
}

void save_feature_cache(const fs::path& path, const FeatureCache& cache) {
  cache.check();
  const int64_t n = static_cast<int64_t>(cache.size());
  std::string id_bytes;
  std::vector<int64_t> offsets{0};
  for (const auto& id : cache.ids) {
    id_bytes += id;
    offsets.push_back(static_cast<int64_t>(id_bytes.size()));
  }
  if (id_bytes.empty()) id_bytes.push_back('\0');  // safetensors cannot hold a zero-byte U8 tensor portably
  auto f32 = [](const std::string& name, const std::vector<float>& v, std::vector<int64_t> shape) {
    return io::TensorToWrite{name, io::DType::F32, std::move(shape), v.data(), v.size() * sizeof(float)};
  };
  std::vector<io::TensorToWrite> tensors{
      f32("features", cache.features, {n, cache.dim}),
      f32("p_small", cache.p_small, {n}),
      f32("p_large", cache.p_large, {n}),
      {"labels", io::DType::I8, {n}, cache.labels.data(), cache.labels.size()},
      {"flops_small", io::DType::F64, {n}, cache.flops_small.data(), cache.flops_small.size() * sizeof(double)},
      {"flops_large", io::DType::F64, {n}, cache.flops_large.data(), cache.flops_large.size() * sizeof(double)},
      {"ids", io::DType::U8, {static_cast<int64_t>(id_bytes.size())}, id_bytes.data(), id_bytes.size()},
      {"id_offsets", io::DType::I64, {n + 1}, offsets.data(), offsets.size() * sizeof(int64_t)},
  };
  json meta = {{"kind", "guardkit.route.features"},
               {"version", 1},
               {"feature_source", cache.feature_source},
               {"dim", cache.dim},
               {"size", n},
               {"small", cache.small_name},
               {"large", cache.large_name},
               {"seconds_small", cache.seconds_small},
               {"seconds_large", cache.seconds_large}};
  if (cache.p_small_content_free) meta["p_small_content_free"] = *cache.p_small_content_free;
  write_safetensors(path, tensors, {{"format", "pt"}, {"guardkit", meta.dump()}});
}

namespace {

template <typename T>
std::vector<T> read_vector(const io::SafetensorsFile& file, const std::string& name, io::DType dtype,
                           int64_t expected) {
  const io::TensorView* view = file.find(name);
  if (!view) fail("{}: not a feature cache (no tensor '{}')", file.path().string(), name);
  if (view->dtype != dtype || (expected >= 0 && view->numel() != expected))
    fail("{}: tensor '{}' is {} with {} elements, expected {} with {}", file.path().string(), name,
         io::dtype_name(view->dtype), view->numel(), io::dtype_name(dtype), expected);
  std::vector<T> out(view->numel());
  std::memcpy(out.data(), view->data, view->nbytes);
  return out;
}

}  // namespace

FeatureCache load_feature_cache(const fs::path& path) {
  auto file = io::SafetensorsFile::open(path);
  const auto& metadata = file->metadata();
  auto it = metadata.find("guardkit");
  if (it == metadata.end()) fail("{}: not a guardkit feature cache (no 'guardkit' metadata)", path.string());
  json meta;
  try {
    meta = json::parse(it->second);
  } catch (const json::exception& e) {
    fail("{}: bad feature-cache metadata: {}", path.string(), e.what());
  }
  if (meta.value("kind", "") != "guardkit.route.features")
    fail("{}: metadata kind is '{}', not a feature cache", path.string(), meta.value("kind", ""));
  FeatureCache cache;
  const int64_t n = meta.value("size", int64_t{-1});
  cache.dim = meta.value("dim", int64_t{-1});
  if (n < 0 || cache.dim < 0) fail("{}: metadata lacks size/dim", path.string());
  cache.feature_source = meta.value("feature_source", "");
  cache.small_name = meta.value("small", "");
  cache.large_name = meta.value("large", "");
  cache.seconds_small = meta.value("seconds_small", 0.0);
  cache.seconds_large = meta.value("seconds_large", 0.0);
  if (meta.contains("p_small_content_free")) cache.p_small_content_free = meta["p_small_content_free"].get<double>();
  cache.features = read_vector<float>(*file, "features", io::DType::F32, n * cache.dim);
  cache.p_small = read_vector<float>(*file, "p_small", io::DType::F32, n);
  cache.p_large = read_vector<float>(*file, "p_large", io::DType::F32, n);
  cache.labels = read_vector<int8_t>(*file, "labels", io::DType::I8, n);
  cache.flops_small = read_vector<double>(*file, "flops_small", io::DType::F64, n);
  cache.flops_large = read_vector<double>(*file, "flops_large", io::DType::F64, n);
  const auto offsets = read_vector<int64_t>(*file, "id_offsets", io::DType::I64, n + 1);
  const auto bytes = read_vector<char>(*file, "ids", io::DType::U8, -1);
  for (int64_t i = 0; i < n; ++i) {
    if (offsets[i] < 0 || offsets[i] > offsets[i + 1] || offsets[i + 1] > static_cast<int64_t>(bytes.size()))
      fail("{}: corrupt id offsets at item {}", path.string(), i);
    cache.ids.emplace_back(bytes.data() + offsets[i], bytes.data() + offsets[i + 1]);
  }
  try {
    cache.check();
  } catch (const Error& e) {
    fail("{}: {}", path.string(), e.what());
  }
  return cache;
}

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Scores examples[begin, end) with both guards into a cache chunk.
FeatureCache score_chunk(guard::Guard& small, guard::Guard& large, const std::vector<LabeledExample>& examples,
                         size_t begin, size_t end, int batch_size, ProgressBar& bar) {
  FeatureCache chunk;
  chunk.dim = small.feature_dim();
  guard::ScoreOptions with_features;
  with_features.want_features = true;
  for (size_t b = begin; b < end; b += batch_size) {
    const size_t e = std::min(end, b + batch_size);
    std::vector<guard::Conversation> batch;
    for (size_t i = b; i < e; ++i) batch.push_back(examples[i].conversation);
    auto t0 = std::chrono::steady_clock::now();
    const auto small_results = small.score(batch, with_features);
    chunk.seconds_small += seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    const auto large_results = large.score(batch, {});
    chunk.seconds_large += seconds_since(t0);
    if (small_results.size() != batch.size() || large_results.size() != batch.size())
      fail("guard returned {} / {} results for a batch of {}", small_results.size(), large_results.size(),
           batch.size());
    for (size_t k = 0; k < batch.size(); ++k) {
      const auto& s = small_results[k];
      if (static_cast<int64_t>(s.feature.size()) != chunk.dim)
        fail("small guard '{}' returned a {}-d feature for '{}', expected {}", small.name(), s.feature.size(),
             examples[b + k].id, chunk.dim);
      chunk.features.insert(chunk.features.end(), s.feature.begin(), s.feature.end());
      chunk.p_small.push_back(static_cast<float>(s.p_unsafe));
      chunk.p_large.push_back(static_cast<float>(large_results[k].p_unsafe));
      chunk.labels.push_back(static_cast<int8_t>(examples[b + k].label));
      chunk.ids.push_back(examples[b + k].id);
      chunk.flops_small.push_back(s.flops);
      chunk.flops_large.push_back(large_results[k].flops);
    }
    bar.advance(batch.size());
  }
  return chunk;
}

}  // namespace

FeatureCache build_feature_cache(guard::Guard& small, guard::Guard& large, const std::vector<LabeledExample>& examples,
                                 const FeatureBuildOptions& options, const std::optional<fs::path>& out) {
  if (small.feature_dim() <= 0) fail("small guard '{}' gives no router feature", small.name());
  if (options.batch_size <= 0) fail("batch size must be positive, got {}", options.batch_size);
  FeatureCache cache;
  cache.dim = small.feature_dim();
  const fs::path partial = out ? fs::path(out->string() + ".partial") : fs::path();
  if (out && fs::exists(partial)) {
    FeatureCache previous = load_feature_cache(partial);
    bool prefix = previous.dim == cache.dim && previous.size() <= examples.size();
    for (size_t i = 0; prefix && i < previous.size(); ++i) prefix = previous.ids[i] == examples[i].id;
    if (!prefix) fail("{}: partial cache does not match these examples; delete it to start over", partial.string());
    cache = std::move(previous);
  }
  cache.feature_source = fmt::format("{}:feature[{}]", small.name(), small.feature_dim());
  cache.small_name = small.name();
  cache.large_name = large.name();
  if (options.content_free && !cache.p_small_content_free) {
    // Contextual calibration's content-free input: a prompt of one space, no response (papers.md §1.4).
    cache.p_small_content_free = small.score({guard::Conversation::from_prompt(" ")}, {}).at(0).p_unsafe;
  }
  ProgressBar bar("features", examples.size(), options.progress);
  bar.update(cache.size());
  const size_t step = std::max<size_t>(1, options.checkpoint_every);
  for (size_t begin = cache.size(); begin < examples.size(); begin += step) {
    const size_t end = std::min(examples.size(), begin + step);
    cache.append(score_chunk(small, large, examples, begin, end, options.batch_size, bar));
    if (out && end < examples.size()) save_feature_cache(partial, cache);
  }
  bar.finish();
  if (out) {
    save_feature_cache(*out, cache);
    fs::remove(partial);
  }
  return cache;
}

}  // namespace guardkit::route
