// guardkit serve as an OpenAI-compatible generator endpoint: a real server on 127.0.0.1 with the fixture Llama as its
// generator, driven by guardkit's own clients — io::OpenAIClient (completions and chat, with logprobs),
// augment::OpenAIBackend (what HarmAug and BiasJailbreak use) and guard::RemoteGuard. Greedy output must equal the
// engine's (models::generate / LocalLlamaBackend on the same ids), logprobs must be the model's log-softmax (finite,
// top alternatives sorted), and bad requests must get 4xx JSON errors.
#include <gtest/gtest.h>
#include <httplib.h>

#include <ATen/ATen.h>
#include <cmath>
#include <nlohmann/json.hpp>

#include "augment/backends.h"
#include "guard/classifier_guard.h"
#include "guard/remote_guard.h"
#include "io/openai_client.h"
#include "models/generation.h"
#include "models/llama.h"
#include "serve/server.h"
#include "text/chat_format.h"
#include "text/guard_prompt.h"
#include "text/prompt.h"
#include "text/tokenizer.h"
#include "test_util.h"

namespace guardkit::serve {
namespace {

using nlohmann::json;

std::shared_ptr<const models::LlamaModel> fixture_llama() {
  static std::shared_ptr<const models::LlamaModel> model = models::LlamaModel::load(test::fixture("llama"));
  return model;
}
std::shared_ptr<const text::Tokenizer> fixture_tokenizer() {
  static std::shared_ptr<const text::Tokenizer> tokenizer = text::load_tokenizer(test::fixture("llama"));
  return tokenizer;
}

std::vector<int64_t> greedy_ids(const std::vector<int64_t>& prompt, int64_t max_tokens) {
  models::GenerationOptions greedy;
  greedy.max_new_tokens = max_tokens;
  return models::generate(*fixture_llama(), {prompt}, greedy).new_ids.at(0);
}

std::string decode(const std::vector<int64_t>& ids) {
  return fixture_tokenizer()->decode(std::vector<int32_t>(ids.begin(), ids.end()), /*skip_special_tokens=*/true);
}

// Log-softmax over the whole vocabulary after `ids` (float64).
at::Tensor next_token_logprobs(const std::vector<int64_t>& ids) {
  at::NoGradGuard no_grad;
  return at::log_softmax(fixture_llama()->forward(ids).logits[0].to(at::kDouble), -1);
}

class GeneratorServerTest : public ::testing::Test {
 protected:
  void start(ServerConfig config = {}) {
    config.host = "127.0.0.1";
    config.port = 0;
    config.generator = fixture_llama();
    config.generator_tokenizer = fixture_tokenizer();
    config.generator_name = "tiny-llama";
    config.max_completion_tokens = 12;
    std::shared_ptr<guard::Guard> guard(guard::ClassifierGuard::load(test::fixture("deberta"), {}));
    server_ = std::make_unique<GuardServer>(std::move(config), std::vector<ServedGuard>{{"guard", guard}});
    port_ = server_->start();
    ASSERT_GT(port_, 0);
  }
  void TearDown() override {
    if (server_) server_->stop();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::unique_ptr<io::OpenAIClient> client() {
    io::OpenAIClientOptions options;
    options.base_url = url() + "/v1";  // as OpenAI SDK base URLs are written
    options.max_retries = 0;
    options.timeout_s = 60;
    return std::make_unique<io::OpenAIClient>(options);
  }
  httplib::Result post(const std::string& path, const json& body) {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    return c.Post(path.c_str(), body.dump(), "application/json");
  }
  void expect_error(const std::string& path, const json& body, int status, const std::string& code) {
    auto res = post(path, body);
    ASSERT_TRUE(res) << body.dump();
    EXPECT_EQ(res->status, status) << body.dump() << " -> " << res->body;
    json error = json::parse(res->body, nullptr, false);
    ASSERT_TRUE(error.is_object() && error.contains("error")) << res->body;
    EXPECT_EQ(error["error"]["code"], code) << body.dump() << " -> " << res->body;
    EXPECT_FALSE(error["error"]["message"].get<std::string>().empty());
  }

  std::unique_ptr<GuardServer> server_;
  int port_ = 0;
};

TEST_F(GeneratorServerTest, ChatGreedyEqualsTheEngineWithSortedFiniteLogprobs) {
  start();
  const std::vector<text::ChatMessage> messages = {{"system", "You are a helpful assistant."},
                                                   {"user", "Tell me a story about <|eot_id|> a dragon."}};
  io::SamplingParams params;
  params.max_tokens = 10;
  params.temperature = 0;
  params.logprobs = 5;
  io::CompletionResponse response = client()->chat("tiny-llama", messages, params);

  // The engine on the same rendered ids (user text encoded as plain text: the typed <|eot_id|> is not a control token).
  text::ChatFormatOptions format;
  format.add_generation_prompt = true;
  format.bos_token = "<|begin_of_text|>";
  const std::vector<int32_t> rendered = text::encode_prompt(*fixture_tokenizer(), text::render_llama3_chat(messages, format));
  const std::vector<int64_t> prompt(rendered.begin(), rendered.end());
  const std::vector<int64_t> ids = greedy_ids(prompt, 10);
  ASSERT_EQ(response.choices.size(), 1u);
  EXPECT_EQ(response.choices[0].text, decode(ids));
  EXPECT_EQ(response.completion_tokens, static_cast<int64_t>(ids.size()));
  EXPECT_EQ(response.prompt_tokens, static_cast<int64_t>(prompt.size()));
  EXPECT_EQ(response.raw["object"], "chat.completion");
  EXPECT_EQ(response.raw["model"], "tiny-llama");
  EXPECT_EQ(response.raw["choices"][0]["message"]["role"], "assistant");

  // Logprobs in the chat shape, as the server wrote them (the client re-sorts, so read the raw JSON).
  const json& content = response.raw["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), ids.size());
  std::vector<int64_t> context = prompt;
  for (size_t k = 0; k < ids.size(); ++k) {
    const json& position = content[k];
    const double chosen = position["logprob"].get<double>();
    ASSERT_TRUE(std::isfinite(chosen)) << k;
    at::Tensor expected = next_token_logprobs(context);
    EXPECT_NEAR(chosen, expected[ids[k]].item<double>(), 1e-4) << k;
    const json& top = position["top_logprobs"];
    ASSERT_EQ(top.size(), 5u);
    for (size_t j = 0; j < top.size(); ++j) {
      ASSERT_TRUE(std::isfinite(top[j]["logprob"].get<double>()));
      if (j > 0) EXPECT_GE(top[j - 1]["logprob"].get<double>(), top[j]["logprob"].get<double>()) << k;
    }
    EXPECT_NEAR(top[0]["logprob"].get<double>(), chosen, 1e-9) << "greedy picks the most likely token, step " << k;
    EXPECT_EQ(position["token"], fixture_tokenizer()->decode({static_cast<int32_t>(ids[k])}));
    EXPECT_EQ(position["bytes"].size(), position["token"].get<std::string>().size());
    context.push_back(ids[k]);
  }
  // Parsed by our client too.
  ASSERT_EQ(response.choices[0].logprobs.size(), ids.size());
  EXPECT_EQ(response.choices[0].logprobs[0].top.size(), 5u);
}

TEST_F(GeneratorServerTest, CompletionsFromTextAndIdsEqualTheEngineWithStopSeedAndN) {
  start();
  auto openai = client();
  io::SamplingParams greedy;
  greedy.max_tokens = 12;
  greedy.temperature = 0;
  greedy.logprobs = 3;
  const std::string prompt = "The capital of France is";
  io::CompletionResponse from_text = openai->complete("tiny-llama", prompt, greedy);
  const text::Encoding encoding = fixture_tokenizer()->encode_for_model(prompt);
  const std::vector<int64_t> prompt_ids(encoding.ids.begin(), encoding.ids.end());
  const std::vector<int64_t> ids = greedy_ids(prompt_ids, 12);
  EXPECT_EQ(from_text.choices.at(0).text, decode(ids));
  EXPECT_EQ(from_text.completion_tokens, static_cast<int64_t>(ids.size()));
  const json& logprobs = from_text.raw["choices"][0]["logprobs"];
  ASSERT_EQ(logprobs["token_logprobs"].size(), ids.size());
  for (size_t k = 0; k < ids.size(); ++k) {
    ASSERT_TRUE(std::isfinite(logprobs["token_logprobs"][k].get<double>()));
    double best = -1e300;
    for (const auto& [token, lp] : logprobs["top_logprobs"][k].items()) best = std::max(best, lp.get<double>());
    EXPECT_NEAR(best, logprobs["token_logprobs"][k].get<double>(), 1e-9) << k;
  }

  // Token ids as the prompt (what RemoteGuard sends): the same continuation.
  io::CompletionResponse from_ids = openai->complete("tiny-llama", encoding.ids, greedy);
  EXPECT_EQ(from_ids.choices.at(0).text, from_text.choices.at(0).text);

  // A stop string taken from the middle of the greedy text: the text ends right before it.
  const std::string full = decode(ids);
  ASSERT_GE(full.size(), 4u);
  const std::string stop = full.substr(full.size() / 2, 2);
  io::SamplingParams stopped = greedy;
  stopped.stop = {stop};
  io::CompletionResponse cut = openai->complete("tiny-llama", prompt, stopped);
  EXPECT_EQ(cut.choices.at(0).text, full.substr(0, full.find(stop)));
  EXPECT_EQ(cut.choices.at(0).finish_reason, "stop");
  // Generation ends at the first token whose text completes the stop string, not at max_tokens.
  size_t needed = 1;
  while (needed < ids.size() && decode(std::vector<int64_t>(ids.begin(), ids.begin() + static_cast<int64_t>(needed))).find(stop) == std::string::npos)
    ++needed;
  EXPECT_EQ(cut.completion_tokens, static_cast<int64_t>(needed));

  // Sampling: a seed reproduces, n gives n choices (each its own stream).
  io::SamplingParams sampled;
  sampled.max_tokens = 8;
  sampled.temperature = 1.0;
  sampled.seed = 7;
  sampled.n = 3;
  io::CompletionResponse first = openai->complete("tiny-llama", prompt, sampled);
  io::CompletionResponse again = openai->complete("tiny-llama", prompt, sampled);
  ASSERT_EQ(first.choices.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(first.choices[i].text, again.choices[i].text) << i;
  EXPECT_FALSE(first.choices[0].text == first.choices[1].text && first.choices[1].text == first.choices[2].text)
      << "three sampled choices of a random 128k-vocabulary model should not all agree";
}

// HarmAug's and BiasJailbreak's backend, pointed at guardkit itself: chat requests (no assistant prefix) give what the
// local backend gives on the same model.
TEST_F(GeneratorServerTest, OpenAIBackendChatEqualsTheLocalBackend) {
  start();
  augment::OpenAIBackendOptions options;
  options.base_url = url();
  options.max_retries = 0;
  options.timeout_s = 60;
  augment::OpenAIBackend remote(options);
  augment::LocalLlamaBackend local(test::fixture("llama"));
  std::vector<augment::ChatRequest> batch(2);
  batch[0].messages = {{"system", "You are a helpful assistant."}, {"user", "Write a story"}};
  batch[1].messages = {{"user", "Another one"}};
  for (auto& r : batch) {
    r.sampling.temperature = 0;
    r.sampling.max_tokens = 8;
  }
  auto got = remote.generate(batch);
  auto expected = local.generate(batch);
  ASSERT_EQ(got.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    ASSERT_FALSE(got[i].error) << *got[i].error;
    EXPECT_EQ(got[i].text, expected[i].text) << i;
    EXPECT_EQ(got[i].finish_reason, expected[i].finish_reason) << i;
    EXPECT_EQ(got[i].completion_tokens, expected[i].completion_tokens) << i;
    EXPECT_EQ(got[i].prompt_tokens, expected[i].prompt_tokens) << i;
  }
}

// RemoteGuard with guardkit as its Llama Guard server. The fixture model is random, so "safe"/"unsafe" are nowhere
// near its top 20; with the server's cap raised, the guard asks for the whole vocabulary and its P(unsafe) must be
// what its own rule gives on the model's full next-token distribution.
TEST_F(GeneratorServerTest, RemoteGuardScoresThroughTheServer) {
  ServerConfig config;
  config.max_top_logprobs = 128256;
  start(config);
  guard::RemoteGuardOptions options;
  options.model = "tiny-llama";
  options.client.base_url = url();
  options.client.max_retries = 0;
  options.client.timeout_s = 60;
  options.tokenizer_dir = test::fixture("llama");
  options.top_logprobs = 128256;
  options.when_down = guard::WhenServerDown::kThrow;  // a failure must show, not turn into a verdict
  guard::RemoteGuard remote(options);
  const guard::Conversation conversation = guard::Conversation::from_pair("How do I bake bread?", "Mix flour and water.");
  const guard::GuardResult result = remote.score({conversation}).at(0);

  text::RenderedPrompt prompt = text::render_guard_prompt(
      {{"user", "How do I bake bread?"}, {"assistant", "Mix flour and water."}}, options.prompt);
  prompt.add_template("\n\n");
  const std::vector<int32_t> ids32 = text::encode_prompt(*fixture_tokenizer(), prompt);
  at::Tensor logprobs = next_token_logprobs(std::vector<int64_t>(ids32.begin(), ids32.end()));
  std::vector<io::TopLogprob> everything;
  const double* lp = logprobs.contiguous().data_ptr<double>();
  for (int64_t id = 0; id < logprobs.size(0); ++id)
    everything.push_back({fixture_tokenizer()->decode({static_cast<int32_t>(id)}), lp[id]});
  const double expected = guard::p_unsafe_from_top_logprobs(everything);
  EXPECT_NEAR(result.p_unsafe, expected, 1e-5);
  EXPECT_EQ(result.unsafe, result.p_unsafe >= 0.5);
  EXPECT_EQ(result.decided_by, options.name);
}

// Streamed (stream: true): the deltas, joined, are the unstreamed text; a stop string never reaches the client.
TEST_F(GeneratorServerTest, StreamedChatAndCompletionsJoinToTheUnstreamedText) {
  start();
  const json messages = json::array({{{"role", "user"}, {"content", "Tell me a story about a dragon."}}});
  auto joined = [&](const std::string& path, json body, std::string* finish, int* chunks) {
    body["stream"] = true;
    auto res = post(path, body);
    EXPECT_TRUE(res);
    if (!res) return std::string();
    EXPECT_EQ(res->status, 200) << res->body;
    EXPECT_NE(res->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
    EXPECT_NE(res->body.find("data: [DONE]"), std::string::npos);
    std::string text;
    size_t at = 0;
    for (size_t end; (end = res->body.find("\n\n", at)) != std::string::npos; at = end + 2) {
      const std::string data = res->body.substr(at + 6, end - at - 6);  // after "data: "
      if (data == "[DONE]") break;
      const json chunk = json::parse(data);
      const json& choice = chunk["choices"][0];
      const std::string piece = path == "/v1/chat/completions" ? choice["delta"].value("content", "") : choice["text"].get<std::string>();
      text += piece;
      *chunks += !piece.empty();
      if (choice["finish_reason"].is_string()) *finish = choice["finish_reason"];
    }
    return text;
  };
  json chat_body = {{"messages", messages}, {"max_tokens", 12}, {"temperature", 0}};
  auto whole = post("/v1/chat/completions", chat_body);
  ASSERT_TRUE(whole);
  const json unstreamed = json::parse(whole->body)["choices"][0];
  std::string finish;
  int chunks = 0;
  const std::string streamed = joined("/v1/chat/completions", chat_body, &finish, &chunks);
  EXPECT_EQ(streamed, unstreamed["message"]["content"].get<std::string>());
  EXPECT_EQ(finish, unstreamed["finish_reason"]);
  EXPECT_GE(chunks, 2) << "released as generated, not in one piece";

  // A stop string from the middle: the streamed text ends before it, and it is not in any chunk.
  const std::string full = unstreamed["message"]["content"];
  ASSERT_GE(full.size(), 4u);
  const std::string stop = full.substr(full.size() / 2, 3);
  json stopped = chat_body;
  stopped["stop"] = stop;
  finish.clear();
  chunks = 0;
  EXPECT_EQ(joined("/v1/chat/completions", stopped, &finish, &chunks), full.substr(0, full.find(stop)));
  EXPECT_EQ(finish, "stop");

  json completion_body = {{"prompt", "The capital of France is"}, {"max_tokens", 8}, {"temperature", 0}};
  auto plain = post("/v1/completions", completion_body);
  ASSERT_TRUE(plain);
  chunks = 0;
  EXPECT_EQ(joined("/v1/completions", completion_body, &finish, &chunks),
            json::parse(plain->body)["choices"][0]["text"].get<std::string>());
  expect_error("/v1/chat/completions", {{"messages", messages}, {"stream", true}, {"n", 2}}, 400, "unsupported");
  expect_error("/v1/chat/completions", {{"messages", messages}, {"stream", true}, {"logprobs", true}}, 400,
               "unsupported");
}

TEST_F(GeneratorServerTest, BadRequestsGet4xxJsonErrors) {
  start();
  const json messages = json::array({{{"role", "user"}, {"content", "hi"}}});
  const std::string chat = "/v1/chat/completions", complete = "/v1/completions";
  expect_error(chat, json{{"model", "tiny-llama"}}, 400, "missing_input");
  expect_error(chat, json{{"messages", "hi"}}, 400, "invalid_type");
  expect_error(chat, json{{"messages", json::array()}}, 400, "empty_input");
  expect_error(chat, json{{"messages", json::array({{{"role", "wizard"}, {"content", "hi"}}})}}, 400, "invalid_role");
  expect_error(chat, json{{"messages", json::array({{{"role", "user"}, {"content", 5}}})}}, 400, "invalid_type");
  expect_error(chat, json{{"messages", json::array({{{"role", "user"}, {"content", json::array({{{"type", "image_url"}}})}}})}},
               400, "unsupported_content");
  expect_error(chat, json{{"messages", messages}, {"model", "gpt-4o"}}, 404, "model_not_found");
  expect_error(chat, json{{"messages", messages}, {"top_logprobs", 3}}, 400, "invalid_request");
  expect_error(chat, json{{"messages", messages}, {"logprobs", true}, {"top_logprobs", 21}}, 400, "invalid_value");
  expect_error(chat, json{{"messages", messages}, {"logprobs", 3}}, 400, "invalid_type");
  expect_error(chat, json{{"messages", messages}, {"max_tokens", 13}}, 400, "invalid_value");
  expect_error(chat, json{{"messages", messages}, {"temperature", 2.5}}, 400, "invalid_value");
  expect_error(chat, json{{"messages", messages}, {"temperature", "hot"}}, 400, "invalid_type");
  expect_error(chat, json{{"messages", messages}, {"top_p", 0}}, 400, "invalid_value");
  expect_error(chat, json{{"messages", messages}, {"n", 0}}, 400, "invalid_value");
  expect_error(chat, json{{"messages", messages}, {"stop", json::array({"a", "b", "c", "d", "e"})}}, 400, "invalid_value");
  expect_error(chat, json{{"messages", messages}, {"stop", 3}}, 400, "invalid_type");
  expect_error(chat, json{{"messages", messages}, {"seed", 1.5}}, 400, "invalid_type");
  expect_error(complete, json{{"prompt", json::array({1, 2, 999999})}}, 400, "invalid_value");
  expect_error(complete, json{{"prompt", json::array({"a", "b"})}}, 400, "unsupported");
  expect_error(complete, json{{"prompt", json::array()}}, 400, "empty_input");
  expect_error(complete, json{{"prompt", "hi"}, {"logprobs", true}}, 400, "invalid_type");
  expect_error(complete, json{{"prompt", "hi"}, {"echo", true}}, 400, "unsupported");
  // Still serving.
  auto ok = post(chat, json{{"messages", messages}, {"max_tokens", 2}, {"temperature", 0}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
}

}  // namespace
}  // namespace guardkit::serve
