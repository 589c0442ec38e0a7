#include "serve/budget_reference.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "route/features.h"
#include "route/router.h"
#include "util/error.h"
#include "util/paths.h"

namespace guardkit::serve {

using nlohmann::json;

namespace {

std::vector<double> scores_from_json(const std::string& text, const std::string& source) {
  json document = json::parse(text, nullptr, false);
  if (document.is_object() && document.contains("scores")) document = document["scores"];
  if (!document.is_array()) fail("budget reference {}: expected [scores...] or {{\"scores\": [...]}}", source);
  std::vector<double> scores;
  scores.reserve(document.size());
  for (const auto& value : document) {
    if (!value.is_number() || !std::isfinite(value.get<double>()))
      fail("budget reference {}: score #{} is not a finite number", source, scores.size());
    scores.push_back(value.get<double>());
  }
  return scores;
}

std::string http_get(const std::string& url, const std::string& api_key, double timeout_s) {
  // "http://host:port/path?query": httplib wants the scheme-host-port and the path apart.
  const size_t scheme_end = url.find("://");
  const size_t path_start = url.find('/', scheme_end + 3);
  const std::string origin = url.substr(0, path_start);
  const std::string path = path_start == std::string::npos ? "/" : url.substr(path_start);
  httplib::Client client(origin);
  const auto timeout = std::chrono::duration<double>(timeout_s);
  client.set_connection_timeout(std::chrono::duration_cast<std::chrono::microseconds>(timeout));
  client.set_read_timeout(std::chrono::duration_cast<std::chrono::microseconds>(timeout));
  httplib::Headers headers;
  if (!api_key.empty()) headers.emplace("Authorization", "Bearer " + api_key);
  auto response = client.Get(path, headers);
  if (!response) fail("budget reference {}: {}", url, httplib::to_string(response.error()));
  if (response->status != 200) fail("budget reference {}: HTTP {}", url, response->status);
  return response->body;
}

}  // namespace

bool is_url(const std::string& source) {
  return source.rfind("http://", 0) == 0 || source.rfind("https://", 0) == 0;
}

std::vector<double> load_budget_reference(const std::string& source, route::Router& router,
                                          const std::string& api_key, double timeout_s) {
  std::vector<double> scores;
  if (is_url(source)) {
    scores = scores_from_json(http_get(source, api_key, timeout_s), source);
  } else if (std::filesystem::path(source).extension() == ".safetensors") {
    const route::FeatureCache cache = route::load_feature_cache(source);
    if (router.needs_features() && cache.dim <= 0)
      fail("budget reference {}: router '{}' needs features and the cache holds none", source, router.name());
    scores = router.scores(route::RouteBatch::of(cache));
  } else {
    scores = scores_from_json(read_file(source), source);
  }
  if (scores.empty()) fail("budget reference {}: holds no router score", source);
  return scores;
}

BudgetReferenceRefresher::BudgetReferenceRefresher(std::string url, std::string api_key,
                                                   std::chrono::milliseconds period, route::Router& router,
                                                   std::function<void(std::vector<double>)> apply)
    : url_(std::move(url)), api_key_(std::move(api_key)), period_(period), router_(router), apply_(std::move(apply)) {
  thread_ = std::thread([this] { run(); });
}

BudgetReferenceRefresher::~BudgetReferenceRefresher() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void BudgetReferenceRefresher::run() {
  std::unique_lock lock(mutex_);
  while (!wake_.wait_for(lock, period_, [this] { return stopping_; })) {
    lock.unlock();
    try {
      apply_(load_budget_reference(url_, router_, api_key_));
    } catch (const std::exception& e) {
      spdlog::warn("keeping the last budget window: {}", e.what());
    }
    lock.lock();
  }
}

}  // namespace guardkit::serve
