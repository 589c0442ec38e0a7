#include "train/losses.h"

#include <torch/torch.h>

#include "util/error.h"

namespace guardkit::train {

at::Tensor cross_entropy_loss(const at::Tensor& logits, const at::Tensor& labels) {
  if (logits.dim() != 2) fail("cross_entropy_loss: logits must be [batch, labels]");
  if (labels.dim() != 1 || labels.size(0) != logits.size(0))
    fail("cross_entropy_loss: labels must be [{}], got {} dims", logits.size(0), labels.dim());
  at::Tensor hard = labels.to(logits.device(), at::kLong);
  if (hard.numel() > 0) {
    const int64_t lo = hard.min().item<int64_t>(), hi = hard.max().item<int64_t>();
    if (lo < 0 || hi >= logits.size(1)) fail("cross_entropy_loss: label {} outside [0, {})", lo < 0 ? lo : hi, logits.size(1));
  }
  return at::cross_entropy_loss(logits, hard);  // mean reduction
}

at::Tensor kl_divergence_loss(const at::Tensor& logits, const at::Tensor& target) {
  if (logits.dim() != 2 || target.sizes() != logits.sizes())
    fail("kl_divergence_loss: target shape must equal logits [batch, labels]");
  at::Tensor q = target.to(logits.device(), logits.scalar_type());
  at::Tensor log_p = at::log_softmax(logits, -1);
  // xlogy(q, q) is q log q with 0 log 0 = 0 (KLDivLoss's convention for zero targets).
  at::Tensor pointwise = at::xlogy(q, q) - q * log_p;
  return pointwise.sum() / static_cast<double>(logits.size(0));
}

at::Tensor binary_soft_target(const at::Tensor& soft_labels) {
  at::Tensor s = soft_labels.to(at::kFloat).reshape({-1});
  if (s.numel() > 0 && (s.min().item<float>() < 0.f || s.max().item<float>() > 1.f))
    fail("soft labels must be probabilities in [0, 1]");
  return at::stack({1.0 - s, s}, 1);
}

DistillationLoss distillation_loss(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& soft_labels) {
  if (logits.dim() != 2 || logits.size(1) != 2) fail("distillation_loss: needs two-class logits [batch, 2]");
  DistillationLoss out;
  out.ce = train::cross_entropy_loss(logits, labels);
  out.kl = train::kl_divergence_loss(logits, binary_soft_target(soft_labels).to(logits.device()));
  out.loss = 0.5 * (out.ce + out.kl);
  return out;
}

}  // namespace guardkit::train
