// Masked-language-model pretraining of a DeBERTa encoder (BERT/RoBERTa recipe as DeBERTa uses it): texts tokenized
// and packed into full max_length sequences ([CLS] tokens… [SEP] between texts), 15% of the ordinary tokens chosen
// for prediction, of which 80% become [MASK], 10% a random piece and 10% stay; AdamW with linear warmup and decay,
// clipping at 1.0, checkpoints that resume to the same weights, and the final model in Hugging Face format
// (DebertaV2ForMaskedLM).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace guardkit::models {
class DebertaMaskedLM;
}
namespace guardkit::text {
class Tokenizer;
}

namespace guardkit::train {

// Tokenizes every text (special-token text stays text) and packs the stream, a [SEP] after each text, into
// sequences of exactly `max_length` ids, each starting with [CLS]; the last partial sequence is dropped unless it is
// the only one (then it is returned shorter). Empty texts are skipped.
std::vector<std::vector<int32_t>> pack_for_mlm(const text::Tokenizer& tokenizer, const std::vector<std::string>& texts,
                                               int64_t max_length);

struct MlmMasking {
  double mask_probability = 0.15;  // share of the ordinary tokens predicted
  double replace_with_mask = 0.8;  // of those: [MASK]
  double replace_with_random = 0.1;  // random ordinary piece; the rest stay unchanged
};

// One masked batch: input ids with the replacements, labels = original id at predicted positions, -100 elsewhere.
struct MaskedBatch {
  std::vector<std::vector<int32_t>> input_ids;
  std::vector<std::vector<int64_t>> labels;
  int64_t predicted = 0;
};
// Masks `sequences` with `seed` (deterministic). Special ids ([CLS], [SEP], [PAD], [UNK], [MASK]) are never chosen;
// random replacements are drawn from the ordinary pieces. At least one position per batch is predicted.
MaskedBatch mask_tokens(const std::vector<const std::vector<int32_t>*>& sequences, const text::Tokenizer& tokenizer,
                        const MlmMasking& masking, uint64_t seed);

struct MlmOptions {
  double lr = 5e-4;
  double weight_decay = 0.01;
  int64_t steps = 1000;           // optimizer steps
  int64_t batch_size = 32;        // sequences per step
  int64_t warmup_steps = 100;
  double max_grad_norm = 1.0;
  MlmMasking masking;
  uint64_t seed = 42;
  int64_t checkpoint_every = 50;  // steps (and always at the end)
  int64_t stop_after_steps = 0;   // stop (as if killed) after this many steps of this run; 0 = run to the end
  bool show_progress = true;
};

struct MlmState {
  int64_t step = 0, total_steps = 0;
  std::vector<double> losses;  // loss of every step so far
  bool finished = false;
};

// Pretrains `model` on `sequences` (from pack_for_mlm), checkpointing into run_dir/checkpoint and resuming from it;
// at the end writes the model and the tokenizer files of `tokenizer_dir` to run_dir/final.
MlmState pretrain_mlm(models::DebertaMaskedLM& model, const text::Tokenizer& tokenizer,
                      const std::filesystem::path& tokenizer_dir, const std::vector<std::vector<int32_t>>& sequences,
                      const MlmOptions& options, const std::filesystem::path& run_dir);

}  // namespace guardkit::train
