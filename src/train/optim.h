// AdamW (decoupled weight decay, Loshchilov & Hutter) exactly as torch.optim.AdamW 1.13 steps it, with the
// Hugging Face Trainer's parameter grouping (no decay for biases and LayerNorm weights) and global-norm clipping.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace guardkit::train {

struct AdamWOptions {
  double lr = 5e-5;           // HF TrainingArguments default learning rate
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // HF TrainingArguments default; torch's own default is 0.01
  // HF Trainer: biases and LayerNorm weights get no decay. false = one group, decay on every tensor (plain
  // torch.optim.AdamW(model.parameters())).
  bool exclude_bias_and_norm_from_decay = true;
};

class AdamW {
 public:
  AdamW(const std::vector<std::pair<std::string, at::Tensor>>& named_parameters, const AdamWOptions& options);

  // One update from the parameters' .grad() (parameters without a gradient are skipped, as torch does).
  void step();
  void zero_grad();  // sets gradients to None (torch >= 2.0 default; 1.13's zero_grad(set_to_none=False) zeros them)
  void set_lr(double lr) { options_.lr = lr; }
  double lr() const { return options_.lr; }
  int64_t steps() const { return step_; }
  const AdamWOptions& options() const { return options_; }
  // True when `name` gets weight decay under the options' grouping.
  bool decays(const std::string& name) const;

  // Optimizer state by parameter name (exp_avg, exp_avg_sq) and the step count, for checkpoint/resume.
  std::vector<std::pair<std::string, at::Tensor>> state_tensors() const;
  void load_state_tensors(const std::vector<std::pair<std::string, at::Tensor>>& tensors, int64_t step);

 private:
  struct Slot {
    std::string name;
    at::Tensor param, exp_avg, exp_avg_sq;
    bool decay = true;
  };
  std::vector<Slot> slots_;
  AdamWOptions options_;
  int64_t step_ = 0;
};

// The L2 norm of all gradients together (float64 accumulation) — what clip_grad_norm_ reports.
double global_grad_norm(const std::vector<std::pair<std::string, at::Tensor>>& named_parameters);

// torch.nn.utils.clip_grad_norm_(params, max_norm): scales every gradient by min(1, max_norm / (norm + 1e-6)).
// Returns the norm before clipping. max_norm <= 0 only measures.
double clip_grad_norm(const std::vector<std::pair<std::string, at::Tensor>>& named_parameters, double max_norm);

}  // namespace guardkit::train
