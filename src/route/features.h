// SafeRoute's feature cache: the small guard's feature (last-token hidden state for Llama Guard, pooled state for a
// DeBERTa classifier) together with both guards' P(unsafe), the gold label and an id per item, so router experiments
// never rerun the guards. Stored as safetensors: tensors `features` [N, d] F32, `p_small` / `p_large` [N] F32,
// `labels` [N] I8, `flops_small` / `flops_large` [N] F64, `ids` (UTF-8 bytes, U8) + `id_offsets` [N+1] I64; the
// header metadata names the feature source, the dimension and the guards.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "guard/guard.h"

namespace guardkit::route {

// SafeRoute's δ: a guard calls an item unsafe when P(unsafe) > δ (papers.md §1.1; the authors' code uses 0.5).
inline constexpr double kDefaultDelta = 0.5;

// Eq. 1: t = 1 iff the large guard is right and the small guard wrong.
int routing_label(double p_small, double p_large, int label, double delta = kDefaultDelta);

// One gold-labelled item: what the guards judge, and whether it is unsafe (1) or safe (0).
struct LabeledExample {
  std::string id;
  guard::Conversation conversation;
  int label = 0;
};

// A registered dataset name or a JSONL file in the eval/example.h schema (eval::load_dataset), as labelled examples.
std::vector<LabeledExample> load_labeled(const std::string& name_or_path);

struct FeatureCache {
  int64_t dim = 0;
  std::vector<float> features;     // [size() * dim], row-major
  std::vector<float> p_small;      // small guard P(unsafe)
  std::vector<float> p_large;      // large guard P(unsafe)
  std::vector<int8_t> labels;      // gold, 1 = unsafe
  std::vector<std::string> ids;
  std::vector<double> flops_small;  // per item (GuardResult::flops); 0 when the guard does not count
  std::vector<double> flops_large;
  std::string feature_source;      // e.g. "small:llama-guard-3-1b/last_token_hidden"
  std::string small_name, large_name;
  double seconds_small = 0.0;      // wall time the small guard spent on the whole set (features included)
  double seconds_large = 0.0;
  // The small guard's P(unsafe) on the content-free input " " (contextual calibration baseline).
  std::optional<double> p_small_content_free;

  size_t size() const { return ids.size(); }
  const float* row(size_t i) const { return features.data() + i * dim; }
  std::vector<int> routing_labels(double delta = kDefaultDelta) const;
  FeatureCache subset(const std::vector<size_t>& indices) const;
  void append(const FeatureCache& other);  // same dim and source; times add up
  void check() const;                      // consistent sizes, probabilities in [0, 1], finite features
};

void save_feature_cache(const std::filesystem::path& path, const FeatureCache& cache);
FeatureCache load_feature_cache(const std::filesystem::path& path);

// A cache from plain arrays (benchmarks, tests, external extractors). Features row-major [n, dim].
FeatureCache make_feature_cache(int64_t dim, std::vector<float> features, std::vector<float> p_small,
                                std::vector<float> p_large, std::vector<int8_t> labels,
                                std::string feature_source = "external");

struct FeatureBuildOptions {
  int batch_size = 8;
  size_t checkpoint_every = 512;        // items between partial saves (resume after a kill)
  bool progress = true;
  bool content_free = true;             // also score " " with the small guard (contextual calibration)
};

// Scores every example with both guards (the small one with ScoreOptions::want_features) and returns the cache.
// With `out` set, writes `<out>.partial` every checkpoint_every items and resumes from it when its ids are a prefix
// of the examples' ids; the finished cache is written to `out` and the partial file removed.
FeatureCache build_feature_cache(guard::Guard& small, guard::Guard& large, const std::vector<LabeledExample>& examples,
                                 const FeatureBuildOptions& options = {},
                                 const std::optional<std::filesystem::path>& out = std::nullopt);

}  // namespace guardkit::route
