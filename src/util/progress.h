// A progress bar with rate and ETA on stderr for long jobs (evaluation, generation, training, red-team runs).
// On a terminal it redraws one line; otherwise (logs, CI) it prints a line at every 10% so logs stay short.
#pragma once
#include <chrono>
#include <cstddef>
#include <string>

namespace guardkit {

class ProgressBar {
 public:
  ProgressBar(std::string label, size_t total, bool enabled = true);
  ~ProgressBar();
  void update(size_t done, const std::string& suffix = "");  // absolute count
  void advance(size_t by = 1, const std::string& suffix = "") { update(done_ + by, suffix); }
  void finish(const std::string& suffix = "");
  void set_total(size_t total) { total_ = total; }
  // Restarts the clock at `done` (work of an earlier run or of set-up): rate and ETA count only work from here on.
  void resume_from(size_t done);

  // "1h02m", "3m05s", "12s".
  static std::string format_duration(double seconds);

 private:
  std::string label_;
  size_t total_, done_ = 0, start_done_ = 0;
  bool enabled_, tty_, finished_ = false;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace guardkit
