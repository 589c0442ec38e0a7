// Reading an upstream's streamed chat completion (Server-Sent Events) for the guarded proxy. A background thread
// runs the HTTP request and turns the SSE body into events on a queue; the proxy waits for the status line first
// (so an upstream that refuses, fails or stalls before answering still gets a plain 502/504 JSON error), then takes
// content deltas one by one, checks them, and releases them. Bounded: every read waits at most `read_timeout`.
#pragma once
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <thread>

namespace guardkit::serve {

// Incremental SSE parser: feed bytes as they arrive, get the `data:` payload of each complete event (multi-line data
// joined with "\n"; comments, event names and ids ignored; CRLF or LF line ends).
class SseParser {
 public:
  void feed(std::string_view bytes, const std::function<void(const std::string& data)>& on_event);

 private:
  std::string buffer_;
  std::string data_;
  bool has_data_ = false;
};

struct UpstreamEvent {
  enum class Kind {
    kDelta,  // content text (possibly empty: a role-only or finish chunk)
    kDone,   // "data: [DONE]", or the body ended cleanly after a finish_reason
    kError,  // the upstream stalled (kind "timeout"), dropped the connection ("dropped"), or sent nonsense
  };
  Kind kind = Kind::kDelta;
  std::string content;
  std::string finish_reason;   // set on the chunk that carried one
  nlohmann::json chunk;        // the upstream's chunk (id, model, created, usage when sent)
  std::string error_kind;      // "timeout", "dropped", "malformed", "error" (an error event from the upstream)
  std::string message;
};

struct UpstreamHead {
  int status = 0;           // 0: no answer at all
  std::string error_kind;   // "unavailable" (refused/unreachable), "timeout" (no status line in time)
  std::string message;
  std::string body;         // a non-200 answer's body (complete)
};

class UpstreamStream {
 public:
  // Starts the request at once. `body` must already hold "stream": true.
  UpstreamStream(const std::string& base_url, const std::string& api_key, const std::string& path,
                 const nlohmann::json& body, std::chrono::milliseconds read_timeout);
  ~UpstreamStream();  // cancels and joins: returns within about one read timeout
  UpstreamStream(const UpstreamStream&) = delete;
  UpstreamStream& operator=(const UpstreamStream&) = delete;

  // Waits for the status line (or a failure before it). For a non-200 status, waits for the whole body too.
  UpstreamHead head();
  // The next event; blocks until one arrives. After kDone or kError there are no more.
  UpstreamEvent next();
  // Stops reading (the client went away, or the proxy blocked the stream).
  void cancel();

 private:
  void run(std::string base_url, std::string api_key, std::string path, std::string body,
           std::chrono::milliseconds read_timeout);
  void push(UpstreamEvent event);
  void on_data(const std::string& data);

  std::mutex mutex_;
  std::condition_variable changed_;
  bool head_ready_ = false;
  UpstreamHead head_;
  std::deque<UpstreamEvent> events_;
  bool finished_ = false;  // kDone or kError pushed
  std::string last_finish_reason_;
  bool cancelled_ = false;
  SseParser parser_;
  std::thread thread_;
};

}  // namespace guardkit::serve
