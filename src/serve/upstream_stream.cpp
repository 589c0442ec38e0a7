#include "serve/upstream_stream.h"

#include <fmt/format.h>
#include <httplib.h>

namespace guardkit::serve {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

void SseParser::feed(std::string_view bytes, const std::function<void(const std::string&)>& on_event) {
  buffer_.append(bytes);
  size_t start = 0;
  for (size_t end; (end = buffer_.find('\n', start)) != std::string::npos; start = end + 1) {
    std::string_view line(buffer_.data() + start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) {  // a blank line ends the event
      if (has_data_) on_event(data_);
      data_.clear();
      has_data_ = false;
      continue;
    }
    if (line.front() == ':') continue;  // comment / keep-alive
    const size_t colon = line.find(':');
    std::string_view field = line.substr(0, colon);
    std::string_view value = colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    if (field == "data") {
      if (has_data_) data_ += '\n';
      data_.append(value);
      has_data_ = true;
    }
  }
  buffer_.erase(0, start);
}

UpstreamStream::UpstreamStream(const std::string& base_url, const std::string& api_key, const std::string& path,
                               const json& body, std::chrono::milliseconds read_timeout) {
  thread_ = std::thread([this, base_url, api_key, path, text = body.dump(), read_timeout] {
    run(base_url, api_key, path, text, read_timeout);
  });
}

UpstreamStream::~UpstreamStream() {
  cancel();
  if (thread_.joinable()) thread_.join();
}

void UpstreamStream::cancel() {
  std::lock_guard lock(mutex_);
  cancelled_ = true;
}

void UpstreamStream::push(UpstreamEvent event) {
  {
    std::lock_guard lock(mutex_);
    if (finished_) return;
    if (event.kind != UpstreamEvent::Kind::kDelta) finished_ = true;
    if (!event.finish_reason.empty()) last_finish_reason_ = event.finish_reason;
    events_.push_back(std::move(event));
  }
  changed_.notify_all();
}

void UpstreamStream::on_data(const std::string& data) {
  UpstreamEvent event;
  if (data == "[DONE]") {
    event.kind = UpstreamEvent::Kind::kDone;
    push(std::move(event));
    return;
  }
  json chunk = json::parse(data, nullptr, false);
  if (chunk.is_discarded() || !chunk.is_object()) {
    event.kind = UpstreamEvent::Kind::kError;
    event.error_kind = "malformed";
    event.message = "the upstream sent an event that is not a JSON object";
    push(std::move(event));
    return;
  }
  if (chunk.contains("error")) {
    event.kind = UpstreamEvent::Kind::kError;
    event.error_kind = "error";
    const json& error = chunk["error"];
    event.message = error.is_object() && error.contains("message") && error["message"].is_string()
                        ? error["message"].get<std::string>()
                        : error.dump();
    push(std::move(event));
    return;
  }
  if (chunk.contains("choices") && chunk["choices"].is_array() && !chunk["choices"].empty()) {
    const json& choice = chunk["choices"][0];
    if (choice.is_object()) {
      if (choice.contains("delta") && choice["delta"].is_object() && choice["delta"].contains("content") &&
          choice["delta"]["content"].is_string())
        event.content = choice["delta"]["content"].get<std::string>();
      if (choice.contains("finish_reason") && choice["finish_reason"].is_string())
        event.finish_reason = choice["finish_reason"].get<std::string>();
    }
  }
  event.chunk = std::move(chunk);
  push(std::move(event));
}

void UpstreamStream::run(std::string base_url, std::string api_key, std::string path, std::string body,
                         std::chrono::milliseconds read_timeout) {
  httplib::Client client(base_url);
  client.set_connection_timeout(2, 0);
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(read_timeout).count();
  client.set_read_timeout(us / 1000000, us % 1000000);
  client.set_write_timeout(us / 1000000, us % 1000000);
  client.set_tcp_nodelay(true);

  httplib::Request request;
  request.method = "POST";
  request.path = path;
  request.body = std::move(body);
  request.headers.emplace("Content-Type", "application/json");
  request.headers.emplace("Accept", "text/event-stream");
  if (!api_key.empty()) request.headers.emplace("Authorization", "Bearer " + api_key);

  int status = 0;
  std::string error_body;
  auto last_data = Clock::now();
  auto keep_going = [this] {
    std::lock_guard lock(mutex_);
    return !cancelled_;
  };
  request.response_handler = [&](const httplib::Response& response) {
    status = response.status;
    last_data = Clock::now();
    if (status == 200) {
      {
        std::lock_guard lock(mutex_);
        head_.status = 200;
        head_ready_ = true;
      }
      changed_.notify_all();
    }
    return keep_going();
  };
  request.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    last_data = Clock::now();
    if (status != 200) {
      if (error_body.size() < (1u << 20)) error_body.append(data, size);
    } else {
      parser_.feed(std::string_view(data, size), [this](const std::string& event) { on_data(event); });
    }
    return keep_going();
  };
  httplib::Result result = client.send(request);

  // A failed read right after a full timeout of silence is a stall; sooner, the connection was dropped.
  const bool stalled = Clock::now() - last_data >= read_timeout * 9 / 10;
  bool head_was_ready;
  {
    std::lock_guard lock(mutex_);
    head_was_ready = head_ready_;
  }
  if (!head_was_ready) {
    UpstreamHead head;
    if (result && status != 200) {
      head.status = status;
      head.body = std::move(error_body);
    } else if (!result && result.error() == httplib::Error::Read && stalled) {
      head.error_kind = "timeout";
      head.message = fmt::format("the upstream did not answer within {} ms", read_timeout.count());
    } else if (!result) {
      head.error_kind = "unavailable";
      head.message = fmt::format("the upstream is unreachable ({})", httplib::to_string(result.error()));
    } else {
      head.error_kind = "malformed";
      head.message = "the upstream answered without a status";
    }
    {
      std::lock_guard lock(mutex_);
      head_ = std::move(head);
      head_ready_ = true;
    }
    changed_.notify_all();
  }
  // Whatever happened, the event queue ends with kDone or kError.
  UpstreamEvent end;
  std::string finish;
  {
    std::lock_guard lock(mutex_);
    finish = last_finish_reason_;
  }
  if (result && status == 200 && !finish.empty()) {
    end.kind = UpstreamEvent::Kind::kDone;  // a body that ended cleanly after its finish_reason (no [DONE] sent)
  } else {
    end.kind = UpstreamEvent::Kind::kError;
    if (!result && result.error() == httplib::Error::Canceled) {
      end.error_kind = "cancelled";
      end.message = "the stream was cancelled";
    } else if (!result && stalled) {
      end.error_kind = "timeout";
      end.message = fmt::format("the upstream stalled: nothing for {} ms", read_timeout.count());
    } else {
      end.error_kind = "dropped";
      end.message = result ? "the upstream ended the stream before it finished"
                           : fmt::format("the upstream dropped the stream ({})", httplib::to_string(result.error()));
    }
  }
  push(std::move(end));
}

UpstreamHead UpstreamStream::head() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [this] { return head_ready_; });
  return head_;
}

UpstreamEvent UpstreamStream::next() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [this] { return !events_.empty(); });
  UpstreamEvent event = std::move(events_.front());
  events_.pop_front();
  return event;
}

}  // namespace guardkit::serve
