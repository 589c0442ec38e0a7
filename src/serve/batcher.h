// Dynamic batching across concurrent requests: requests put conversations on a bounded queue, one worker thread per
// guard takes up to `max_batch` of them — waiting at most `max_wait` after the oldest arrived for the batch to fill —
// and scores them in one forward pass. A guard is called by one thread only (guard.h's contract).
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "guard/guard.h"
#include "util/error.h"

namespace guardkit::serve {

class MetricsRegistry;

// The queue has no room for the items of a request (the server answers 429).
class QueueFullError : public Error {
 public:
  using Error::Error;
};
// The item's deadline passed before the worker reached it (the server answers 504); it was never scored.
class DeadlineExceededError : public Error {
 public:
  using Error::Error;
};
// The batcher is shutting down and accepts nothing new (the server answers 503).
class ShuttingDownError : public Error {
 public:
  using Error::Error;
};

struct BatcherOptions {
  int max_batch = 16;                          // 1 = batching off
  std::chrono::microseconds max_wait{2000};    // how long the oldest item may wait for the batch to fill
  size_t queue_capacity = 1024;                // items waiting (not yet in a running batch)
  std::string name = "guard";                  // metrics label
  // How many requests are on their way to this queue (parsed by a handler, not yet submitted). When it reads 0 the
  // worker stops waiting for the batch to fill: nothing more is coming, so waiting would only add latency.
  // Empty: always wait up to max_wait.
  std::function<size_t()> arriving;
  // When set, the guard is called holding this mutex: batchers whose guards share parts (a routed guard served next
  // to its own small or large guard) then never run those parts from two threads at once.
  std::shared_ptr<std::mutex> score_mutex;
  // Threads taking batches from this queue, each scoring its own batch: with one libtorch thread each (--threads 1),
  // N workers keep N cores busy on independent batches, which on small CPUs beats splitting every small GEMM across
  // cores (bench_serve --workers). The guard must be safe to call from several threads (every built-in guard is).
  int workers = 1;
};

class Batcher {
 public:
  using Clock = std::chrono::steady_clock;

  Batcher(guard::Guard& guard, BatcherOptions options, MetricsRegistry* metrics = nullptr);
  ~Batcher();  // shutdown()
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Enqueues a request's conversations, all or none (QueueFullError when they do not all fit; ShuttingDownError
  // after shutdown began). Each future yields its GuardResult, or DeadlineExceededError when `deadline` passed
  // before it was scored, or the guard's exception.
  std::vector<std::future<guard::GuardResult>> submit(std::vector<guard::Conversation> conversations,
                                                      guard::ScoreOptions options, Clock::time_point deadline);

  // From now on, scores what is queued at once instead of waiting for batches to fill; still accepts work.
  // A draining server calls it so the requests it waits for are answered without max_wait delays.
  void flush_now();
  // Stops accepting, scores everything already queued, joins the worker. Idempotent.
  void shutdown();

  size_t queue_depth() const { return depth_.load(); }
  const BatcherOptions& options() const { return options_; }
  guard::Guard& guard() { return guard_; }
  int64_t batches_run() const { return batches_run_.load(); }
  int64_t items_run() const { return items_run_.load(); }

 private:
  struct Item {
    guard::Conversation conversation;
    guard::ScoreOptions options;
    Clock::time_point enqueued;
    Clock::time_point deadline;
    std::promise<guard::GuardResult> promise;
  };
  void run();
  void score_batch(std::vector<Item>& batch);

  guard::Guard& guard_;
  BatcherOptions options_;
  MetricsRegistry* metrics_;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Item> queue_;
  bool stopping_ = false;
  bool flushing_ = false;
  std::atomic<size_t> depth_{0};
  std::atomic<int64_t> batches_run_{0};
  std::atomic<int64_t> items_run_{0};
  std::vector<std::thread> workers_;
  std::once_flag shutdown_once_;
};

}  // namespace guardkit::serve
