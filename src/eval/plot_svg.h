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
// Writes it (through a temporary file and a rename), and the same picture as PNG next to it (path with .png) when
// write_png_from_svg can.
void write_svg(const std::filesystem::path& path, const LinePlot& plot);
// Any SVG document, written the same way (and its PNG).
void write_svg_document(const std::filesystem::path& path, const std::string& svg);

// Renders an SVG file to PNG (white background) with librsvg's `rsvg-convert` (Debian package librsvg2-bin, installed
// by scripts/install-deps.sh) in its own process. Returns false, and warns once, when the tool is not installed: the
// SVG is the primary output, the PNG is for viewers that cannot show SVG. Throws when the tool is there but fails.
bool write_png_from_svg(const std::filesystem::path& svg, const std::filesystem::path& png);

// Tick positions covering [lo, hi] at a 1/2/5 x 10^k step, about `target` of them.
std::vector<double> nice_ticks(double lo, double hi, int target = 6);

}  // namespace guardkit::eval
