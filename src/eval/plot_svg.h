// A small dependency-free SVG line plot (trade-off curves, training curves): axes with "nice" ticks, grid, axis
// labels, title, one polyline with markers per series and a legend. Readable at a glance in any browser.
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace guardkit::eval {

struct PlotSeries {
  std::string name;
  std::vector<double> x, y;  // same length; non-finite points are skipped (the line breaks there)
  bool markers = true;
  bool dashed = false;
};

struct LinePlot {
  std::string title;
  std::string x_label, y_label;
  std::vector<PlotSeries> series;
  std::optional<double> x_min, x_max, y_min, y_max;  // fixed ranges; otherwise from the data (padded, nice ticks)
  int width = 720, height = 480;
};

// The SVG document. Throws guardkit::Error when a series has mismatched x/y lengths.
std::string render_svg(const LinePlot& plot);
// Writes it (through a temporary file and a rename).
void write_svg(const std::filesystem::path& path, const LinePlot& plot);

// Tick positions covering [lo, hi] at a 1/2/5 x 10^k step, about `target` of them.
std::vector<double> nice_ticks(double lo, double hi, int target = 6);

}  // namespace guardkit::eval
