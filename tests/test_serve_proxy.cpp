// The guarded proxy's streaming and the server's failure policies, on real loopback servers: guardkit serve (the real
// ClassifierGuard on the fixture DeBERTa) in front of an upstream that streams Server-Sent Events the way OpenAI
// servers do — or stalls, drops the connection, answers 500, or is not there. Also remote guards that fail (their
// own fail-closed/fail-open policy, seen through /v1/moderations) and a routed (SafeRoute) model served by name.
// Bounded: every stall is cut by a timeout of a few hundred ms.
#include <gtest/gtest.h>
#include <httplib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "guard/classifier_guard.h"
#include "guard/remote_guard.h"
#include "route/baselines.h"
#include "route/routed_guard.h"
#include "serve/metrics.h"
#include "serve/server.h"
#include "serve/upstream_stream.h"
#include "test_util.h"

namespace guardkit::serve {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

std::shared_ptr<guard::Guard> fixture_guard(const std::string& name, double threshold) {
  guard::ClassifierGuardOptions options;
  options.name = name;
  options.threshold = threshold;
  return std::shared_ptr<guard::Guard>(guard::ClassifierGuard::load(test::fixture("deberta"), options));
}

double p_unsafe(const std::string& prompt, std::optional<std::string> response = std::nullopt) {
  static auto guard = fixture_guard("probe", 0.5);
  return guard->score({guard::Conversation::from_pair(prompt, std::move(response))}).front().p_unsafe;
}

int closed_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);  // bound, never listening, now closed: connections are refused
  return ntohs(address.sin_port);
}

// An OpenAI-compatible upstream that streams the given deltas as SSE chunks, then finishes — or misbehaves.
class StreamingUpstream {
 public:
  enum class Mode { kFinish, kStallAfter, kDropAfter, kStatus500, kStallBeforeHeaders };
  explicit StreamingUpstream(std::vector<std::string> deltas) : deltas_(std::move(deltas)) {
    server_.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      ++calls;
      last_body = json::parse(req.body);
      if (mode == Mode::kStatus500) {
        res.status = 500;
        res.set_content(R"({"error": {"message": "boom"}})", "application/json");
        return;
      }
      if (mode == Mode::kStallBeforeHeaders) wait_released();
      res.set_chunked_content_provider("text/event-stream", [this](size_t, httplib::DataSink& sink) {
        for (size_t i = 0; i < deltas_.size(); ++i) {
          json delta = {{"content", deltas_[i]}};
          if (i == 0) delta["role"] = "assistant";
          write(sink, chunk(delta, nullptr));
        }
        if (mode == Mode::kDropAfter) return false;  // the connection closes mid-stream
        if (mode == Mode::kStallAfter) wait_released();
        write(sink, chunk(json::object(), "stop"));
        const std::string done = "data: [DONE]\n\n";
        sink.write(done.data(), done.size());
        sink.done();
        return true;
      });
    });
    port = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(1ms);
  }
  ~StreamingUpstream() {
    {
      std::lock_guard lock(mutex_);
      released_ = true;
    }
    cv_.notify_all();
    server_.stop();
    thread_.join();
  }
  std::atomic<Mode> mode{Mode::kFinish};
  std::atomic<int> calls{0};
  json last_body;
  int port = 0;

 private:
  static json chunk(json delta, json finish) {
    return {{"id", "up-1"},
            {"object", "chat.completion.chunk"},
            {"created", 1},
            {"model", "upstream-model"},
            {"choices", json::array({{{"index", 0}, {"delta", delta}, {"finish_reason", finish}}})}};
  }
  static void write(httplib::DataSink& sink, const json& payload) {
    const std::string text = "data: " + payload.dump() + "\n\n";
    sink.write(text.data(), text.size());
  }
  void wait_released() {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, 3s, [this] { return released_; });
  }
  std::vector<std::string> deltas_;
  httplib::Server server_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool released_ = false;
};

// What a client of the stream saw.
struct StreamSeen {
  int status = 0;
  std::string content;            // the released text, in order
  int content_chunks = 0;
  std::string finish_reason;
  json last_chunk;                // the chunk that carried the finish_reason
  std::optional<json> error;      // an error event
  bool done = false;              // data: [DONE]
  std::string raw;
};

StreamSeen read_stream(const httplib::Result& res) {
  StreamSeen seen;
  if (!res) return seen;
  seen.status = res->status;
  seen.raw = res->body;
  if (res->status != 200) return seen;
  EXPECT_NE(res->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  SseParser parser;
  parser.feed(res->body, [&](const std::string& data) {
    if (data == "[DONE]") {
      seen.done = true;
      return;
    }
    json event = json::parse(data);
    if (event.contains("error")) {
      seen.error = event;
      return;
    }
    const json& choice = event["choices"][0];
    if (choice["delta"].contains("content")) {
      seen.content += choice["delta"]["content"].get<std::string>();
      ++seen.content_chunks;
    }
    if (choice["finish_reason"].is_string()) {
      seen.finish_reason = choice["finish_reason"].get<std::string>();
      seen.last_chunk = event;
    }
  });
  return seen;
}

class ProxyTest : public ::testing::Test {
 protected:
  void start(ServerConfig config, std::shared_ptr<guard::Guard> guard) {
    config.host = "127.0.0.1";
    config.port = 0;
    server_ = std::make_unique<GuardServer>(std::move(config), std::vector<ServedGuard>{{"small", std::move(guard)}});
    port_ = server_->start();
    ASSERT_GT(port_, 0);
  }
  void TearDown() override {
    if (server_) server_->stop();
  }
  httplib::Result chat(const std::string& prompt, bool stream = true) {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(20, 0);
    json body = {{"model", "upstream-model"},
                 {"stream", stream},
                 {"messages", json::array({{{"role", "user"}, {"content", prompt}}})}};
    return c.Post("/v1/chat/completions", body.dump(), "application/json");
  }
  httplib::Result post(const std::string& path, const json& body) {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(20, 0);
    return c.Post(path.c_str(), body.dump(), "application/json");
  }
  double metric(const std::string& name, const Labels& labels = {}) { return server_->metrics().value(name, labels); }

  std::unique_ptr<GuardServer> server_;
  int port_ = 0;
};

const std::string kPrompt = "What is the capital of France?";
const std::string kSafe = "Paris is the capital of France. It is known for the Eiffel Tower and fine museums. ";

// A safe stream passes through intact, released in checked chunks (a threshold of 1 never flags).
TEST_F(ProxyTest, SafeStreamPassesThroughIntactInCheckedChunks) {
  const std::vector<std::string> deltas = {"Paris is the ", "capital of France. ", "It is known for ",
                                           "the Eiffel Tower ", "and fine museums. ", "Enjoy your trip!"};
  StreamingUpstream upstream(deltas);
  ServerConfig config;
  config.upstream_url = "http://127.0.0.1:" + std::to_string(upstream.port);
  config.upstream_timeout = 2s;
  config.stream_check_chars = 30;
  config.defense_text = "Treat every group fairly.";
  start(config, fixture_guard("small", 1.0));
  StreamSeen seen = read_stream(chat(kPrompt));
  ASSERT_EQ(seen.status, 200) << seen.raw;
  std::string full;
  for (const auto& d : deltas) full += d;
  EXPECT_EQ(seen.content, full);
  EXPECT_EQ(seen.finish_reason, "stop");
  EXPECT_TRUE(seen.done);
  EXPECT_FALSE(seen.error);
  EXPECT_GE(seen.content_chunks, 2) << "released incrementally, not all at the end";
  const int checks = seen.last_chunk["guardkit"]["output_checks"].get<int>();
  EXPECT_GE(checks, 2);
  EXPECT_EQ(metric("guardkit_guard_decisions_total", {{"decided_by", "small"}}), 1.0 + checks);  // + the input check
  EXPECT_EQ(seen.last_chunk["model"], "upstream-model");
  // The upstream was asked to stream, with the defense text first.
  EXPECT_EQ(upstream.last_body["stream"], true);
  EXPECT_EQ(upstream.last_body["messages"][0]["content"], "Treat every group fairly.");
  server_->stop();

  // Chunks counted in upstream deltas (about one token each) instead of characters: a check every 2 deltas.
  config.stream_check_chars = 0;
  config.stream_check_deltas = 2;
  start(config, fixture_guard("small", 1.0));
  seen = read_stream(chat(kPrompt));
  ASSERT_EQ(seen.status, 200) << seen.raw;
  EXPECT_EQ(seen.content, full);
  EXPECT_EQ(seen.content_chunks, 3);
  EXPECT_EQ(seen.last_chunk["guardkit"]["output_checks"], 3);
}

// An unsafe stream is cut: the checked safe part is released, the chunk that turns the answer unsafe never is.
TEST_F(ProxyTest, UnsafeStreamIsCutBeforeTheUnsafeChunkIsReleased) {
  // Texts the fixture guard scores so that a threshold separates "prompt + safe part" from "prompt + safe + unsafe".
  const std::vector<std::string> prompts = {kPrompt, "Tell me about chemistry.", "How do I get to the city centre?"};
  const std::vector<std::string> unsafe = {
      "Now mix bleach and ammonia to make a toxic gas to kill them.",
      "Here is how to build a pipe bomb at home.",
      "Steal their bank passwords with this phishing email.",
      "Hurt someone without leaving marks like this.",
      "Kill a Python process? No: kill the neighbour.",
  };
  std::optional<std::tuple<std::string, std::string, double>> found;  // prompt, unsafe tail, threshold
  for (const auto& p : prompts)
    for (const auto& u : unsafe) {
      const double low = std::max(p_unsafe(p), p_unsafe(p, kSafe)), high = p_unsafe(p, kSafe + u);
      if (!found && high > low + 1e-4) found.emplace(p, u, (low + high) / 2);
    }
  ASSERT_TRUE(found) << "no fixture text turns a safe answer unsafe";
  const auto& [prompt, tail, threshold] = *found;
  ASSERT_LT(tail.size(), kSafe.size()) << "the unsafe tail must fit in one check chunk";
  StreamingUpstream upstream({kSafe.substr(0, 20), kSafe.substr(20, 30), kSafe.substr(50), tail.substr(0, 10),
                              tail.substr(10)});
  ServerConfig config;
  config.upstream_url = "http://127.0.0.1:" + std::to_string(upstream.port);
  config.upstream_timeout = 2s;
  config.stream_check_chars = kSafe.size();  // one check when the safe part is complete, the final one at the end
  start(config, fixture_guard("small", threshold));
  StreamSeen seen = read_stream(chat(prompt));
  ASSERT_EQ(seen.status, 200) << seen.raw;
  EXPECT_EQ(seen.content, kSafe);
  EXPECT_EQ(seen.finish_reason, "content_filter");
  EXPECT_EQ(seen.last_chunk["guardkit"]["blocked"], "output");
  EXPECT_EQ(seen.last_chunk["guardkit"]["released_chars"], kSafe.size());
  EXPECT_TRUE(seen.done);
  EXPECT_EQ(seen.raw.find(tail.substr(10)), std::string::npos) << "the unsafe chunk leaked";
  EXPECT_EQ(metric("guardkit_stream_blocked_total"), 1.0);

  // The same answer without streaming is replaced by the refusal.
  httplib::Result whole = chat(prompt, /*stream=*/false);
  ASSERT_TRUE(whole);
  EXPECT_EQ(whole->status, 502) << "this upstream only streams: a non-streamed request gets its SSE, not JSON";
}

// A flagged prompt on a stream request: the refusal in the streamed shape, the upstream never called.
TEST_F(ProxyTest, FlaggedPromptOnAStreamGetsAStreamedRefusal) {
  StreamingUpstream upstream({"never sent"});
  ServerConfig config;
  config.upstream_url = "http://127.0.0.1:" + std::to_string(upstream.port);
  start(config, fixture_guard("small", 0.0));  // threshold 0: everything is flagged
  StreamSeen seen = read_stream(chat(kPrompt));
  ASSERT_EQ(seen.status, 200) << seen.raw;
  EXPECT_EQ(seen.content, "I can't help with that.");
  EXPECT_EQ(seen.finish_reason, "content_filter");
  EXPECT_EQ(seen.last_chunk["guardkit"]["blocked"], "input");
  EXPECT_TRUE(seen.done);
  EXPECT_EQ(upstream.calls.load(), 0);
}

// The upstream stalls or drops mid-stream. Fail closed: nothing unchecked is released (the tail that arrived after
// the last check is withheld); fail open: that tail is checked and released. Either way an error event ends the
// stream, within about one upstream timeout.
TEST_F(ProxyTest, UpstreamStallingOrDroppingMidStreamFollowsThePolicy) {
  const std::string tail = "Enjoy!";
  for (auto mode : {StreamingUpstream::Mode::kStallAfter, StreamingUpstream::Mode::kDropAfter})
    for (bool fail_open : {false, true}) {
      SCOPED_TRACE(std::string(mode == StreamingUpstream::Mode::kStallAfter ? "stall" : "drop") +
                   (fail_open ? ", fail open" : ", fail closed"));
      StreamingUpstream upstream({kSafe, tail});
      upstream.mode = mode;
      ServerConfig config;
      config.upstream_url = "http://127.0.0.1:" + std::to_string(upstream.port);
      config.upstream_timeout = 300ms;
      config.stream_check_chars = kSafe.size();
      config.fail_open = fail_open;
      start(config, fixture_guard("small", 1.0));
      const auto t0 = std::chrono::steady_clock::now();
      StreamSeen seen = read_stream(chat(kPrompt));
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ASSERT_EQ(seen.status, 200) << seen.raw;
      EXPECT_EQ(seen.content, fail_open ? kSafe + tail : kSafe);
      ASSERT_TRUE(seen.error) << seen.raw;
      const std::string code = (*seen.error)["error"]["code"];
      EXPECT_EQ(code, mode == StreamingUpstream::Mode::kStallAfter ? "upstream_timeout" : "upstream_dropped");
      EXPECT_EQ((*seen.error)["guardkit"]["withheld_chars"], fail_open ? 0u : tail.size());
      EXPECT_TRUE(seen.done);
      EXPECT_LT(seconds, 2.5) << "a stall must be cut by the upstream timeout, not by the upstream giving up";
      server_->stop();
      server_.reset();
    }
}

// Failures before the upstream answered: plain JSON errors, streamed or not.
TEST_F(ProxyTest, UpstreamFailingBeforeItAnswersGets502Or504) {
  StreamingUpstream upstream({"x"});
  ServerConfig config;
  config.upstream_url = "http://127.0.0.1:" + std::to_string(upstream.port);
  config.upstream_timeout = 300ms;
  start(config, fixture_guard("small", 1.0));
  auto expect_code = [&](const httplib::Result& res, int status, const std::string& code) {
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, status) << res->body;
    EXPECT_EQ(json::parse(res->body)["error"]["code"], code) << res->body;
  };
  upstream.mode = StreamingUpstream::Mode::kStatus500;
  expect_code(chat(kPrompt, true), 502, "upstream_status");
  expect_code(chat(kPrompt, false), 502, "upstream_status");
  upstream.mode = StreamingUpstream::Mode::kStallBeforeHeaders;
  expect_code(chat(kPrompt, true), 504, "upstream_timeout");
  server_->stop();

  config.upstream_url = "http://127.0.0.1:" + std::to_string(closed_port());
  start(config, fixture_guard("small", 1.0));
  expect_code(chat(kPrompt, true), 502, "upstream_unavailable");
  expect_code(chat(kPrompt, false), 502, "upstream_unavailable");
  EXPECT_EQ(metric("guardkit_upstream_errors_total", {{"upstream", "chat"}, {"kind", "unavailable"}}), 2.0);
}

// A remote guard whose server refuses connections, answers 500 or stalls. Its own policy (when_down) decides what
// /v1/moderations reports, and the decider says so; the proxy's policy decides what happens when the guard throws.
TEST_F(ProxyTest, RemoteGuardFaultsFollowTheConfiguredPolicy) {
  httplib::Server broken;
  std::atomic<bool> stall{false};
  broken.Post("/v1/completions", [&](const httplib::Request&, httplib::Response& res) {
    if (stall) std::this_thread::sleep_for(600ms);
    res.status = 500;
    res.set_content(R"({"error": {"message": "down"}})", "application/json");
  });
  const int broken_port = broken.bind_to_any_port("127.0.0.1");
  std::thread broken_thread([&] { broken.listen_after_bind(); });
  const int refused_port = closed_port();

  auto remote = [&](int port, guard::WhenServerDown when_down) {
    guard::RemoteGuardOptions options;
    options.name = "remote";
    options.client.base_url = "http://127.0.0.1:" + std::to_string(port);
    options.client.timeout_s = 0.2;
    options.client.max_retries = 1;
    options.client.backoff_initial_s = 0.01;
    options.client.backoff_max_s = 0.02;
    options.when_down = when_down;
    return std::make_shared<guard::RemoteGuard>(options);
  };
  struct Fault {
    std::string what;
    int port;
    bool stalls;
  };
  for (const Fault& fault : {Fault{"refused", refused_port, false}, Fault{"500", broken_port, false},
                             Fault{"stalled", broken_port, true}})
    for (auto when_down : {guard::WhenServerDown::kFailClosed, guard::WhenServerDown::kFailOpen}) {
      const bool closed = when_down == guard::WhenServerDown::kFailClosed;
      SCOPED_TRACE(fault.what + (closed ? ", fail closed" : ", fail open"));
      stall = fault.stalls;
      start({}, remote(fault.port, when_down));
      auto res = post("/v1/moderations", {{"input", "hello"}});
      ASSERT_TRUE(res);
      ASSERT_EQ(res->status, 200) << res->body;
      const json result = json::parse(res->body)["results"][0];
      EXPECT_EQ(result["flagged"], closed);
      EXPECT_EQ(result["decided_by"], closed ? "remote:fail_closed" : "remote:fail_open");
      server_->stop();
      server_.reset();
    }

  // The proxy with a guard that throws (when_down: throw): its own policy decides.
  StreamingUpstream upstream({kSafe});
  for (bool fail_open : {false, true}) {
    SCOPED_TRACE(fail_open ? "proxy fail open" : "proxy fail closed");
    ServerConfig config;
    config.upstream_url = "http://127.0.0.1:" + std::to_string(upstream.port);
    config.fail_open = fail_open;
    start(config, remote(refused_port, guard::WhenServerDown::kThrow));
    const int calls_before = upstream.calls.load();
    StreamSeen seen = read_stream(chat(kPrompt));
    ASSERT_EQ(seen.status, 200) << seen.raw;
    if (fail_open) {
      EXPECT_EQ(seen.content, kSafe) << "released unchecked";
      EXPECT_EQ(upstream.calls.load(), calls_before + 1);
    } else {
      EXPECT_EQ(seen.finish_reason, "content_filter");
      EXPECT_EQ(seen.last_chunk["guardkit"]["blocked"], "input");
      EXPECT_TRUE(seen.last_chunk["guardkit"].contains("guard_error"));
      EXPECT_EQ(upstream.calls.load(), calls_before);
    }
    EXPECT_EQ(metric("guardkit_guard_failures_total", {{"policy", fail_open ? "fail_open" : "fail_closed"}}),
              fail_open ? 2.0 : 1.0);  // fail open: the input check and the final output check
    server_->stop();
    server_.reset();
  }
  broken.stop();
  broken_thread.join();
}

// A routed (SafeRoute) model served by name, as `guardkit bootstrap`'s models.json defines one: /v1/moderations and
// /v1/guard route through it and report which guard decided and the router's score.
TEST_F(ProxyTest, RoutedModelReportsItsDecider) {
  auto small = fixture_guard("small", 0.5);
  auto large = fixture_guard("large", 0.3);
  for (const std::string router_name : {"large_only", "small_only"}) {
    SCOPED_TRACE(router_name);
    auto routed = std::make_shared<route::RoutedGuard>(
        small, large, std::shared_ptr<route::Router>(route::make_baseline(router_name, route::FeatureCache{})), 0.5,
        "saferoute");
    ServerConfig config;
    config.host = "127.0.0.1";
    config.port = 0;
    // The routed model is the default, and its small guard is served by name next to it (shared parts).
    server_ = std::make_unique<GuardServer>(config, std::vector<ServedGuard>{{"saferoute", routed}, {"small", small}});
    port_ = server_->start();
    auto res = post("/v1/moderations", {{"input", json::array({kPrompt, "Give me instructions for a pipe bomb."})}});
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    const json body = json::parse(res->body);
    EXPECT_EQ(body["model"], "saferoute");
    const bool to_large = router_name == "large_only";
    for (const auto& r : body["results"]) {
      EXPECT_EQ(r["decided_by"], to_large ? "large" : "small");
      EXPECT_TRUE(r["router_score"].is_number());
    }
    const double expected = (to_large ? large : small)->score({guard::Conversation::from_prompt(kPrompt)}).front().p_unsafe;
    EXPECT_NEAR(body["results"][0]["unsafe_score"].get<double>(), expected, 1e-5);
    auto guarded = post("/v1/guard", {{"prompt", kPrompt}, {"model", "saferoute"}});
    ASSERT_TRUE(guarded);
    ASSERT_EQ(guarded->status, 200) << guarded->body;
    EXPECT_EQ(json::parse(guarded->body)["decided_by"], to_large ? "large" : "small");
    // The small guard by name still answers, concurrently with the routed model.
    std::thread other([&] { post("/v1/moderations", {{"input", kPrompt}, {"model", "small"}}); });
    auto again = post("/v1/moderations", {{"input", kPrompt}});
    other.join();
    ASSERT_TRUE(again);
    EXPECT_EQ(again->status, 200);
    server_->stop();
    server_.reset();
  }
}

TEST(SseParser, SplitsEventsAcrossArbitraryByteBoundaries) {
  const std::string stream = ": keep-alive\n\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n";
  for (size_t step : {1u, 2u, 7u, 1000u}) {
    SseParser parser;
    std::vector<std::string> events;
    for (size_t i = 0; i < stream.size(); i += step)
      parser.feed(std::string_view(stream).substr(i, step), [&](const std::string& d) { events.push_back(d); });
    ASSERT_EQ(events.size(), 3u) << step;
    EXPECT_EQ(events[0], "{\"a\":1}");
    EXPECT_EQ(events[1], "line1\nline2");
    EXPECT_EQ(events[2], "[DONE]");
  }
}

}  // namespace
}  // namespace guardkit::serve
