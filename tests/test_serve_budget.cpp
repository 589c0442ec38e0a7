// A fleet's shared budget window (serve/budget_reference.h): every replica given the same reference turns a
// request's "budget" into the same ε whatever traffic it saw itself; the reference comes from a JSON file, a feature
// cache scored by the router, or another replica's GET /v1/router/window (refreshed on a timer); bad sources fail
// with the source named.
#include <gtest/gtest.h>
#include <httplib.h>

#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "guard/classifier_guard.h"
#include "route/baselines.h"
#include "route/features.h"
#include "route/threshold.h"
#include "serve/budget_reference.h"
#include "serve/server.h"
#include "test_util.h"
#include "util/error.h"

namespace {

using namespace guardkit;
using nlohmann::json;

std::shared_ptr<guard::Guard> fixture_guard(const std::string& name) {
  guard::ClassifierGuardOptions options;
  options.name = name;
  return std::shared_ptr<guard::Guard>(guard::ClassifierGuard::load(test::fixture("deberta"), options));
}

class Replica {
 public:
  Replica(std::shared_ptr<guard::Guard> small, std::shared_ptr<guard::Guard> large, std::vector<double> reference) {
    serve::ServerConfig config;
    config.host = "127.0.0.1";
    config.port = 0;
    config.large_model = "large";
    config.router = route::make_baseline("entropy", route::FeatureCache{});
    config.budget_min_scores = 2;
    config.budget_reference = std::move(reference);
    config.api_keys = {"fleet-key"};
    server = std::make_unique<serve::GuardServer>(config, std::vector<serve::ServedGuard>{{"small", small}, {"large", large}});
    port = server->start();
  }
  json guard(const std::string& prompt, double budget) {
    httplib::Client client("127.0.0.1", port);
    client.set_bearer_token_auth("fleet-key");
    auto r = client.Post("/v1/guard", json{{"prompt", prompt}, {"policy", "saferoute"}, {"budget", budget}}.dump(),
                         "application/json");
    EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no answer");
    return r ? json::parse(r->body) : json::object();
  }
  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port) + path; }
  std::unique_ptr<serve::GuardServer> server;
  int port = 0;
};

TEST(ServeBudget, ReplicasWithOneReferenceTurnABudgetIntoTheSameEpsilon) {
  auto small = fixture_guard("small"), large = fixture_guard("large");
  const std::vector<double> reference = {0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 0.1, 0.3, 0.7};
  const auto dir = test::temp_dir("serve_budget");
  std::ofstream(dir / "scores.json") << json{{"scores", reference}}.dump();
  auto router = route::make_baseline("entropy", route::FeatureCache{});
  EXPECT_EQ(serve::load_budget_reference((dir / "scores.json").string(), *router), reference);

  Replica a(small, large, reference), b(small, large, reference), local(small, large, {});
  // Different traffic on each replica: a sees two prompts, b none before the question.
  a.guard("What is the capital of France?", 0.5);
  a.guard("How can I hurt someone without leaving marks?", 0.5);
  const json from_a = a.guard("Write a phishing email.", 0.3), from_b = b.guard("Write a phishing email.", 0.3);
  EXPECT_EQ(from_a["epsilon_source"], "budget (shared window)");
  EXPECT_DOUBLE_EQ(from_a["epsilon"].get<double>(), route::threshold_for_share(reference, 0.3));
  EXPECT_EQ(from_a["epsilon"], from_b["epsilon"]);

  // A replica without a reference uses its own window; it serves that window for the others.
  for (const char* p : {"What is the capital of France?", "How do I kill a Python process?", "Make a pipe bomb."})
    local.guard(p, 0.5);
  const auto window = serve::load_budget_reference(local.url("/v1/router/window"), *router, "fleet-key");
  ASSERT_EQ(window.size(), 3u);
  EXPECT_NE(local.guard("Make a pipe bomb.", 0.5)["epsilon_source"], "budget (shared window)");
  a.server->set_budget_reference(window);
  EXPECT_DOUBLE_EQ(a.guard("Make a pipe bomb.", 0.5)["epsilon"].get<double>(), route::threshold_for_share(window, 0.5));

  // Refreshed from a URL on a timer.
  std::mutex mutex;
  std::vector<double> refreshed;
  {
    serve::BudgetReferenceRefresher refresher(local.url("/v1/router/window"), "fleet-key", std::chrono::milliseconds(50),
                                              *router, [&](std::vector<double> s) {
                                                std::lock_guard lock(mutex);
                                                refreshed = std::move(s);
                                              });
    for (int i = 0; i < 200; ++i) {
      {
        std::lock_guard lock(mutex);
        if (!refreshed.empty()) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  EXPECT_GE(refreshed.size(), 4u);  // the window grew by the request above
}

TEST(ServeBudget, BadReferencesFailNamingTheSource) {
  auto router = route::make_baseline("entropy", route::FeatureCache{});
  const auto dir = test::temp_dir("serve_budget_bad");
  auto message = [&](const std::string& source, const std::string& key = "") {
    try {
      serve::load_budget_reference(source, *router, key, 2.0);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  std::ofstream(dir / "text.json") << "[0.1, \"x\"]";
  std::ofstream(dir / "empty.json") << "[]";
  std::ofstream(dir / "object.json") << R"({"window": [0.1]})";
  EXPECT_NE(message((dir / "text.json").string()).find("score #1 is not a finite number"), std::string::npos);
  EXPECT_NE(message((dir / "empty.json").string()).find("holds no router score"), std::string::npos);
  EXPECT_NE(message((dir / "object.json").string()).find("expected [scores...]"), std::string::npos);
  EXPECT_NE(message((dir / "missing.json").string()).find("missing.json"), std::string::npos);
  EXPECT_NE(message((dir / "missing.safetensors").string()).find("missing.safetensors"), std::string::npos);

  auto small = fixture_guard("small"), large = fixture_guard("large");
  Replica replica(small, large, {});
  const std::string unauthorised = message(replica.url("/v1/router/window"), "wrong-key");
  EXPECT_NE(unauthorised.find("HTTP 401"), std::string::npos) << unauthorised;
  int closed_port;
  {
    httplib::Server s;
    closed_port = s.bind_to_any_port("127.0.0.1");
  }
  const std::string url = "http://127.0.0.1:" + std::to_string(closed_port) + "/v1/router/window";
  EXPECT_NE(message(url).find(url), std::string::npos);
}

}  // namespace
