// RemoteGuard against a real OpenAI-compatible completions endpoint on 127.0.0.1. The endpoint answers from the
// fixture's recorded logits (guard_cases.json: the tiny Llama's safe/unsafe logits and logsumexp at the scoring
// position) for exactly the token ids the fixture prescribes, so P(unsafe) must equal p_unsafe_2way and any wrong
// prompt id is a 400. Also: the missing-word rule, a server that is down, stalls, or returns 500s first.
#include <gtest/gtest.h>
#include <httplib.h>

#include "loopback_server.h"

#include <atomic>
#include <cmath>
#include <thread>

#include "guard/registry.h"
#include "guard/remote_guard.h"
#include "test_util.h"

using namespace guardkit;
using nlohmann::json;

namespace {

using guardkit::test::LoopbackServer;

const json& guard_cases() {
  static const json cases = test::load_json(test::fixture("llama/guard_cases.json"));
  return cases;
}

// Serves the fixture: the prompt must be a case's ids + [271]; the answer's top logprobs are log-softmax values of the
// recorded logits (safe 19193, unsafe 39257) plus one filler token.
void serve_fixture(httplib::Server& server, std::atomic<int>* failures_first = nullptr) {
  server.Post("/v1/completions", [failures_first](const httplib::Request& req, httplib::Response& res) {
    if (failures_first && (*failures_first)-- > 0) {
      res.status = 500;
      return;
    }
    const json body = json::parse(req.body);
    for (const json& c : guard_cases()["cases"]) {
      json expected = c["ids"];
      expected.push_back(271);
      if (body["prompt"] != expected) continue;
      const json& s = c["scoring"];
      const double lse = s["logsumexp"].get<double>();
      const double lp_safe = s["logit_safe_19193"].get<double>() - lse;
      const double lp_unsafe = s["logit_unsafe_39257"].get<double>() - lse;
      json top = {{"safe", lp_safe}, {"unsafe", lp_unsafe}, {"\n\n", std::min(lp_safe, lp_unsafe) - 1.0}};
      const std::string first = lp_safe >= lp_unsafe ? "safe" : "unsafe";
      json choice = {{"index", 0}, {"text", first}};
      if (body["max_tokens"] == 1)
        choice["logprobs"] = {{"tokens", {first}}, {"token_logprobs", {std::max(lp_safe, lp_unsafe)}},
                              {"top_logprobs", {top}}};
      else
        choice["text"] = first == "unsafe" ? "unsafe\nS9" : "safe";
      res.set_content(json({{"choices", {choice}}, {"usage", {{"prompt_tokens", expected.size()}}}}).dump(),
                      "application/json");
      return;
    }
    res.status = 400;
    res.set_content("prompt ids match no fixture case", "text/plain");
  });
}

guard::RemoteGuardOptions options_for(const std::string& url, const std::string& variant) {
  guard::RemoteGuardOptions options;
  options.model = "tiny-llama-guard";
  options.client.base_url = url;
  options.client.timeout_s = 0.5;
  options.client.max_retries = 2;
  options.client.backoff_initial_s = 0.01;
  options.client.backoff_max_s = 0.02;
  options.tokenizer_dir = test::fixture("llama");
  options.prompt.variant = text::parse_llama_guard_variant(variant);
  return options;
}

guard::Conversation conversation_of(const json& c) {
  guard::Conversation conversation;
  for (const json& m : c["messages"]) {
    const std::string content =
        m["content"].is_string() ? m["content"].get<std::string>() : m["content"][0]["text"].get<std::string>();
    conversation.messages.push_back({m["role"].get<std::string>(), content});
  }
  return conversation;
}

}  // namespace

TEST(RemoteGuard, EqualsFixtureTwoWayScoreForEveryCase) {
  LoopbackServer server;
  serve_fixture(server.server);
  for (const std::string variant : {"8B", "1B"}) {
    guard::RemoteGuard guard(options_for(server.url(), variant));
    std::vector<guard::Conversation> batch;
    std::vector<double> expected;
    for (const json& c : guard_cases()["cases"]) {
      if (c["variant"] != variant) continue;
      batch.push_back(conversation_of(c));
      expected.push_back(c["scoring"]["p_unsafe_2way"].get<double>());
    }
    ASSERT_EQ(batch.size(), 8u);
    const auto results = guard.score(batch);
    for (size_t i = 0; i < batch.size(); ++i) {
      EXPECT_NEAR(results[i].p_unsafe, expected[i], 1e-9) << variant << " case " << i;
      EXPECT_EQ(results[i].unsafe, results[i].p_unsafe >= 0.5);
      EXPECT_EQ(results[i].decided_by, "remote-llama-guard");
      EXPECT_GT(results[i].tokens, 100);
    }
  }
}

TEST(RemoteGuard, CategoriesWhenUnsafe) {
  LoopbackServer server;
  serve_fixture(server.server);
  auto options = options_for(server.url(), "8B");
  options.threshold = 0.0;  // everything is unsafe: the categories generation runs for each item
  guard::RemoteGuard guard(options);
  guard::ScoreOptions score_options;
  score_options.want_categories = true;
  const auto results = guard.score({conversation_of(guard_cases()["cases"][0])}, score_options);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_TRUE(results[0].unsafe);
  // The fixture server's greedy answer decides: "unsafe\nS9" gives S9, "safe" gives none.
  const auto& s = guard_cases()["cases"][0]["scoring"];
  const bool greedy_unsafe = s["logit_unsafe_39257"].get<double>() > s["logit_safe_19193"].get<double>();
  EXPECT_EQ(results[0].categories, greedy_unsafe ? std::vector<std::string>{"S9"} : std::vector<std::string>{});
}

TEST(RemoteGuard, MissingWordUsesTheUpperBound) {
  using io::TopLogprob;
  // Both present: renormalised.
  EXPECT_NEAR(guard::p_unsafe_from_top_logprobs({{"safe", std::log(0.6)}, {"unsafe", std::log(0.2)}}), 0.25, 1e-12);
  // "unsafe" missing: bounded by min(smallest listed 0.05, leftover 1 - 0.95 = 0.05).
  EXPECT_NEAR(guard::p_unsafe_from_top_logprobs({{"safe", std::log(0.9)}, {"\n\n", std::log(0.05)}}), 0.05 / 0.95,
              1e-12);
  // The leftover mass is the tighter bound here: 1 - (0.5 + 0.45) = 0.05 < 0.45.
  EXPECT_NEAR(guard::p_unsafe_from_top_logprobs({{" Safe", std::log(0.5)}, {"x", std::log(0.45)}}), 0.05 / 0.55,
              1e-12);
  // "safe" missing: P(unsafe) stays high.
  EXPECT_NEAR(guard::p_unsafe_from_top_logprobs({{"unsafe", std::log(0.97)}, {"y", std::log(0.01)}}), 0.97 / 0.98,
              1e-12);
  EXPECT_THROW(guard::p_unsafe_from_top_logprobs({{"maybe", -0.1}}), Error);
}

TEST(RemoteGuard, ServerDownFollowsThePolicy) {
  int port = 0;
  {
    LoopbackServer closed;
    port = closed.port();
  }
  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  const auto conversation = guard::Conversation::from_prompt("How do I make a bomb?");

  guard::RemoteGuard closed_guard(options_for(url, "8B"));  // fail closed by default
  auto result = closed_guard.score({conversation})[0];
  EXPECT_EQ(result.p_unsafe, 1.0);
  EXPECT_TRUE(result.unsafe);
  EXPECT_EQ(result.decided_by, "remote-llama-guard:fail_closed");

  auto open_options = options_for(url, "8B");
  open_options.when_down = guard::parse_when_server_down("fail_open");
  guard::RemoteGuard open_guard(open_options);
  result = open_guard.score({conversation})[0];
  EXPECT_EQ(result.p_unsafe, 0.0);
  EXPECT_FALSE(result.unsafe);
  EXPECT_EQ(result.decided_by, "remote-llama-guard:fail_open");

  auto throw_options = options_for(url, "8B");
  throw_options.when_down = guard::WhenServerDown::kThrow;
  guard::RemoteGuard throwing(throw_options);
  EXPECT_THROW(throwing.score({conversation}), io::RemoteError);
  EXPECT_THROW(guard::parse_when_server_down("sometimes"), Error);
}

TEST(RemoteGuard, RetriesFiveHundredsAndFailsClosedOnAStall) {
  LoopbackServer flaky;
  std::atomic<int> failures{2};
  serve_fixture(flaky.server, &failures);
  guard::RemoteGuard guard(options_for(flaky.url(), "8B"));
  const json& c = guard_cases()["cases"][0];
  auto result = guard.score({conversation_of(c)})[0];
  EXPECT_NEAR(result.p_unsafe, c["scoring"]["p_unsafe_2way"].get<double>(), 1e-9);
  EXPECT_EQ(result.decided_by, "remote-llama-guard");

  LoopbackServer stalling;
  stalling.server.Post("/v1/completions", [](const httplib::Request&, httplib::Response& res) {
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    res.set_content(R"({"choices":[{"text":"safe"}]})", "application/json");
  });
  auto options = options_for(stalling.url(), "8B");
  options.client.timeout_s = 0.2;
  options.client.max_retries = 0;
  guard::RemoteGuard stalled(options);
  result = stalled.score({guard::Conversation::from_prompt("hello")})[0];
  EXPECT_EQ(result.decided_by, "remote-llama-guard:fail_closed");
  EXPECT_TRUE(result.unsafe);
}

TEST(RemoteGuard, TextModeSendsTheRenderedPrompt) {
  LoopbackServer server;
  std::string seen_prompt;
  server.server.Post("/v1/completions", [&](const httplib::Request& req, httplib::Response& res) {
    seen_prompt = json::parse(req.body)["prompt"].get<std::string>();
    res.set_content(
        R"({"choices":[{"text":"safe","logprobs":{"tokens":["safe"],"token_logprobs":[-0.01],"top_logprobs":[{"safe":-0.01,"unsafe":-4.6}]}}]})",
        "application/json");
  });
  auto options = options_for(server.url(), "8B");
  options.tokenizer_dir.clear();
  guard::RemoteGuard guard(options);
  const json& c = guard_cases()["cases"][0];
  const auto result = guard.score({conversation_of(c)})[0];
  EXPECT_EQ(seen_prompt, c["rendered"].get<std::string>() + "\n\n");
  EXPECT_NEAR(result.p_unsafe, std::exp(-4.6) / (std::exp(-4.6) + std::exp(-0.01)), 1e-12);
  EXPECT_FALSE(result.unsafe);
}

TEST(RemoteGuard, BuiltFromTheModelsFile) {
  int port = 0;
  {
    LoopbackServer closed;
    port = closed.port();
  }
  const json entry = {{"name", "lg8b"},
                      {"kind", "remote"},
                      {"url", "http://127.0.0.1:" + std::to_string(port)},
                      {"options", {{"when_down", "fail_open"}, {"max_retries", 0}, {"timeout_s", 0.5}}}};
  const auto spec = guard::model_spec_from_json(entry, test::temp_dir("remote_spec"), "models.json: model 1");
  auto remote = guard::make_guard(spec);
  EXPECT_EQ(remote->name(), "lg8b");
  const auto result = remote->score({guard::Conversation::from_prompt("hi")})[0];
  EXPECT_EQ(result.decided_by, "lg8b:fail_open");
  EXPECT_FALSE(result.unsafe);

  json bad = entry;
  bad["options"]["when_down"] = "sometimes";
  EXPECT_THROW(guard::make_guard(guard::model_spec_from_json(bad, test::temp_dir("remote_spec"), "m")), Error);
  bad = entry;
  bad["options"]["no_such_option"] = 1;
  EXPECT_THROW(guard::make_guard(guard::model_spec_from_json(bad, test::temp_dir("remote_spec"), "m")), Error);
}
