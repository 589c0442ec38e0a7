// HarmAug distillation of a DeBERTa student (papers.md §2.3): loss 0.5·(CE on hard labels + KL to [1−s, s]) where a
// soft label exists, CE alone elsewhere; AdamW (decay 0.1 except bias/LayerNorm), linear warmup and decay, gradient
// accumulation, clipping at 1.0, class-balanced sampling, seeds, periodic evaluation, checkpoints that resume to the
// same result, and the final model in Hugging Face format.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace guardkit::models {
class DebertaClassifier;
}
namespace guardkit::text {
class Tokenizer;
}

namespace guardkit::train {

struct TrainExample {
  std::string prompt;
  std::optional<std::string> response;
  int label = 0;                      // hard label (1 = unsafe); recomputed as soft > 0.5 when a soft label exists
  std::optional<double> soft_label;   // teacher P(unsafe)
};

// A held-out set scored during training (gold labels in `label`).
struct EvalSet {
  std::string name;
  std::vector<TrainExample> examples;
};

// One periodic evaluation: F1 of argmax (P(unsafe) > 0.5) and AUPRC (average precision of P(unsafe)).
struct EvalRecord {
  int64_t step = 0;
  std::string set;
  size_t rows = 0;
  double f1 = 0.0, auprc = 0.0;
};

struct DistillOptions {
  double lr = 3e-5;
  double weight_decay = 0.1;
  int epochs = 3;
  int64_t max_steps = 0;          // 0 = epochs × steps per epoch
  int64_t batch_size = 256;       // examples per optimizer step
  int64_t micro_batch_size = 8;   // gradient accumulation chunks
  int64_t warmup_steps = 100;
  double max_grad_norm = 1.0;
  int64_t max_length = 512;
  bool balanced_sampler = true;   // WeightedRandomSampler with inverse class frequency of the hard labels
  uint64_t seed = 42;
  int64_t checkpoint_every = 50;  // optimizer steps (and always at the end)
  int64_t eval_every = 0;         // optimizer steps; 0 = only at the end
  std::vector<EvalSet> eval_sets;  // scored every eval_every steps and at the end (logged, kept in the state)
  int64_t eval_batch_size = 32;
  // bf16 mixed precision: the forward runs under autocast (bf16 matmuls through oneDNN on CPU) while the weights,
  // their gradients, AdamW's state and the saved model stay fp32.
  bool bf16 = false;
  int64_t stop_after_steps = 0;   // stop (as if killed) after this many steps of this run; 0 = run to the end
  bool show_progress = true;
};

struct DistillState {
  int64_t step = 0, total_steps = 0;
  std::vector<double> losses;  // mean loss of every optimizer step so far
  std::vector<EvalRecord> evals;  // every evaluation so far, in order
  bool finished = false;
};

// Encodes one example as the student sees it: tokenizer(prompt, response or "") with longest-first truncation,
// special-token text parsed as Hugging Face does — exactly how ClassifierGuard (its defaults) scores.
std::vector<int32_t> student_input_ids(const text::Tokenizer& tokenizer, const TrainExample& example,
                                       int64_t max_length, std::vector<int32_t>* type_ids = nullptr);

// Trains `student` (made trainable) on `train`, checkpointing into `run_dir/checkpoint` and resuming from it when it
// exists; at the end writes the model and the tokenizer files of `tokenizer_dir` to `run_dir/final`.
// Every step and every evaluation is a line of `run_dir/log.jsonl` ({"step","loss","lr","grad_norm","examples",
// "seconds"} and {"step","eval","rows","f1","auprc"}); a resumed run first drops the lines past its checkpoint.
// The options' eval_sets, then `evaluate(step)`, are run every eval_every steps and at the end.
DistillState distill(models::DebertaClassifier& student, const text::Tokenizer& tokenizer,
                     const std::filesystem::path& tokenizer_dir, const std::vector<TrainExample>& train,
                     const DistillOptions& options, const std::filesystem::path& run_dir,
                     const std::function<void(int64_t step)>& evaluate = {});

// P(unsafe) of the student for each example (batched, no gradients).
std::vector<double> predict_unsafe(const models::DebertaClassifier& model, const text::Tokenizer& tokenizer,
                                   const std::vector<TrainExample>& examples, int64_t max_length,
                                   int64_t batch_size = 32);

// F1 and AUPRC of the student on one labelled set.
EvalRecord evaluate_student(const models::DebertaClassifier& model, const text::Tokenizer& tokenizer,
                            const EvalSet& set, int64_t max_length, int64_t batch_size = 32);

// Copies the tokenizer files a Hugging Face loader needs from `from` to `to` (those that exist).
void copy_tokenizer_files(const std::filesystem::path& from, const std::filesystem::path& to);

}  // namespace guardkit::train
