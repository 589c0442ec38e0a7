// OpenAIClient against real httplib servers on 127.0.0.1: good answers (completions and chat, logprobs, auth, URL
// prefix), a stalling server, 500s then success, 429 with Retry-After, garbage bodies, a refused port, the shared
// concurrency limit and connection reuse; a fleet of endpoints (spreading, per-endpoint limits, ejection and return).
// Short timeouts and bounded retries keep the file to a few seconds.
#include <gtest/gtest.h>
#include <httplib.h>

#include "loopback_server.h"

#include <atomic>
#include <set>
#include <thread>

#include "io/openai_client.h"

using namespace guardkit;
using nlohmann::json;

namespace {

using guardkit::test::LoopbackServer;

io::OpenAIClientOptions fast_options(const std::string& url) {
  io::OpenAIClientOptions options;
  options.base_url = url;
  options.timeout_s = 0.3;
  options.max_retries = 2;
  options.backoff_initial_s = 0.01;
  options.backoff_max_s = 0.05;
  options.jitter_seed = 7;
  return options;
}

// A minimal completions endpoint: echoes the prompt, and gives top logprobs for "safe"/"unsafe" when asked.
void serve_completions(httplib::Server& server, const std::string& path, std::atomic<int>* requests = nullptr) {
  server.Post(path, [requests](const httplib::Request& req, httplib::Response& res) {
    if (requests) ++*requests;
    const json body = json::parse(req.body);
    if (req.get_header_value("Authorization") != "Bearer secret") {
      res.status = 401;
      res.set_content(R"({"error":"bad key"})", "application/json");
      return;
    }
    const std::string prompt = body["prompt"].is_string() ? body["prompt"].get<std::string>() : body["prompt"].dump();
    json choices = json::array();
    for (int i = body.value("n", 1) - 1; i >= 0; --i) {  // out of order on purpose: the client sorts by index
      json choice = {{"index", i}, {"text", "echo" + std::to_string(i) + ":" + prompt}, {"finish_reason", "length"}};
      if (body.contains("logprobs")) {
        json top = {{"safe", -0.1}, {"unsafe", -2.4}, {"\n\n", -5.0}};
        while (static_cast<int>(top.size()) > body["logprobs"].get<int>()) top.erase("\n\n");
        choice["logprobs"] = {{"tokens", {"safe"}}, {"token_logprobs", {-0.1}}, {"top_logprobs", {top}}};
      }
      choices.push_back(choice);
    }
    json answer = {{"choices", choices},
                   {"usage", {{"prompt_tokens", 5}, {"completion_tokens", body["max_tokens"]}}},
                   {"seen", body}};
    res.set_content(answer.dump(), "application/json");
  });
}

}  // namespace

TEST(OpenAIClient, CompletionsWithLogprobsAuthAndPrefix) {
  LoopbackServer server;
  serve_completions(server.server, "/prefix/v1/completions");
  auto options = fast_options(server.url("/prefix"));
  options.api_key = "secret";
  io::OpenAIClient client(options);
  io::SamplingParams params;
  params.max_tokens = 1;
  params.temperature = 0;
  params.n = 2;
  params.seed = 42;
  params.stop = {"\n"};
  params.logprobs = 2;
  auto response = client.complete("guard", "Is this safe?", params);
  ASSERT_EQ(response.choices.size(), 2u);
  EXPECT_EQ(response.choices[0].index, 0);
  EXPECT_EQ(response.choices[0].text, "echo0:Is this safe?");
  EXPECT_EQ(response.choices[1].text, "echo1:Is this safe?");
  EXPECT_EQ(response.choices[0].finish_reason, "length");
  ASSERT_EQ(response.choices[0].logprobs.size(), 1u);
  const auto& position = response.choices[0].logprobs[0];
  EXPECT_EQ(position.token, "safe");
  ASSERT_EQ(position.top.size(), 2u);
  EXPECT_EQ(position.top[0].token, "safe");  // most likely first
  EXPECT_EQ(position.top[1].token, "unsafe");
  EXPECT_DOUBLE_EQ(position.top[1].logprob, -2.4);
  EXPECT_EQ(response.prompt_tokens, 5);
  EXPECT_EQ(response.completion_tokens, 1);
  // The request carried every sampling parameter.
  const json& seen = response.raw["seen"];
  EXPECT_EQ(seen["model"], "guard");
  EXPECT_EQ(seen["temperature"], 0.0);
  EXPECT_EQ(seen["top_p"], 1.0);
  EXPECT_EQ(seen["seed"], 42);
  EXPECT_EQ(seen["stop"], json({"\n"}));
  EXPECT_EQ(seen["logprobs"], 2);

  // Token-id prompts go as a JSON list; a base URL ending in /v1 is not doubled.
  auto v1_options = fast_options(server.url("/prefix/v1/"));
  v1_options.api_key = "secret";
  io::OpenAIClient v1_client(v1_options);
  auto by_ids = v1_client.complete("guard", std::vector<int32_t>{128000, 271}, {});
  EXPECT_EQ(by_ids.raw["seen"]["prompt"], json({128000, 271}));

  // A wrong key is a 4xx: reported at once, not retried.
  auto bad_key = fast_options(server.url("/prefix"));
  bad_key.api_key = "wrong";
  io::OpenAIClient unauthorised(bad_key);
  try {
    unauthorised.complete("guard", "x");
    FAIL();
  } catch (const io::RemoteError& e) {
    EXPECT_EQ(e.kind, io::RemoteError::Kind::kHttpStatus);
    EXPECT_EQ(e.status, 401);
    EXPECT_NE(std::string(e.what()).find("/prefix/v1/completions"), std::string::npos) << e.what();
  }
  EXPECT_EQ(unauthorised.attempts_made(), 1);
}

TEST(OpenAIClient, ChatCompletionsWithLogprobs) {
  LoopbackServer server;
  server.server.Post("/v1/chat/completions", [](const httplib::Request& req, httplib::Response& res) {
    const json body = json::parse(req.body);
    std::string joined;
    for (const json& m : body["messages"]) joined += m["role"].get<std::string>() + "=" + m["content"].get<std::string>() + ";";
    json choice = {{"index", 0}, {"message", {{"role", "assistant"}, {"content", joined}}}, {"finish_reason", "stop"}};
    if (body.value("logprobs", false))
      choice["logprobs"] = {{"content",
                             {{{"token", "unsafe"},
                               {"logprob", -0.2},
                               {"top_logprobs", {{{"token", "safe"}, {"logprob", -1.8}}, {{"token", "unsafe"}, {"logprob", -0.2}}}}}}}};
    res.set_content(json({{"choices", {choice}}, {"top_k_asked", body.value("top_logprobs", 0)}}).dump(),
                    "application/json");
  });
  io::OpenAIClient client(fast_options(server.url()));
  io::SamplingParams params;
  params.logprobs = 2;
  auto response = client.chat("m", {{"system", "s"}, {"user", "hi"}}, params);
  ASSERT_EQ(response.choices.size(), 1u);
  EXPECT_EQ(response.choices[0].text, "system=s;user=hi;");
  EXPECT_EQ(response.raw["top_k_asked"], 2);
  ASSERT_EQ(response.choices[0].logprobs.size(), 1u);
  EXPECT_EQ(response.choices[0].logprobs[0].top[0].token, "unsafe");
  EXPECT_DOUBLE_EQ(response.choices[0].logprobs[0].top[1].logprob, -1.8);
}

TEST(OpenAIClient, RetriesFiveHundredsThenSucceeds) {
  LoopbackServer server;
  std::atomic<int> requests{0};
  server.server.Post("/v1/completions", [&](const httplib::Request&, httplib::Response& res) {
    if (++requests <= 2) {
      res.status = 503;
      res.set_content("overloaded", "text/plain");
      return;
    }
    res.set_content(R"({"choices":[{"index":0,"text":"ok"}]})", "application/json");
  });
  io::OpenAIClient client(fast_options(server.url()));
  EXPECT_EQ(client.complete("m", "p").choices[0].text, "ok");
  EXPECT_EQ(requests.load(), 3);
  EXPECT_EQ(client.attempts_made(), 3);

  // Persistent 500s exhaust the retries: 1 + max_retries attempts, then an HTTP-status error.
  LoopbackServer broken;
  std::atomic<int> broken_requests{0};
  broken.server.Post("/v1/completions", [&](const httplib::Request&, httplib::Response& res) {
    ++broken_requests;
    res.status = 500;
    res.set_content("boom", "text/plain");
  });
  io::OpenAIClient broken_client(fast_options(broken.url()));
  try {
    broken_client.complete("m", "p");
    FAIL();
  } catch (const io::RemoteError& e) {
    EXPECT_EQ(e.kind, io::RemoteError::Kind::kHttpStatus);
    EXPECT_EQ(e.status, 500);
    EXPECT_NE(std::string(e.what()).find("after 3 attempts"), std::string::npos) << e.what();
  }
  EXPECT_EQ(broken_requests.load(), 3);
}

TEST(OpenAIClient, HonoursRetryAfterOn429) {
  LoopbackServer server;
  std::atomic<int> requests{0};
  std::chrono::steady_clock::time_point first, second;
  server.server.Post("/v1/completions", [&](const httplib::Request&, httplib::Response& res) {
    if (++requests == 1) {
      first = std::chrono::steady_clock::now();
      res.status = 429;
      res.set_header("Retry-After", "0.4");
      return;
    }
    second = std::chrono::steady_clock::now();
    res.set_content(R"({"choices":[{"text":"ok"}]})", "application/json");
  });
  auto options = fast_options(server.url());
  io::OpenAIClient client(options);
  EXPECT_EQ(client.complete("m", "p").choices[0].text, "ok");
  EXPECT_EQ(requests.load(), 2);
  // The client waited at least what the server asked (a lower bound, not a timing measurement: backoff alone
  // would wait at most 0.05 s here).
  EXPECT_GE(std::chrono::duration<double>(second - first).count(), 0.39);
}

TEST(OpenAIClient, StallingServerTimesOut) {
  LoopbackServer server;
  std::atomic<int> requests{0};
  server.server.Post("/v1/completions", [&](const httplib::Request&, httplib::Response& res) {
    ++requests;
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    res.set_content(R"({"choices":[{"text":"late"}]})", "application/json");
  });
  auto options = fast_options(server.url());
  options.max_retries = 1;
  io::OpenAIClient client(options);
  try {
    client.complete("m", "p");
    FAIL();
  } catch (const io::RemoteError& e) {
    EXPECT_EQ(e.kind, io::RemoteError::Kind::kTimeout) << e.what();
    EXPECT_EQ(e.status, 0);
  }
  EXPECT_EQ(requests.load(), 2);
}

TEST(OpenAIClient, GarbageAndWrongShapesAreBadResponses) {
  LoopbackServer server;
  server.server.Post("/v1/completions", [](const httplib::Request& req, httplib::Response& res) {
    const std::string prompt = json::parse(req.body)["prompt"];
    if (prompt == "html") res.set_content("<html>\nnot json</html>", "text/html");
    else if (prompt == "nochoices") res.set_content(R"({"object":"text_completion"})", "application/json");
    else if (prompt == "notext") res.set_content(R"({"choices":[{"index":0}]})", "application/json");
    else if (prompt == "badlogprobs") res.set_content(R"({"choices":[{"text":"x","logprobs":{"tokens":[1]}}]})", "application/json");
    else res.set_content(R"([1,2,3])", "application/json");
  });
  io::OpenAIClient client(fast_options(server.url()));
  for (const char* prompt : {"html", "nochoices", "notext", "badlogprobs", "array"}) {
    try {
      client.complete("m", prompt);
      ADD_FAILURE() << prompt;
    } catch (const io::RemoteError& e) {
      EXPECT_EQ(e.kind, io::RemoteError::Kind::kBadResponse) << prompt << ": " << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("/v1/completions"), std::string::npos) << e.what();
    }
  }
  // Bad responses are not retried: one attempt each.
  EXPECT_EQ(client.attempts_made(), 5);
}

TEST(OpenAIClient, RefusedPortIsUnreachable) {
  int port = 0;
  {
    LoopbackServer closed;
    port = closed.port();
  }  // stopped: nothing listens there now
  io::OpenAIClient client(fast_options("http://127.0.0.1:" + std::to_string(port)));
  try {
    client.complete("m", "p");
    FAIL();
  } catch (const io::RemoteError& e) {
    EXPECT_EQ(e.kind, io::RemoteError::Kind::kUnreachable) << e.what();
    EXPECT_NE(std::string(e.what()).find(std::to_string(port)), std::string::npos) << e.what();
  }
  EXPECT_EQ(client.attempts_made(), 3);
}

TEST(OpenAIClient, BadBaseUrls) {
  for (const char* url : {"127.0.0.1:8000", "ftp://host", "http://", "http://host:99999", "http://host:x1"})
    EXPECT_THROW(io::OpenAIClient(fast_options(url)), Error) << url;
}

TEST(OpenAIClient, ConcurrencyLimitAndConnectionReuse) {
  LoopbackServer server;
  std::atomic<int> in_flight{0}, max_in_flight{0};
  std::mutex ports_mutex;
  std::set<int> client_ports;
  server.server.set_keep_alive_max_count(100);  // httplib's server closes a connection after 5 requests by default
  server.server.Post("/v1/completions", [&](const httplib::Request& req, httplib::Response& res) {
    const int now = ++in_flight;
    int seen = max_in_flight.load();
    while (now > seen && !max_in_flight.compare_exchange_weak(seen, now)) {}
    {
      std::lock_guard lock(ports_mutex);
      client_ports.insert(req.remote_port);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    --in_flight;
    res.set_content(R"({"choices":[{"text":"ok"}]})", "application/json");
  });
  auto options = fast_options(server.url());
  options.max_concurrency = 2;
  options.timeout_s = 2.0;
  io::OpenAIClient client(options);
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 6; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 4; ++i) ok += client.complete("m", "p").choices[0].text == "ok";
    });
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(ok.load(), 24);
  EXPECT_LE(max_in_flight.load(), 2);
  // 24 requests over at most 2 pooled keep-alive connections: 2 client ports (one spare for a racing reconnect).
  EXPECT_LE(client_ports.size(), 3u);
}

// A fleet of three endpoints: requests go to the least loaded one, never more than its own limit at once; the
// slow endpoint gets fewer of them.
TEST(OpenAIClient, FleetSpreadsByLeastOutstandingWithinEachEndpointsLimit) {
  struct Endpoint {
    LoopbackServer server;
    std::atomic<int> in_flight{0}, max_in_flight{0}, served{0};
  };
  std::vector<std::unique_ptr<Endpoint>> endpoints;
  std::string urls;
  for (int i = 0; i < 3; ++i) {
    endpoints.push_back(std::make_unique<Endpoint>());
    Endpoint* e = endpoints.back().get();
    const int delay_ms = i == 0 ? 60 : 10;
    e->server.server.Post("/v1/completions", [e, delay_ms](const httplib::Request&, httplib::Response& res) {
      const int now = ++e->in_flight;
      int seen = e->max_in_flight.load();
      while (now > seen && !e->max_in_flight.compare_exchange_weak(seen, now)) {}
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      ++e->served;
      --e->in_flight;
      res.set_content(R"({"choices":[{"text":"ok"}]})", "application/json");
    });
    urls += (i ? "," : "") + e->server.url();
  }
  auto options = fast_options(urls);
  options.timeout_s = 2.0;
  options.max_concurrency = 6;
  options.max_concurrency_per_endpoint = 2;
  io::OpenAIClient client(options);
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 6; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 6; ++i) ok += client.complete("m", "p").choices[0].text == "ok";
    });
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(ok.load(), 36);
  for (const auto& e : endpoints) {
    EXPECT_LE(e->max_in_flight.load(), 2);
    EXPECT_GT(e->served.load(), 0);
  }
  EXPECT_LT(endpoints[0]->served.load(), endpoints[1]->served.load());
  EXPECT_LT(endpoints[0]->served.load(), endpoints[2]->served.load());
  const auto status = client.endpoints();
  ASSERT_EQ(status.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(status[i].url, endpoints[i]->server.url());
    EXPECT_EQ(status[i].requests, endpoints[i]->served.load());
    EXPECT_EQ(status[i].failures, 0);
  }
}

// An endpoint answering 500s is taken out after its first failure (its requests retried at once on the other, so
// every call succeeds), and brought back by a trial request once it answers again.
TEST(OpenAIClient, FleetEjectsAFailingEndpointAndBringsItBack) {
  LoopbackServer good, flaky;
  std::atomic<bool> broken{true};
  std::atomic<int> flaky_requests{0};
  serve_completions(good.server, "/v1/completions");
  flaky.server.Post("/v1/completions", [&](const httplib::Request& req, httplib::Response& res) {
    ++flaky_requests;
    if (broken) {
      res.status = 500;
      res.set_content(R"({"error":"down"})", "application/json");
      return;
    }
    res.set_content(R"({"choices":[{"text":"flaky ok"}]})", "application/json");
  });
  auto options = fast_options(flaky.url() + "," + good.url());
  options.api_key = "secret";
  options.eject_after_failures = 1;
  options.eject_s = 1.0;
  options.max_retries = 1;
  io::OpenAIClient client(options);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(client.complete("m", "p").choices[0].text, "echo0:p");
  EXPECT_EQ(flaky_requests.load(), 1) << "the failing endpoint should be out after its first failure";
  EXPECT_FALSE(client.endpoints()[0].healthy);
  EXPECT_EQ(client.endpoints()[0].ejections, 1);

  broken = false;
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  int from_flaky = 0;
  for (int i = 0; i < 8; ++i) from_flaky += client.complete("m", "p").choices[0].text == "flaky ok";
  EXPECT_GE(from_flaky, 3) << "the endpoint should be back in the rotation";
  EXPECT_TRUE(client.endpoints()[0].healthy);
  EXPECT_EQ(client.endpoints()[0].ejections, 1);
}
