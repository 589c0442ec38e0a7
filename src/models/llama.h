// Llama-architecture decoder as Hugging Face LlamaForCausalLM (Llama 2 / 3 / 3.1 / 3.2, Llama Guard 3) and
// Qwen3ForCausalLM (Qwen3, Qwen3Guard: the same plus a per-head q/k RMSNorm before RoPE): RMSNorm, grouped-query
// attention, RoPE (none / linear / llama3 / yarn scaling), SwiGLU MLP, tied or untied embeddings.
//
// One entry point, forward(): a batch of new tokens (any padding layout, given by a 0/1 mask) appended after what a
// KVCache already holds. Prefill = forward on an empty cache; decoding = forward of one token per row; a guard's fixed
// preamble = a cache computed once and copied into every request's cache (KVCache::repeat).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/llama_config.h"

namespace guardkit::io {
class Checkpoint;
}

namespace guardkit::models {

// Keys and values of every layer for a batch of rows, plus which slots hold real tokens. Slots are appended in
// lockstep for all rows (a padded chunk appends the same number of slots to each row); padding slots stay in the
// cache but are masked out of attention and do not advance a row's positions.
class KVCache {
 public:
  KVCache() = default;
  int64_t batch() const { return batch_; }
  int64_t length() const { return length_; }  // slots in use, padding included
  bool empty() const { return length_ == 0; }
  // Real (unpadded) tokens per row: the position the next real token of each row gets. [batch] int64, on the device.
  const at::Tensor& real_tokens() const { return real_tokens_; }

  // A deep copy holding `batch` copies of row `row` (the guard's preamble: compute once with batch 1, then
  // repeat for every request). `extra_capacity` slots are reserved for what the caller will append. `length` >= 0
  // keeps only the first `length` slots: the cache of a prefix of the cached sequence (attention is causal).
  KVCache repeat(int64_t batch, int64_t row = 0, int64_t extra_capacity = 0, int64_t length = -1) const;
  // A deep copy of the given rows (for shrinking a batch when some rows finished), optionally cut to `length` slots.
  KVCache select_rows(const std::vector<int64_t>& rows, int64_t extra_capacity = 0, int64_t length = -1) const;
  KVCache clone(int64_t extra_capacity = 0) const;
  // Bytes held by keys and values (capacity, not just length).
  int64_t nbytes() const;

 private:
  friend class LlamaModel;
  void reserve(int64_t capacity);  // grows every layer's storage (geometric) to hold `capacity` slots

  int64_t batch_ = 0;
  int64_t length_ = 0;
  int64_t kv_heads_ = 0, head_dim_ = 0;
  c10::ScalarType dtype_ = c10::kFloat;
  c10::Device device_ = c10::kCPU;
  int64_t capacity_ = 0;
  std::vector<at::Tensor> keys_, values_;  // per layer [batch, kv_heads, capacity, head_dim]
  at::Tensor valid_;                        // [batch, capacity] bool: slot holds a real token
  at::Tensor real_tokens_;                  // [batch] int64
};

enum class LogitsMode {
  None,        // hidden states only
  Last,        // full vocabulary at each row's last real token: [B, V]
  LastChosen,  // only `chosen_ids` rows of the LM head at the last real token: [B, n] (guard scoring)
  All,         // full vocabulary at every position: [B, T, V]
};

struct ForwardOptions {
  LogitsMode logits = LogitsMode::Last;
  std::vector<int64_t> chosen_ids;     // for LogitsMode::LastChosen
  bool layer_hidden_at_last = false;   // also return HF's hidden_states at the last real token of each row
  bool all_hidden = false;             // also return the final-normed hidden state at every position (token heads)
  // Record the autograd graph (training: weights given to from_tensors as leaves that require grad). Off by default:
  // inference runs under NoGradGuard. Same numbers either way.
  bool enable_grad = false;
};

struct ForwardOutput {
  at::Tensor logits;       // float32, shape by LogitsMode (undefined for None)
  at::Tensor last_hidden;  // [B, H] final-normed hidden state at each row's last real token (LM-head input), float32
  // With layer_hidden_at_last: num_layers + 1 tensors [B, H] float32 — [0] embeddings, [k] layer k output for
  // k < num_layers, [num_layers] final-normed (as HF output_hidden_states).
  std::vector<at::Tensor> layer_hidden;
  at::Tensor last_index;  // [B] int64: index (within this chunk) of each row's last real token
  at::Tensor hidden;      // with all_hidden: [B, T, H] final-normed hidden states (LM-head inputs), float32
};

// What a parameter is, so a source that makes weights (random tests, a fresh training run) can initialise it.
enum class ParamRole { Matrix, Norm, Bias };
// Gives the tensor for one parameter by its Hugging Face name and expected shape.
using ParamSource =
    std::function<at::Tensor(const std::string& name, const std::vector<int64_t>& shape, ParamRole role)>;

class LlamaModel {
 public:
  // Loads `dir` (config.json + model.safetensors or a sharded index) converting weights to `dtype` on `device`.
  // `extra_tensors`: names of other tensors the checkpoint may hold (a Qwen3Guard-Stream's heads), not an error.
  static std::shared_ptr<LlamaModel> load(const std::filesystem::path& dir, c10::ScalarType dtype = c10::kFloat,
                                          c10::Device device = c10::kCPU,
                                          const std::vector<std::string>& extra_tensors = {});
  // From named tensors with the HF names (tests, random models); converted to dtype/device.
  static std::shared_ptr<LlamaModel> from_tensors(const LlamaConfig& config,
                                                  const std::map<std::string, at::Tensor>& tensors,
                                                  c10::ScalarType dtype = c10::kFloat, c10::Device device = c10::kCPU);
  // HF-named random weights (normal(0, std), RMSNorm weights 1 + 0.1 N(0,1)) in float32 on the CPU, for tests and
  // benchmarks. Deterministic for a seed.
  static std::map<std::string, at::Tensor> random_tensors(const LlamaConfig& config, uint64_t seed, double std = 0.02,
                                                          c10::ScalarType dtype = c10::kFloat);
  // Every parameter a checkpoint of `config` holds, by HF name in a fixed order, each made by `source` (the one
  // place the tensor names are written: loading, random weights and training initialisation all go through it).
  static std::vector<std::pair<std::string, at::Tensor>> make_parameters(const LlamaConfig& config,
                                                                         const ParamSource& source);

  const LlamaConfig& config() const { return config_; }
  c10::ScalarType dtype() const { return dtype_; }
  c10::Device device() const { return device_; }

  // An empty cache for `batch` rows with room for `capacity` slots (it grows when needed).
  KVCache new_cache(int64_t batch, int64_t capacity = 0) const;

  // Appends `input_ids` [B, T] (int64, any device) to `cache` (nullptr: no cache, i.e. a fresh prefill that keeps
  // nothing) and runs the model. `attention_mask` [B, T] 0/1 marks real tokens (undefined = all real); padding may
  // sit anywhere (left or right). Every row needs at least one real token. Positions continue from the cache's
  // real-token count per row. Thread-safety: concurrent calls need distinct caches.
  ForwardOutput forward(const at::Tensor& input_ids, const at::Tensor& attention_mask, KVCache* cache,
                        const ForwardOptions& options = {}) const;
  // Convenience: one unpadded sequence.
  ForwardOutput forward(const std::vector<int64_t>& ids, KVCache* cache = nullptr,
                        const ForwardOptions& options = {}) const;

  // Pads variable-length sequences into ids [B, T] and mask [B, T] (int64, CPU), left or right.
  static std::pair<at::Tensor, at::Tensor> pad_batch(const std::vector<std::vector<int64_t>>& sequences,
                                                     int64_t pad_id, bool left_padding);

 private:
  struct Layer {
    at::Tensor input_norm, post_attention_norm;  // [H]
    // Kept as the checkpoint stores them (no fusing) so fp32/bf16 checkpoints load zero-copy from the mmap.
    at::Tensor q_weight, k_weight, v_weight;     // [heads * head_dim, H], [kv_heads * head_dim, H] x2
    at::Tensor q_bias, k_bias, v_bias;           // undefined unless attention_bias
    at::Tensor q_norm, k_norm;                   // [head_dim], undefined unless qk_norm (Qwen3)
    at::Tensor o_weight, o_bias;                 // [H, heads * head_dim]
    at::Tensor gate_weight, up_weight;           // [I, H]
    at::Tensor gate_bias, up_bias;               // undefined unless mlp_bias
    at::Tensor down_weight, down_bias;           // [H, I]
  };

  LlamaModel(LlamaConfig config, c10::ScalarType dtype, c10::Device device);
  void build(const ParamSource& source);

  at::Tensor attention(const Layer& layer, int64_t index, const at::Tensor& x, const at::Tensor& cos,
                       const at::Tensor& sin, const at::Tensor& mask, KVCache* cache) const;
  at::Tensor mlp(const Layer& layer, const at::Tensor& x) const;
  at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight) const;
  const at::Tensor& lm_head() const { return config_.tie_word_embeddings ? embed_tokens_ : lm_head_; }

  LlamaConfig config_;
  c10::ScalarType dtype_;
  c10::Device device_;
  std::shared_ptr<const io::Checkpoint> checkpoint_;  // keeps zero-copy (mmapped) weights alive
  at::Tensor embed_tokens_;  // [V, H]
  at::Tensor lm_head_;       // [V, H] when untied
  at::Tensor final_norm_;    // [H]
  at::Tensor inv_freq_;      // [head_dim / 2] float32
  std::vector<Layer> layers_;
};

}  // namespace guardkit::models
