// A one-line progress bar with rate and ETA on stderr (redrawn in place on a terminal, a line every ~5 s otherwise),
// for long jobs: feature extraction, router training, evaluation.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace guardkit {

class ProgressBar {
 public:
  // total = 0: unknown total (shows count and rate only). enabled = false: prints nothing.
  ProgressBar(std::string label, int64_t total, bool enabled = true);
  ~ProgressBar();  // finishes the line
  void advance(int64_t n = 1, const std::string& note = "");
  void set(int64_t done, const std::string& note = "");
  void finish();
  double elapsed_seconds() const;

 private:
  void draw(bool force);
  std::string label_;
  int64_t total_ = 0;
  int64_t done_ = 0;
  bool enabled_ = true;
  bool finished_ = false;
  bool tty_ = false;
  std::string note_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

// "1h02m", "3m05s", "4.2s"
std::string format_duration(double seconds);

}  // namespace guardkit
