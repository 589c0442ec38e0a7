#include "util/progress.h"

#include <cmath>
#include <cstdio>
#include <fmt/format.h>
#include <unistd.h>

namespace guardkit {

ProgressBar::ProgressBar(std::string label, size_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled), tty_(isatty(fileno(stderr)) != 0),
      start_(std::chrono::steady_clock::now()), last_draw_(start_ - std::chrono::seconds(1)) {}

ProgressBar::~ProgressBar() {
  if (!finished_ && enabled_ && tty_ && done_ > 0) std::fputc('\n', stderr);
}

std::string ProgressBar::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<long>(std::lround(seconds));
  if (s >= 3600) return fmt::format("{}h{:02d}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02d}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

void ProgressBar::resume_from(size_t done) {
  done_ = start_done_ = done;
  start_ = std::chrono::steady_clock::now();
}

void ProgressBar::update(size_t done, const std::string& suffix) {
  done_ = done;
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done_ > start_done_ ? done_ - start_done_ : 0) / elapsed : 0.0;
  const double eta = rate > 0 && total_ >= done_ ? static_cast<double>(total_ - done_) / rate : NAN;
  const double frac = total_ ? std::min(1.0, static_cast<double>(done_) / static_cast<double>(total_)) : 0.0;
  const std::string info = fmt::format("{} {}/{} {:.1f}/s elapsed {} ETA {}{}{}", label_, done_, total_, rate,
                                       format_duration(elapsed), format_duration(eta), suffix.empty() ? "" : " ",
                                       suffix);
  if (tty_) {
    if (now - last_draw_ < std::chrono::milliseconds(100) && done_ < total_) return;
    last_draw_ = now;
    constexpr int width = 28;
    const int filled = static_cast<int>(frac * width);
    fmt::print(stderr, "\r[{}{}] {:3.0f}% {}\x1b[K", std::string(filled, '#'), std::string(width - filled, ' '),
               100.0 * frac, info);
    std::fflush(stderr);
  } else {
    const int decile = static_cast<int>(frac * 10);
    if (decile == last_decile_) return;
    last_decile_ = decile;
    fmt::print(stderr, "{:3.0f}% {}\n", 100.0 * frac, info);
  }
}

void ProgressBar::finish(const std::string& suffix) {
  if (finished_) return;
  update(total_ > done_ ? done_ : total_, suffix);
  finished_ = true;
  if (enabled_ && tty_) std::fputc('\n', stderr);
}

}  // namespace guardkit
