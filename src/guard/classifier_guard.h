// ClassifierGuard: a DeBERTa sequence classifier used as HarmAug-Guard is (papers.md §2.3):
//   tokenizer(prompt, response or "")  ->  P(unsafe) = softmax(logits)[:, unsafe_label]
// with configurable max length and truncation; a batch is sorted by length and run in padded micro-batches; the
// router feature is the ContextPooler output. Cost per item: its own tokens (no padding) and
// DebertaClassifier::forward_flops(tokens) — 2 FLOPs per multiply-add over the dense layers, QK^T, PV and the
// c2p/p2c position scores (2*T^2*A each per layer), plus pooler and classifier.
#pragma once
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "guard/guard.h"
#include "models/deberta.h"
#include "text/tokenizer.h"

namespace guardkit::guard {

struct ClassifierGuardOptions {
  std::string name = "classifier";
  double threshold = 0.5;
  size_t max_length = 512;  // tokens including [CLS]/[SEP]; 0 = no limit
  text::Truncation truncation = text::Truncation::LongestFirst;  // HF truncation=True
  // HarmAug: a prompt without a response is encoded as the pair (prompt, ""), i.e. [CLS] p [SEP] [SEP]. false encodes
  // it as a single text [CLS] p [SEP] (HarmAug's eval of prompt-only sets).
  bool pair_with_empty_response = true;
  // HF's tokenizer turns "[SEP]" etc. inside the text into special ids (what the model saw in training); false encodes
  // such text as plain text.
  bool parse_special = true;
  int64_t unsafe_label = 1;  // index of the unsafe class in the logits
  size_t batch_size = 16;    // at most this many sequences per forward pass
  // Cost of one forward pass beyond its tokens, in padded tokens (op dispatch, thread wake-ups). A scored batch is
  // sorted by length and cut into the micro-batches that minimise (passes x this + padded tokens): similar lengths
  // share a pass, very different ones do not pad each other. 0 = fixed chunks of batch_size.
  double pass_overhead_tokens = 48;
  c10::ScalarType dtype = c10::kFloat;
  c10::Device device = c10::Device(c10::kCPU);
};

// Micro-batch sizes for items sorted longest first (`lengths` descending): the split minimising
// passes x overhead_tokens + sum over passes of (items x longest), at most max_batch items a pass (dynamic
// programming, O(n x max_batch)). overhead_tokens <= 0 gives fixed chunks of max_batch.
std::vector<size_t> plan_micro_batches(const std::vector<size_t>& lengths, size_t max_batch, double overhead_tokens);

class ClassifierGuard : public Guard {
 public:
  ClassifierGuard(std::shared_ptr<const models::DebertaClassifier> model, std::shared_ptr<const text::Tokenizer> tokenizer,
                  ClassifierGuardOptions options = {});
  // A Hugging Face model directory: config.json, model.safetensors and the tokenizer files.
  static std::unique_ptr<ClassifierGuard> load(const std::filesystem::path& dir, ClassifierGuardOptions options = {});

  const std::string& name() const override { return options_.name; }
  double threshold() const override { return options_.threshold; }
  int64_t feature_dim() const override;
  std::vector<GuardResult> score(const std::vector<Conversation>& batch, const ScoreOptions& options = {}) override;

  // The model input for one conversation (exposed for tests and `guardkit forward`).
  text::Encoding encode(const Conversation& conversation) const;
  const models::DebertaClassifier& model() const { return *model_; }
  const ClassifierGuardOptions& options() const { return options_; }

 private:
  std::shared_ptr<const models::DebertaClassifier> model_;
  std::shared_ptr<const text::Tokenizer> tokenizer_;
  ClassifierGuardOptions options_;
};

}  // namespace guardkit::guard
