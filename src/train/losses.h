// Classifier training losses as the HarmAug distillation recipe defines them (papers.md §2.3): cross-entropy on
// hard labels, KL divergence to the teacher's soft labels, and their mean.
#pragma once
#include <ATen/core/Tensor.h>

namespace guardkit::train {

// F.cross_entropy(logits, labels), mean over the batch. logits [B, L] float, labels [B] integer in [0, L).
at::Tensor cross_entropy_loss(const at::Tensor& logits, const at::Tensor& labels);

// nn.KLDivLoss(reduction="batchmean")(log_softmax(logits), target) = sum(q * (log q - log p)) / B with 0 log 0 = 0.
// target [B, L], rows are distributions.
at::Tensor kl_divergence_loss(const at::Tensor& logits, const at::Tensor& target);

// The two-class soft target [1 - s, s] for teacher P(unsafe) = s. soft [B] -> [B, 2] (float32).
at::Tensor binary_soft_target(const at::Tensor& soft_labels);

// HarmAug: 0.5 * (CE(logits, labels) + KL(target || softmax(logits))) with target = [1 - s, s].
struct DistillationLoss {
  at::Tensor loss, ce, kl;  // scalars; loss carries the graph
};
DistillationLoss distillation_loss(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& soft_labels);

}  // namespace guardkit::train
