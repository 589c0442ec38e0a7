// The two LlmBackend implementations: the engine's own Llama (a checkpoint directory) and any OpenAI-compatible
// endpoint (vLLM, llama.cpp server, guardkit serve). make_llm_backend picks one from a spec string.
#pragma once
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "augment/llm_backend.h"

namespace guardkit::models {
class LlamaModel;
}
namespace guardkit::text {
class Tokenizer;
}
namespace guardkit::io {
class OpenAIClient;
}

namespace guardkit::augment {

struct LocalLlamaOptions {
  std::string dtype = "fp32";   // fp32 or bf16
  std::string device = "cpu";   // cpu, cuda, cuda:N
  size_t max_batch = 16;        // requests generated together at most
};

// A Llama checkpoint directory (config.json, model.safetensors, tokenizer files). Requests are rendered with the
// Llama 3 chat template (user content encoded as plain text), continued from the assistant prefix when given.
// Requests of one generate() call with identical sampling parameters run as one batch.
class LocalLlamaBackend : public LlmBackend {
 public:
  explicit LocalLlamaBackend(const std::filesystem::path& model_dir, LocalLlamaOptions options = {});
  ~LocalLlamaBackend() override;
  std::string name() const override { return name_; }
  std::vector<Completion> generate(const std::vector<ChatRequest>& batch) override;

  // The token ids the model sees for a request (tests compare with models::generate on the same ids).
  std::vector<int64_t> prompt_ids(const ChatRequest& request) const;
  const models::LlamaModel& model() const { return *model_; }
  const text::Tokenizer& tokenizer() const { return *tokenizer_; }

 private:
  std::vector<Completion> generate_group(const std::vector<const ChatRequest*>& requests);

  std::string name_;
  LocalLlamaOptions options_;
  std::shared_ptr<models::LlamaModel> model_;
  std::unique_ptr<text::Tokenizer> tokenizer_;
};

struct OpenAIBackendOptions {
  std::string base_url;     // "http://host:port" (a trailing /v1 is fine)
  std::string model_name;   // the "model" field sent; servers that serve one model ignore it
  std::string api_key;      // default: $OPENAI_API_KEY when set
  double timeout_s = 120.0;
  int max_retries = 3;
  int max_concurrency = 8;  // requests of a batch sent in parallel at most
};

// An OpenAI-compatible endpoint: /v1/chat/completions, or /v1/completions with the Llama 3 chat template rendered
// locally when a request has an assistant prefix (a chat endpoint cannot continue a pre-filled assistant turn).
class OpenAIBackend : public LlmBackend {
 public:
  explicit OpenAIBackend(OpenAIBackendOptions options);
  ~OpenAIBackend() override;
  std::string name() const override;
  std::vector<Completion> generate(const std::vector<ChatRequest>& batch) override;

 private:
  Completion generate_one(const ChatRequest& request);
  OpenAIBackendOptions options_;
  std::unique_ptr<io::OpenAIClient> client_;
};

// spec: an existing directory → LocalLlamaBackend; "http://..." or "https://..." → OpenAIBackend(model_name).
std::unique_ptr<LlmBackend> make_llm_backend(const std::string& spec, const std::string& model_name = "");

}  // namespace guardkit::augment
