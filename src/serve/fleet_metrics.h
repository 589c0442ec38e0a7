// Per-endpoint metrics of a remote guard's upstream fleet (io/openai_client.h), read from the client whenever
// /metrics is rendered: guardkit_upstream_endpoint_{healthy,in_flight} gauges and
// guardkit_upstream_endpoint_{requests,failures,ejections}_total counters, labelled by guard and endpoint URL.
#pragma once
#include <string>

#include "serve/metrics.h"

namespace guardkit::io {
class OpenAIClient;
}

namespace guardkit::serve {

void add_upstream_endpoint_metrics(MetricsRegistry& metrics, const std::string& guard, const io::OpenAIClient& client);

}  // namespace guardkit::serve
