// A tiny Llama causal LM trained here from scratch, as the local generator and target model of the tabletop
// experiments (HarmAug's jailbroken instruction generator, BiasJailbreak's target), since no pretrained LM can be
// downloaded. Pipeline: training documents from the commercially usable sets in shared/data (generator_corpus), a
// byte-level BPE vocabulary trained on them (text/bpe_trainer.h), a Llama config + normal(0, 0.02) init, next-token
// cross-entropy on packed sequences through the engine's own Llama forward (models/llama.h, with gradients), AdamW with
// warmup + cosine decay and clipping at 1.0, checkpoints that resume to the same weights, and a Hugging Face Llama
// directory (config.json, model.safetensors, generation_config.json, tokenizer files) that `guardkit generate`,
// LocalLlamaBackend and LlamaModel::load read unchanged.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace guardkit::text {
class Tokenizer;
}

namespace guardkit::train {

// One training document: pieces of text, each either special-token text (one id) or plain text, and whether the
// model is trained to predict it. Plain-text documents predict everything; chat documents only the assistant turns.
struct GeneratorPiece {
  std::string text;
  bool special = false;
  bool predict = true;
};
struct GeneratorDocument {
  std::string kind;  // "list", "refusal", "answer", "brainstorm", "fiction_refusal", "fiction_story", "keywords"
  std::vector<GeneratorPiece> pieces;
};

// The default training sets: commercially usable (MIT / CC-BY) harmful-behaviour lists and response sets. ToxicChat,
// BeaverTails and Do-Not-Answer (non-commercial) are never among them, and `generator_corpus` refuses them.
const std::vector<std::string>& default_generator_datasets();

struct GeneratorCorpus {
  std::vector<GeneratorDocument> documents;
  std::map<std::string, size_t> kind_counts;    // documents per kind
  std::map<std::string, size_t> source_counts;  // rows used per dataset
};

// Builds the documents (see generator_lm.cpp for the mix) from `datasets` (registry names) under `data_dir`.
// Deterministic for a seed. Throws guardkit::Error for unknown or evaluation-only sets, or when nothing is left.
GeneratorCorpus generator_corpus(const std::filesystem::path& data_dir, const std::vector<std::string>& datasets,
                                 uint64_t seed);

// The refusal sentences the chat documents use (written for guardkit, varied on purpose).
const std::vector<std::string>& generator_refusals();

struct GeneratorOptions {
  std::filesystem::path data_dir;                 // empty: default_data_dir()
  std::vector<std::string> datasets;              // empty: default_generator_datasets()
  size_t vocab_size = 4000;                       // tokenizer (and model) vocabulary, special tokens included
  int64_t hidden_size = 192;
  int64_t num_layers = 4;
  int64_t num_heads = 6;
  int64_t num_kv_heads = 2;
  int64_t intermediate_size = 0;                  // 0: 8/3 hidden rounded up to a multiple of 32
  int64_t max_length = 128;                       // tokens per packed training row (and the model's context)
  int64_t steps = 500;                            // optimizer steps (ignored when minutes > 0)
  double minutes = 0;                             // > 0: as many steps as fit, measured on the first steps
  int64_t batch_size = 16;                        // rows per step
  double lr = 3e-3;                               // peak learning rate
  double min_lr_ratio = 0.1;                      // cosine decays to lr × this
  double warmup_fraction = 0.05;                  // of the steps
  double weight_decay = 0.1;
  double max_grad_norm = 1.0;
  uint64_t seed = 0;
  int64_t checkpoint_every = 50;                  // steps (and at the end)
  int64_t stop_after_steps = 0;                   // stop (as if killed) after this many steps of this run; 0 = no
  bool show_progress = true;
};

struct GeneratorResult {
  int64_t step = 0, total_steps = 0;
  bool finished = false;
  bool resumed = false;
  std::vector<double> losses;  // training loss of every step so far
  size_t documents = 0, training_tokens = 0, vocab_size = 0;
  int64_t parameters = 0;
  double seconds = 0;          // this run's wall time
};

// Trains into `out_dir` (checkpoint in out_dir/checkpoint, resumed when it exists and matches the options); the
// final model files are written into out_dir itself when the run finishes. Throws guardkit::Error on bad options.
GeneratorResult train_generator(const std::filesystem::path& out_dir, const GeneratorOptions& options);

// Checks options before any work (one-line errors naming the option).
void validate_generator_options(const GeneratorOptions& options);

}  // namespace guardkit::train
