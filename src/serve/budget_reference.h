// A fleet's shared budget window (ServerConfig::budget_reference). Replicas behind one load balancer each see a
// slice of the traffic; turning a request's "budget" into ε over each replica's own recent scores makes replicas
// disagree (and a fresh replica has no window at all). Every replica pointed at one reference routes the same share:
//   - a feature cache (`guardkit route features` over a calibration set, .safetensors): scored by the router once;
//   - a JSON file of router scores: [0.1, 0.7, ...] or {"scores": [...]};
//   - an http(s):// URL answering that JSON (another replica's GET /v1/router/window, or a file server),
//     fetched at start and refreshed on a timer; a failed refresh keeps the last window and is logged.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace guardkit::route {
class Router;
}

namespace guardkit::serve {

bool is_url(const std::string& source);

// Router scores from a source as above. Throws guardkit::Error with the source named when it cannot be read or holds
// no score, a score that is not a finite number, or (a cache) features the router cannot take.
std::vector<double> load_budget_reference(const std::string& source, route::Router& router,
                                          const std::string& api_key = "", double timeout_s = 10.0);

// Refetches a URL source every `period` on its own thread and hands each window to `apply`; stops on destruction.
class BudgetReferenceRefresher {
 public:
  BudgetReferenceRefresher(std::string url, std::string api_key, std::chrono::milliseconds period,
                           route::Router& router, std::function<void(std::vector<double>)> apply);
  ~BudgetReferenceRefresher();
  BudgetReferenceRefresher(const BudgetReferenceRefresher&) = delete;
  BudgetReferenceRefresher& operator=(const BudgetReferenceRefresher&) = delete;

 private:
  void run();
  std::string url_, api_key_;
  std::chrono::milliseconds period_;
  route::Router& router_;
  std::function<void(std::vector<double>)> apply_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace guardkit::serve
