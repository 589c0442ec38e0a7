#include "util/progress_bar.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fmt/format.h>

namespace guardkit {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  if (seconds < 60) return fmt::format("{:.1f}s", seconds);
  const auto total = static_cast<int64_t>(seconds + 0.5);
  if (total < 3600) return fmt::format("{}m{:02d}s", total / 60, total % 60);
  return fmt::format("{}h{:02d}m", total / 3600, (total % 3600) / 60);
}

ProgressBar::ProgressBar(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled), tty_(::isatty(STDERR_FILENO) == 1) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

ProgressBar::~ProgressBar() { finish(); }

double ProgressBar::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void ProgressBar::advance(int64_t n, const std::string& note) { set(done_ + n, note); }

void ProgressBar::set(int64_t done, const std::string& note) {
  done_ = done;
  if (!note.empty()) note_ = note;
  draw(false);
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  draw(true);
  if (enabled_ && tty_) std::fputc('\n', stderr);
}

void ProgressBar::draw(bool force) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  const double since_draw = std::chrono::duration<double>(now - last_draw_).count();
  if (!force && since_draw < (tty_ ? 0.2 : 5.0)) return;
  last_draw_ = now;
  const double elapsed = elapsed_seconds();
  const double rate = elapsed > 0 ? done_ / elapsed : 0.0;
  std::string line;
  if (total_ > 0) {
    const double fraction = std::min(1.0, static_cast<double>(done_) / static_cast<double>(total_));
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(fraction * kWidth);
    const double eta = rate > 0 ? (total_ - done_) / rate : NAN;
    line = fmt::format("{} [{}{}] {}/{} {:.0f}% {:.1f}/s elapsed {} eta {}", label_, std::string(filled, '#'),
                       std::string(kWidth - filled, '.'), done_, total_, 100 * fraction, rate,
                       format_duration(elapsed), format_duration(eta));
  } else {
    line = fmt::format("{} {} {:.1f}/s elapsed {}", label_, done_, rate, format_duration(elapsed));
  }
  if (!note_.empty()) line += "  " + note_;
  if (tty_)
    std::fprintf(stderr, "\r%s\x1b[K", line.c_str());
  else
    std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace guardkit
