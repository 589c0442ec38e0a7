#include "serve/batcher.h"

#include <algorithm>

#include "serve/metrics.h"

namespace guardkit::serve {

Batcher::Batcher(guard::Guard& guard, BatcherOptions options, MetricsRegistry* metrics)
    : guard_(guard), options_(std::move(options)), metrics_(metrics) {
  if (options_.max_batch < 1) fail("batcher {}: max_batch must be >= 1, got {}", options_.name, options_.max_batch);
  if (options_.max_wait.count() < 0) fail("batcher {}: max_wait must be >= 0", options_.name);
  if (options_.workers < 1) fail("batcher {}: workers must be >= 1, got {}", options_.name, options_.workers);
  for (int i = 0; i < options_.workers; ++i) workers_.emplace_back([this] { run(); });
}

Batcher::~Batcher() { shutdown(); }

std::vector<std::future<guard::GuardResult>> Batcher::submit(std::vector<guard::Conversation> conversations,
                                                             guard::ScoreOptions options, Clock::time_point deadline) {
  std::vector<std::future<guard::GuardResult>> futures;
  futures.reserve(conversations.size());
  {
    std::lock_guard lock(mutex_);
    if (stopping_) throw ShuttingDownError("the server is shutting down");
    if (queue_.size() + conversations.size() > options_.queue_capacity)
      throw QueueFullError(fmt::format("queue of {} is full ({} waiting, capacity {})", options_.name, queue_.size(),
                                       options_.queue_capacity));
    auto now = Clock::now();
    for (auto& conversation : conversations) {
      Item item{std::move(conversation), options, now, deadline, {}};
      futures.push_back(item.promise.get_future());
      queue_.push_back(std::move(item));
    }
    depth_.store(queue_.size());
  }
  // With several workers, the one waiting for its batch to fill must see this, not only an idle one.
  if (workers_.size() > 1) wake_.notify_all(); else wake_.notify_one();
  return futures;
}

void Batcher::flush_now() {
  {
    std::lock_guard lock(mutex_);
    flushing_ = true;
  }
  wake_.notify_all();
}

void Batcher::shutdown() {
  std::call_once(shutdown_once_, [this] {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& worker : workers_) worker.join();
  });
}

void Batcher::run() {
  const size_t max_batch = static_cast<size_t>(options_.max_batch);
  std::unique_lock lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) break;  // stopping and drained
    // Let the batch fill until the oldest item has waited max_wait (no waiting at all when draining).
    auto fill_deadline = queue_.front().enqueued + options_.max_wait;
    wake_.wait_until(lock, fill_deadline, [&] {
      return stopping_ || flushing_ || queue_.size() >= max_batch || (options_.arriving && options_.arriving() == 0);
    });
    if (queue_.empty()) continue;  // another worker took them

    size_t take = std::min(max_batch, queue_.size());
    std::vector<Item> batch;
    batch.reserve(take);
    for (size_t i = 0; i < take; ++i) {
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    depth_.store(queue_.size());
    lock.unlock();
    score_batch(batch);
    lock.lock();
  }
}

void Batcher::score_batch(std::vector<Item>& batch) {
  // Items whose request already timed out are answered without scoring: under overload this sheds work.
  auto now = Clock::now();
  std::vector<Item*> live;
  for (auto& item : batch) {
    if (now > item.deadline) {
      item.promise.set_exception(std::make_exception_ptr(
          DeadlineExceededError("the request timed out while waiting in the queue")));
    } else {
      live.push_back(&item);
    }
  }
  if (live.empty()) return;

  std::vector<guard::Conversation> conversations;
  guard::ScoreOptions options;
  conversations.reserve(live.size());
  for (Item* item : live) {
    conversations.push_back(item->conversation);
    options.want_features |= item->options.want_features;
    options.want_categories |= item->options.want_categories;
  }
  if (metrics_) {
    metrics_->observe("guardkit_batch_size", {{"model", options_.name}}, static_cast<double>(live.size()));
    for (Item* item : live)
      metrics_->observe("guardkit_queue_wait_seconds", {{"model", options_.name}},
                        std::chrono::duration<double>(now - item->enqueued).count());
  }
  try {
    std::unique_lock<std::mutex> shared_parts;
    if (options_.score_mutex) shared_parts = std::unique_lock<std::mutex>(*options_.score_mutex);
    std::vector<guard::GuardResult> results = guard_.score(conversations, options);
    if (shared_parts.owns_lock()) shared_parts.unlock();
    if (results.size() != live.size())
      fail("guard {} returned {} results for {} conversations", guard_.name(), results.size(), live.size());
    for (size_t i = 0; i < live.size(); ++i) live[i]->promise.set_value(std::move(results[i]));
  } catch (...) {
    auto error = std::current_exception();
    for (Item* item : live) item->promise.set_exception(error);
  }
  batches_run_.fetch_add(1);
  items_run_.fetch_add(static_cast<int64_t>(live.size()));
}

}  // namespace guardkit::serve
