#include "serve/fleet_metrics.h"

#include "io/openai_client.h"

namespace guardkit::serve {

void add_upstream_endpoint_metrics(MetricsRegistry& metrics, const std::string& guard, const io::OpenAIClient& client) {
  metrics.describe_gauge("guardkit_upstream_endpoint_healthy",
                         "1 while an upstream endpoint takes requests, 0 while ejected by failures or on trial.");
  metrics.describe_gauge("guardkit_upstream_endpoint_in_flight", "Requests outstanding on an upstream endpoint.");
  metrics.describe_counter("guardkit_upstream_endpoint_requests_total", "Attempts sent to an upstream endpoint.");
  metrics.describe_counter("guardkit_upstream_endpoint_failures_total",
                           "Attempts that failed on an upstream endpoint (connect error, timeout, 5xx, 429).");
  metrics.describe_counter("guardkit_upstream_endpoint_ejections_total",
                           "Times an upstream endpoint was taken out after failing.");
  const auto endpoints = client.endpoints();
  for (size_t i = 0; i < endpoints.size(); ++i) {
    const Labels labels = {{"guard", guard}, {"endpoint", endpoints[i].url}};
    auto read = [&client, i](auto field) {
      return [&client, i, field] { return static_cast<double>(client.endpoints()[i].*field); };
    };
    metrics.gauge_callback("guardkit_upstream_endpoint_healthy", labels, read(&io::EndpointStatus::healthy));
    metrics.gauge_callback("guardkit_upstream_endpoint_in_flight", labels, read(&io::EndpointStatus::in_flight));
    metrics.counter_callback("guardkit_upstream_endpoint_requests_total", labels, read(&io::EndpointStatus::requests));
    metrics.counter_callback("guardkit_upstream_endpoint_failures_total", labels, read(&io::EndpointStatus::failures));
    metrics.counter_callback("guardkit_upstream_endpoint_ejections_total", labels, read(&io::EndpointStatus::ejections));
  }
}

}  // namespace guardkit::serve
