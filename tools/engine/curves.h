// curves.h: the run folder's curves.svg, drawn by mo itself at every epoch end from summary.csv: one
// panel per quantity (loss: train / eval / eval EMA; top-1: eval / eval EMA; learning rate; images/s)
// against the epoch, with axes, ticks, labels and a legend. Plain SVG 1.1 (valid XML, every text
// escaped), viewable in any browser. Each series is a <g class="series" data-name=... data-values=
// "epoch:value ..."> so that tools and tests can read the numbers back.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace mo::tools {

struct CurveSeries {
  std::string name;                                // summary.csv column, also the legend text
  std::vector<std::pair<double, double>> points;   // (epoch, value); non-finite values are left out
};
struct CurvePanel {
  std::string title;
  std::vector<CurveSeries> series;  // series without points are not drawn
};

// The SVG text of `panels` in a 2-column grid under `title`.
std::string render_curves_svg(const std::vector<CurvePanel>& panels, const std::string& title);
// The panels for a summary.csv (columns found by the header's names; missing or empty cells skipped).
// Throws naming the file when it cannot be read.
std::vector<CurvePanel> curves_from_summary(const std::string& summary_csv);
// Writes render_curves_svg(curves_from_summary(summary_csv), title) to `svg_path` atomically.
void write_curves_svg(const std::string& summary_csv, const std::string& svg_path, const std::string& title);

}  // namespace mo::tools
