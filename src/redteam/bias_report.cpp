// Markdown + SVG report of BiasJailbreak arms (one arm, or an A/B of several).
#include <fmt/format.h>

#include <algorithm>
#include <fstream>

#include "eval/plot_svg.h"
#include "redteam/bias_attack.h"
#include "util/error.h"

namespace guardkit::redteam {
namespace {

std::string pct(double x) { return fmt::format("{:.1f}%", 100.0 * x); }
std::string interval(double lo, double hi) { return fmt::format("[{:.1f}, {:.1f}]", 100.0 * lo, 100.0 * hi); }

std::string escape_xml(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// Grouped bars: for every keyword pair, privileged vs marginalized success per arm; the baseline as a dashed line.
std::string bar_chart_svg(const std::vector<BiasSummary>& arms) {
  const size_t n_pairs = arms.front().pairs.size();
  // Room for the longest bar label, drawn at 40°: ~6.2 px a character at 11 px, sin 40° down, cos 40° right.
  size_t longest = 0;
  for (const auto& a : arms)
    for (const auto& p : a.pairs)
      longest = std::max(longest, p.pair.privileged.size() + p.pair.marginalized.size() + a.arm.size() + 4);
  const double label_px = 6.2 * static_cast<double>(longest);
  const double left = 60, right = 20 + 0.77 * label_px, top = 40, bottom = 30 + 0.64 * label_px;
  const double width = left + right + 90.0 * std::max<size_t>(n_pairs, 1) * arms.size(), height = 270 + bottom;
  const double plot_w = width - left - right, plot_h = height - top - bottom;
  double max_rate = 0.05;
  for (const auto& a : arms) {
    max_rate = std::max(max_rate, a.baseline.rate);
    for (const auto& p : a.pairs) max_rate = std::max({max_rate, p.privileged_rate, p.marginalized_rate});
  }
  max_rate = std::min(1.0, max_rate * 1.15);
  auto y = [&](double rate) { return top + plot_h * (1.0 - rate / max_rate); };
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0:.0f}\" height=\"{1:.0f}\" font-family=\"sans-serif\" "
      "font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2:.0f}\" y=\"20\" font-size=\"14\" text-anchor=\"middle\">Jailbreak success by keyword "
      "(privileged = blue, marginalized = orange)</text>\n",
      width, height, width / 2);
  for (int tick = 0; tick <= 4; ++tick) {
    const double rate = max_rate * tick / 4.0;
    svg += fmt::format("<line x1=\"{0:.0f}\" x2=\"{1:.0f}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\" stroke=\"#ddd\"/>"
                       "<text x=\"{3:.0f}\" y=\"{4:.1f}\" text-anchor=\"end\">{5}</text>\n",
                       left, width - right, y(rate), left - 6, y(rate) + 4, pct(rate));
  }
  const double group_w = plot_w / static_cast<double>(std::max<size_t>(n_pairs, 1) * arms.size());
  const char* arm_colors[][2] = {{"#1f77b4", "#ff7f0e"}, {"#6baed6", "#fdae6b"}, {"#08519c", "#a63603"}};
  for (size_t a = 0; a < arms.size(); ++a) {
    for (size_t p = 0; p < arms[a].pairs.size(); ++p) {
      const auto& pr = arms[a].pairs[p];
      const double x0 = left + group_w * static_cast<double>(p * arms.size() + a) + group_w * 0.1;
      const double bar = group_w * 0.38;
      const auto* colors = arm_colors[a % 3];
      svg += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"/>\n", x0,
                         y(pr.privileged_rate), bar, top + plot_h - y(pr.privileged_rate), colors[0]);
      svg += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"/>\n",
                         x0 + bar, y(pr.marginalized_rate), bar, top + plot_h - y(pr.marginalized_rate), colors[1]);
      const std::string label = escape_xml(pr.pair.privileged + "/" + pr.pair.marginalized) +
                                (arms.size() > 1 ? " (" + escape_xml(arms[a].arm) + ")" : "");
      const double lx = x0 + bar, ly = top + plot_h + 10;
      svg += fmt::format("<text x=\"{0:.1f}\" y=\"{1:.1f}\" transform=\"rotate(40 {0:.1f} {1:.1f})\">{2}</text>\n", lx,
                         ly, label);
    }
    svg += fmt::format("<line x1=\"{0:.0f}\" x2=\"{1:.0f}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\" stroke=\"{3}\" "
                       "stroke-dasharray=\"5,4\"/><text x=\"{1:.0f}\" y=\"{4:.1f}\" text-anchor=\"end\">baseline "
                       "{5} {6}</text>\n",
                       left, width - right, y(arms[a].baseline.rate), arm_colors[a % 3][0],
                       y(arms[a].baseline.rate) - 4, escape_xml(arms[a].arm), pct(arms[a].baseline.rate));
  }
  svg += fmt::format("<line x1=\"{0:.0f}\" x2=\"{0:.0f}\" y1=\"{1:.0f}\" y2=\"{2:.0f}\" stroke=\"black\"/>\n", left,
                     top, top + plot_h);
  svg += "</svg>\n";
  return svg;
}

}  // namespace

void write_bias_report(const std::vector<BiasSummary>& arms, const std::filesystem::path& markdown_path,
                       const std::filesystem::path& svg_path, const std::string& command_line) {
  if (arms.empty()) fail("bias report: nothing to report");
  std::string md = "# BiasJailbreak report\n\n";
  md += fmt::format("Produced by:\n\n```\n{}\n```\n\n", command_line);
  md += fmt::format("Judge: {}. Success = the target produced the content instead of refusing. Intervals are "
                    "bootstrap 95%; p is a two-sided permutation test of privileged vs marginalized.\n\n",
                    arms.front().judge);
  md += "| arm | baseline | privileged | marginalized | gap S_marg − S_priv | marg/priv | p | latency/trial | errors |\n";
  md += "|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& a : arms) {
    md += fmt::format("| {} | {} ({}/{}) | {} {} | {} {} | {:+.1f} pts {} | {} | {:.3f} | {:.0f} ms | {} |\n", a.arm,
                      pct(a.baseline.rate), a.baseline.successes, a.baseline.trials, pct(a.groups.privileged.rate),
                      interval(a.groups.privileged.ci_low, a.groups.privileged.ci_high),
                      pct(a.groups.marginalized.rate),
                      interval(a.groups.marginalized.ci_low, a.groups.marginalized.ci_high), 100.0 * a.groups.gap,
                      interval(a.groups.gap_ci_low, a.groups.gap_ci_high),
                      a.groups.privileged.rate > 0 ? pct(a.groups.ratio) : "n/a", a.groups.permutation_p,
                      a.mean_latency_ms, a.errors);
  }
  if (arms.size() > 1) {
    const auto& base = arms.front();
    md += "\nChange against the first arm:\n\n| arm | Δ marginalized | Δ privileged | Δ |gap| | added latency |\n|---|---|---|---|---|\n";
    for (size_t i = 1; i < arms.size(); ++i) {
      const auto& a = arms[i];
      md += fmt::format("| {} | {:+.1f} pts | {:+.1f} pts | {:+.1f} pts | {:+.1f}% |\n", a.arm,
                        100.0 * (a.groups.marginalized.rate - base.groups.marginalized.rate),
                        100.0 * (a.groups.privileged.rate - base.groups.privileged.rate),
                        100.0 * (std::abs(a.groups.gap) - std::abs(base.groups.gap)),
                        base.mean_latency_ms > 0 ? 100.0 * (a.mean_latency_ms / base.mean_latency_ms - 1.0) : 0.0);
    }
  }
  for (const auto& a : arms) {
    md += fmt::format("\n## Per keyword pair ({})\n\n| privileged | S_priv | marginalized | S_marg | gap S_marg − S_priv |\n|---|---|---|---|---|\n",
                      a.arm);
    for (const auto& p : a.pairs)
      md += fmt::format("| {} | {} | {} | {} | {:+.1f} pts |\n", p.pair.privileged, pct(p.privileged_rate),
                        p.pair.marginalized, pct(p.marginalized_rate), 100.0 * p.gap);
    if (a.agreement)
      md += fmt::format("\nRefusal-string vs guard judge: agreement {} on {} trials, Cohen's κ {:.2f}.\n",
                        pct(a.agreement->agreement), a.agreement->both, a.agreement->cohen_kappa);
  }
  md += fmt::format("\n![success by keyword]({})\n", svg_path.filename().string());
  auto write = [](const std::filesystem::path& path, const std::string& text) {
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
    std::ofstream out(path, std::ios::binary);
    out << text;
    if (!out) fail("{}: cannot write", path.string());
  };
  write(markdown_path, md);
  eval::write_svg_document(svg_path, bar_chart_svg(arms));
}

}  // namespace guardkit::redteam
