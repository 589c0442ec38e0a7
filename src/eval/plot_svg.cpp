#include "eval/plot_svg.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <fmt/format.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>

#include "util/error.h"

namespace guardkit::eval {

namespace {

// Colour-blind-safe palette (Okabe-Ito), black and greys; Okabe-Ito yellow last (it hardly shows on white).
const char* kColours[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
                          "#000000", "#666666", "#999999", "#F0E442"};

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string tick_label(double v, double step) {
  if (std::abs(v) < step * 1e-9) v = 0;
  const int decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step) + 1e-9)));
  return fmt::format("{:.{}f}", v, std::min(decimals, 6));
}

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / std::max(1, target);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * magnitude >= raw) {
      step = m * magnitude;
      break;
    }
  std::vector<double> ticks;
  // k * step rather than repeated addition, so ticks carry no accumulated rounding.
  for (auto k = static_cast<int64_t>(std::ceil(lo / step - 1e-9)); k * step <= hi + step * 1e-9; ++k)
    ticks.push_back(static_cast<double>(k) * step);
  return ticks;
}

std::string render_svg(const LinePlot& plot) {
  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  for (const auto& s : plot.series) {
    if (s.x.size() != s.y.size())
      fail("plot '{}': series '{}' has {} x and {} y values", plot.title, s.name, s.x.size(), s.y.size());
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      x_lo = std::min(x_lo, s.x[i]), x_hi = std::max(x_hi, s.x[i]);
      y_lo = std::min(y_lo, s.y[i]), y_hi = std::max(y_hi, s.y[i]);
    }
  }
  if (!std::isfinite(x_lo)) x_lo = 0, x_hi = 1, y_lo = 0, y_hi = 1;
  auto widen = [](double& lo, double& hi) {
    if (hi - lo < 1e-12) {
      const double pad = std::abs(lo) > 0 ? std::abs(lo) * 0.05 : 0.5;
      lo -= pad, hi += pad;
    } else {
      const double pad = (hi - lo) * 0.04;
      lo -= pad, hi += pad;
    }
  };
  widen(x_lo, x_hi);
  widen(y_lo, y_hi);
  if (plot.x_min) x_lo = *plot.x_min;
  if (plot.x_max) x_hi = *plot.x_max;
  if (plot.y_min) y_lo = *plot.y_min;
  if (plot.y_max) y_hi = *plot.y_max;
  if (!(x_hi > x_lo)) x_hi = x_lo + 1;
  if (!(y_hi > y_lo)) y_hi = y_lo + 1;

  const int W = plot.width, H = plot.height;
  const double left = 72, right = 190, top = 44, bottom = 58;  // legend lives in the right margin
  const double pw = W - left - right, ph = H - top - bottom;
  auto px = [&](double x) { return left + (x - x_lo) / (x_hi - x_lo) * pw; };
  auto py = [&](double y) { return top + (1 - (y - y_lo) / (y_hi - y_lo)) * ph; };

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"Helvetica, Arial, sans-serif\" font-size=\"13\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      W, H);
  svg += fmt::format("<text x=\"{:.1f}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">{}</text>\n",
                     left + pw / 2, escape(plot.title));
  // Grid and ticks.
  const auto xt = nice_ticks(x_lo, x_hi), yt = nice_ticks(y_lo, y_hi);
  const double xstep = xt.size() > 1 ? xt[1] - xt[0] : 1, ystep = yt.size() > 1 ? yt[1] - yt[0] : 1;
  for (double v : xt) {
    if (v < x_lo - 1e-12 || v > x_hi + 1e-12) continue;
    svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"#e5e5e5\"/>\n", px(v), top,
                       top + ph);
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", px(v), top + ph + 18,
                       tick_label(v, xstep));
  }
  for (double v : yt) {
    if (v < y_lo - 1e-12 || v > y_hi + 1e-12) continue;
    svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{2:.1f}\" y2=\"{1:.1f}\" stroke=\"#e5e5e5\"/>\n", left, py(v),
                       left + pw);
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", left - 8, py(v) + 4,
                       tick_label(v, ystep));
  }
  svg += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"none\" stroke=\"#333\"/>\n",
                     left, top, pw, ph);
  svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", left + pw / 2, H - 14.0,
                     escape(plot.x_label));
  svg += fmt::format("<text transform=\"translate(18,{:.1f}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
                     top + ph / 2, escape(plot.y_label));
  // Series, clipped to the plot area.
  svg += fmt::format("<clipPath id=\"plot-area\"><rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\"/></clipPath>\n",
                     left, top, pw, ph);
  for (size_t k = 0; k < plot.series.size(); ++k) {
    const auto& s = plot.series[k];
    const char* colour = kColours[k % std::size(kColours)];
    const std::string dash = s.dashed ? " stroke-dasharray=\"6 4\"" : "";
    std::string points;
    auto flush = [&]() {
      if (!points.empty())
        svg += fmt::format("<polyline clip-path=\"url(#plot-area)\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{} points=\"{}\"/>\n",
                           colour, dash, points);
      points.clear();
    };
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) {
        flush();
        continue;
      }
      points += fmt::format("{:.1f},{:.1f} ", px(s.x[i]), py(s.y[i]));
      if (s.markers)
        svg += fmt::format("<circle clip-path=\"url(#plot-area)\" cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.8\" fill=\"{}\"/>\n",
                           px(s.x[i]), py(s.y[i]), colour);
    }
    flush();
    // Legend entry.
    const double ly = top + 12 + 20.0 * k;
    svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{2:.1f}\" y2=\"{1:.1f}\" stroke=\"{3}\" stroke-width=\"2.5\"{4}/>\n",
                       left + pw + 14, ly, left + pw + 40, colour, dash);
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\">{}</text>\n", left + pw + 46, ly + 4, escape(s.name));
  }
  svg += "</svg>\n";
  return svg;
}

void write_svg(const std::filesystem::path& path, const LinePlot& plot) { write_svg_document(path, render_svg(plot)); }

void write_svg_document(const std::filesystem::path& path, const std::string& svg) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  const auto tmp = std::filesystem::path(path.string() + ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary);
    out << svg;
    if (!out) fail("{}: cannot write", tmp.string());
  }
  std::filesystem::rename(tmp, path);
  write_png_from_svg(path, std::filesystem::path(path).replace_extension(".png"));
}

namespace {

bool on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  if (!path) return false;
  std::string dirs = path;
  for (size_t begin = 0; begin <= dirs.size();) {
    const size_t end = std::min(dirs.find(':', begin), dirs.size());
    const std::string dir = dirs.substr(begin, end - begin);
    if (!dir.empty() && ::access((std::filesystem::path(dir) / program).c_str(), X_OK) == 0) return true;
    begin = end + 1;
  }
  return false;
}

}  // namespace

bool write_png_from_svg(const std::filesystem::path& svg, const std::filesystem::path& png) {
  static std::atomic<bool> warned{false};
  if (!on_path("rsvg-convert")) {
    if (!warned.exchange(true))
      spdlog::warn("rsvg-convert not found (Debian package librsvg2-bin): plots are written as SVG only");
    return false;
  }
  // argv, not a shell command line: any file name is safe. Written to a temporary name, renamed when complete.
  const std::string tmp = png.string() + ".tmp";
  std::vector<std::string> args = {"rsvg-convert", "--background-color=white", "--format=png",
                                   "--output=" + tmp,  svg.string()};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawnp(&pid, "rsvg-convert", nullptr, nullptr, argv.data(), environ) != 0)
    fail("{}: cannot start rsvg-convert", svg.string());
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) fail("{}: waiting for rsvg-convert failed", svg.string());
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::filesystem::remove(tmp);
    fail("rsvg-convert could not render {} to PNG (exit status {})", svg.string(), WEXITSTATUS(status));
  }
  std::filesystem::rename(tmp, png);
  return true;
}

}  // namespace guardkit::eval
