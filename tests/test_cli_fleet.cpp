// A remote guard over a fleet: three real `guardkit serve` processes on loopback serve the fixture Llama at
// /v1/completions, and one RemoteGuard (io/openai_client.h with three base URLs) scores a batch through them. Mid-run
// one server is killed (SIGKILL) and one stalls (SIGSTOP: it accepts connections and never answers). The batch
// still finishes with every row scored exactly once, each score equal to the single-server run, the failing
// endpoints are taken out, and the guard server's /metrics shows it per endpoint.
#include <gtest/gtest.h>

#include <signal.h>

#include <future>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include <fmt/format.h>

#include "child_process.h"
#include "guard/remote_guard.h"
#include "serve/metrics.h"
#include "serve/server.h"
#include "test_util.h"

namespace {

using namespace guardkit;
using guardkit::test::ServeProcess;

guard::RemoteGuardOptions options_for(const std::string& urls) {
  guard::RemoteGuardOptions options;
  options.name = "fleet";
  options.model = "llama";  // a folder served by `guardkit serve --generator` is named after it
  options.client.base_url = urls;
  options.tokenizer_dir = test::fixture("llama");
  // The fixture Llama is random: "safe"/"unsafe" are only found in the whole next-token distribution.
  options.top_logprobs = 128256;
  options.when_down = guard::WhenServerDown::kThrow;  // a failure must show, not turn into a verdict
  return options;
}

TEST(CliFleet, OneKilledAndOneStalledServerStillScoreEveryRowOnceAsOneServerDoes) {
  std::vector<std::unique_ptr<ServeProcess>> servers;
  std::vector<std::string> urls;
  for (int i = 0; i < 3; ++i)
    servers.push_back(std::make_unique<ServeProcess>(std::vector<std::string>{
        "--small", test::fixture("deberta").string(), "--generator", test::fixture("llama").string(), "--port", "0",
        "--max-logprobs", "128256", "--access-log", "off"}));
  for (auto& s : servers) {
    const int port = s->wait_for_port(std::chrono::seconds(90));
    ASSERT_GT(port, 0) << s->output();
    urls.push_back(fmt::format("http://127.0.0.1:{}", port));
  }
  std::vector<guard::Conversation> rows;
  for (int i = 0; i < 24; ++i)
    rows.push_back(guard::Conversation::from_pair(fmt::format("Question {}: how do I bake bread?", i),
                                                  fmt::format("Answer {}: mix flour and water.", i)));

  // The single-server run.
  guard::RemoteGuardOptions single = options_for(urls[0]);
  single.client.max_retries = 0;
  const std::vector<guard::GuardResult> expected = guard::RemoteGuard(single).score(rows);

  guard::RemoteGuardOptions fleet_options = options_for(fmt::format("{},{},{}", urls[0], urls[1], urls[2]));
  fleet_options.client.timeout_s = 10;  // a stalled endpoint costs this much per attempt (slack for a loaded CI machine)
  fleet_options.client.max_retries = 6;
  fleet_options.client.max_concurrency = 6;
  fleet_options.client.max_concurrency_per_endpoint = 2;
  fleet_options.client.eject_after_failures = 1;
  fleet_options.client.eject_s = 60;  // the dead stay out for the rest of the test
  fleet_options.client.backoff_initial_s = 0.05;
  auto fleet = std::make_shared<guard::RemoteGuard>(fleet_options);
  auto run = std::async(std::launch::async, [&] { return fleet->score(rows); });
  // Mid-run: once a few rows went out to each server, kill #1 and stall #2.
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
       std::chrono::steady_clock::now() < until;) {
    const auto endpoints = fleet->client().endpoints();
    if (endpoints[1].requests >= 2 && endpoints[2].requests >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ::kill(servers[1]->pid(), SIGKILL);
  ::kill(servers[2]->pid(), SIGSTOP);
  ASSERT_EQ(run.wait_for(std::chrono::seconds(120)), std::future_status::ready) << "the batch stalled";
  const std::vector<guard::GuardResult> got = run.get();
  ::kill(servers[2]->pid(), SIGCONT);

  ASSERT_EQ(got.size(), rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_NEAR(got[i].p_unsafe, expected[i].p_unsafe, 1e-9) << "row " << i;
    EXPECT_EQ(got[i].decided_by, "fleet") << "row " << i;  // scored, not a failure verdict
  }
  const auto endpoints = fleet->client().endpoints();
  EXPECT_TRUE(endpoints[0].healthy);
  EXPECT_EQ(endpoints[0].failures, 0);
  EXPECT_FALSE(endpoints[1].healthy);
  EXPECT_FALSE(endpoints[2].healthy);
  EXPECT_GE(endpoints[2].failures, 1) << "the stalled server's requests should have timed out";
  // Exactly one answer was received per row: every other attempt failed and was retried elsewhere.
  int64_t answered = 0;
  for (const auto& e : endpoints) answered += e.requests - e.failures;
  EXPECT_EQ(answered, static_cast<int64_t>(rows.size()));

  // /metrics of a guard server serving this guard shows each endpoint.
  serve::ServerConfig config;
  serve::GuardServer server(config, {{"fleet", fleet}});
  const std::string metrics = server.metrics().render();
  for (size_t i = 0; i < 3; ++i) {
    const std::regex line(fmt::format(R"(guardkit_upstream_endpoint_requests_total\{{guard="fleet",endpoint="{}"\}} (\d+))",
                                      urls[i]));
    std::smatch m;
    ASSERT_TRUE(std::regex_search(metrics, m, line)) << metrics;
    EXPECT_EQ(std::stoll(m[1].str()), endpoints[i].requests);
  }
  EXPECT_NE(metrics.find(fmt::format(R"(guardkit_upstream_endpoint_healthy{{guard="fleet",endpoint="{}"}} 0)", urls[2])),
            std::string::npos)
      << metrics;
  EXPECT_EQ(servers[0]->terminate(std::chrono::seconds(30)), 0);
}

}  // namespace
