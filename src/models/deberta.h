// DeBERTa-v2/v3 sequence classifier, numerically as Hugging Face's DebertaV2ForSequenceClassification (transformers
// 4.36): embeddings, disentangled self-attention with (log-bucketed) relative positions, ContextPooler, classifier.
// Loads unmodified HF checkpoints (config.json + safetensors), runs fp32 or bf16 (oneDNN) on any device, trains
// (autograd through every parameter) and saves back in HF format.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/deberta_config.h"

namespace guardkit::models {

struct DebertaOutput {
  at::Tensor logits;       // [B, num_labels] float32
  at::Tensor probs;        // [B, num_labels] float32, softmax(logits)
  at::Tensor pooled;       // [B, pooler_hidden_size] float32: ContextPooler output = classifier input
  at::Tensor cls_hidden;   // [B, hidden] float32: last encoder layer at position 0 ([CLS])
  at::Tensor last_hidden;  // [B, T, hidden] in the model dtype
  std::vector<at::Tensor> cls_per_layer;  // when asked: [0] embeddings output, [k] layer k output, each [B, hidden]
};

struct DebertaForwardOptions {
  bool cls_per_layer = false;
  // Compute the relative-position terms as HF does (T x 2span products, then torch.gather) instead of our
  // per-distance rows read through a strided view (for tests and benchmarks comparing the two).
  bool force_gather = false;
};

struct DebertaLoadOptions {
  c10::ScalarType dtype = c10::kFloat;
  c10::Device device = c10::Device(c10::kCPU);
  bool trainable = false;  // own every weight (no mmap aliasing) and set requires_grad
};

class DebertaClassifier {
 public:
  // Reads dir/config.json and dir/model.safetensors (or a sharded index). Missing or mis-shaped tensors are a
  // one-line guardkit::Error naming the tensor.
  static DebertaClassifier load(const std::filesystem::path& dir, const DebertaLoadOptions& options = {});
  // A model with random weights (normal(0, initializer_range) matrices, small random biases and LayerNorm offsets)
  // for tests and benchmarks.
  static DebertaClassifier random(const DebertaConfig& config, uint64_t seed, const DebertaLoadOptions& options = {},
                                  double initializer_range = 0.02);

  DebertaClassifier(DebertaClassifier&&) noexcept;
  DebertaClassifier& operator=(DebertaClassifier&&) noexcept;
  ~DebertaClassifier();

  // input_ids [B, T] (int32/int64), attention_mask [B, T] (1 = token, 0 = padding; undefined = all ones),
  // token_type_ids [B, T] (undefined = zeros; ignored when type_vocab_size is 0). Differentiable when grad mode is on
  // and the model is trainable.
  DebertaOutput forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                        const at::Tensor& token_type_ids = {}, const DebertaForwardOptions& options = {}) const;

  const DebertaConfig& config() const;
  c10::ScalarType dtype() const;
  c10::Device device() const;

  // Every parameter with its Hugging Face name, in module order. The tensors are the model's own (in-place updates
  // change the model).
  const std::vector<std::pair<std::string, at::Tensor>>& named_parameters() const;
  int64_t parameter_count() const;
  // Makes every parameter an owned, gradient-requiring tensor (copies weights that alias the checkpoint's mmap).
  void set_trainable(bool trainable);
  bool trainable() const;

  // Writes dir/config.json and dir/model.safetensors (in the model's dtype) that transformers loads.
  void save_pretrained(const std::filesystem::path& dir) const;

  // Forward FLOPs of one sequence of `tokens` tokens (multiply-add = 2 FLOPs): the dense layers (projections, FFN,
  // pooler, classifier), QK^T and PV, and the c2p/p2c position scores (each a T x T x head_size product per head,
  // counted as HF computes them over the gathered entries; the relative-embedding projections are cached and not
  // counted).
  double forward_flops(int64_t tokens) const;

 private:
  struct Impl;
  explicit DebertaClassifier(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace guardkit::models
