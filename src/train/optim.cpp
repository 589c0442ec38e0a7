#include "train/optim.h"

#include <torch/torch.h>

#include <cmath>

#include "util/error.h"

namespace guardkit::train {
namespace {

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

bool AdamW::decays(const std::string& name) const {
  if (!options_.exclude_bias_and_norm_from_decay) return true;
  // HF Trainer.get_decay_parameter_names: every LayerNorm parameter and every bias is excluded.
  if (ends_with(name, ".bias") || name == "bias") return false;
  if (name.find("LayerNorm") != std::string::npos || name.find("layer_norm") != std::string::npos ||
      name.find("layernorm") != std::string::npos || name.find("norm.weight") != std::string::npos)
    return false;
  return true;
}

AdamW::AdamW(const std::vector<std::pair<std::string, at::Tensor>>& named_parameters, const AdamWOptions& options)
    : options_(options) {
  if (options.lr < 0 || options.eps < 0 || options.weight_decay < 0) fail("AdamW: lr, eps and weight_decay must be >= 0");
  if (options.beta1 < 0 || options.beta1 >= 1 || options.beta2 < 0 || options.beta2 >= 1)
    fail("AdamW: betas must lie in [0, 1)");
  for (const auto& [name, param] : named_parameters) {
    if (!param.requires_grad()) continue;
    Slot slot;
    slot.name = name;
    slot.param = param;
    slot.decay = decays(name);
    slots_.push_back(std::move(slot));
  }
  if (slots_.empty()) fail("AdamW: no trainable parameters (make the model trainable first)");
}

void AdamW::step() {
  at::NoGradGuard no_grad;
  ++step_;
  const double bias_correction1 = 1.0 - std::pow(options_.beta1, static_cast<double>(step_));
  const double bias_correction2_sqrt = std::sqrt(1.0 - std::pow(options_.beta2, static_cast<double>(step_)));
  const double step_size = options_.lr / bias_correction1;
  for (Slot& slot : slots_) {
    at::Tensor grad = slot.param.grad();
    if (!grad.defined()) continue;
    if (!slot.exp_avg.defined()) {
      slot.exp_avg = at::zeros_like(slot.param, at::MemoryFormat::Preserve);
      slot.exp_avg_sq = at::zeros_like(slot.param, at::MemoryFormat::Preserve);
    }
    // torch 1.13 _single_tensor_adamw, op for op.
    if (slot.decay && options_.weight_decay != 0) slot.param.mul_(1.0 - options_.lr * options_.weight_decay);
    slot.exp_avg.mul_(options_.beta1).add_(grad, 1.0 - options_.beta1);
    slot.exp_avg_sq.mul_(options_.beta2).addcmul_(grad, grad, 1.0 - options_.beta2);
    at::Tensor denom = (slot.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(options_.eps);
    slot.param.addcdiv_(slot.exp_avg, denom, -step_size);
  }
}

void AdamW::zero_grad() {
  for (Slot& slot : slots_) slot.param.mutable_grad().reset();
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const Slot& slot : slots_) {
    if (!slot.exp_avg.defined()) continue;
    out.emplace_back(slot.name + ".exp_avg", slot.exp_avg);
    out.emplace_back(slot.name + ".exp_avg_sq", slot.exp_avg_sq);
  }
  return out;
}

void AdamW::load_state_tensors(const std::vector<std::pair<std::string, at::Tensor>>& tensors, int64_t step) {
  for (Slot& slot : slots_) {
    for (const auto& [name, tensor] : tensors) {
      if (name == slot.name + ".exp_avg" || name == slot.name + ".exp_avg_sq") {
        if (tensor.sizes() != slot.param.sizes()) fail("AdamW state '{}' has the wrong shape", name);
        at::Tensor copy = tensor.to(slot.param.device(), slot.param.scalar_type()).clone();
        (name == slot.name + ".exp_avg" ? slot.exp_avg : slot.exp_avg_sq) = copy;
      }
    }
    if (slot.exp_avg.defined() != slot.exp_avg_sq.defined()) fail("AdamW state for '{}' is incomplete", slot.name);
  }
  step_ = step;
}

double global_grad_norm(const std::vector<std::pair<std::string, at::Tensor>>& named_parameters) {
  double sum = 0.0;
  for (const auto& [name, param] : named_parameters) {
    const at::Tensor& grad = param.grad();
    if (grad.defined()) sum += grad.to(at::kDouble).pow(2).sum().item<double>();
  }
  return std::sqrt(sum);
}

double clip_grad_norm(const std::vector<std::pair<std::string, at::Tensor>>& named_parameters, double max_norm) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> norms;
  for (const auto& [name, param] : named_parameters)
    if (param.grad().defined()) norms.push_back(at::norm(param.grad().detach(), 2));
  if (norms.empty()) return 0.0;
  // As torch: the norm of the per-tensor norms, in the gradients' dtype.
  at::Tensor total = at::norm(at::stack(norms), 2);
  const double total_norm = total.item<double>();
  // A non-finite norm is returned unclipped: the caller decides (skip the step, stop the run).
  if (max_norm > 0 && std::isfinite(total_norm)) {
    const double coefficient = max_norm / (total_norm + 1e-6);
    if (coefficient < 1.0)
      for (const auto& [name, param] : named_parameters)
        if (param.grad().defined()) param.mutable_grad().mul_(coefficient);
  }
  return total_norm;
}

}  // namespace guardkit::train
