// DeBERTa-v2/v3 with a masked-language-model head, laid out as Hugging Face's DebertaV2ForMaskedLM with
// config.legacy = false (transformers >= 4.48; the original Microsoft checkpoints use the same names):
//   lm_predictions.lm_head.dense        H -> H
//   transform act (config.hidden_act)
//   lm_predictions.lm_head.LayerNorm    H
//   logits = x · deberta.embeddings.word_embeddings.weightᵀ + lm_predictions.lm_head.bias   (decoder tied)
// The encoder is the DebertaClassifier's (same code, same numerics); its pooler and classifier are not part of this
// model. Used to pretrain the bootstrap's large guard before it is fine-tuned on labels.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/deberta.h"

namespace guardkit::models {

class DebertaMaskedLM {
 public:
  // Random encoder (as DebertaClassifier::random) and head (dense normal(0, range), LayerNorm 1/0, bias 0).
  static DebertaMaskedLM random(const DebertaConfig& config, uint64_t seed, const DebertaLoadOptions& options = {},
                                double initializer_range = 0.02);
  // Reads dir/config.json and dir/model.safetensors written by save_pretrained (or by transformers).
  static DebertaMaskedLM load(const std::filesystem::path& dir, const DebertaLoadOptions& options = {});

  DebertaMaskedLM(DebertaMaskedLM&&) noexcept;
  DebertaMaskedLM& operator=(DebertaMaskedLM&&) noexcept;
  ~DebertaMaskedLM();

  // Vocabulary logits at the chosen positions. input_ids [B, T], attention_mask [B, T] (undefined = all ones),
  // positions [N] int64 flat indices into B*T (undefined = every position) -> [N, V] float32.
  at::Tensor logits(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                    const at::Tensor& positions = {}) const;
  // Mean cross-entropy over the positions whose label is not -100 (HF's MaskedLM loss); the head runs only there.
  // labels [B, T] int64. Differentiable when trainable.
  at::Tensor loss(const at::Tensor& input_ids, const at::Tensor& attention_mask, const at::Tensor& labels) const;

  const DebertaConfig& config() const;
  // Encoder ("deberta.*") then head ("lm_predictions.lm_head.*") parameters with their HF names; the tied decoder
  // is the word embedding, listed once.
  const std::vector<std::pair<std::string, at::Tensor>>& named_parameters() const;
  void set_trainable(bool trainable);

  // config.json (architectures DebertaV2ForMaskedLM, legacy false) and model.safetensors that transformers loads.
  void save_pretrained(const std::filesystem::path& dir) const;

 private:
  struct Impl;
  explicit DebertaMaskedLM(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Copies every encoder tensor ("deberta.*") of the checkpoint in `dir` into `model` (names and shapes must match;
// a missing or mis-shaped tensor is a one-line error). The pooler and classifier keep their values: what
// DebertaV2ForSequenceClassification.from_pretrained does with a masked-LM checkpoint. Returns the number copied.
int64_t load_encoder_weights(DebertaClassifier& model, const std::filesystem::path& dir);

}  // namespace guardkit::models
