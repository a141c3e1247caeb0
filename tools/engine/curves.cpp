// curves.cpp: a small SVG plotter (nice ticks, polylines, legends) and summary.csv parsing for curves.svg.
#include "tools/engine/curves.h"

#include "autograd/parse.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "autograd/check.h"
#include "tools/engine/checkpoint.h"  // temp_file_name

namespace mo::tools {
namespace {

constexpr double kPanelW = 520, kPanelH = 300, kLeft = 78, kRight = 16, kTop = 34, kBottom = 46, kHead = 40;
const char* const kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"};

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&apos;"; break;
      default:
        // XML 1.0 forbids most control characters, even escaped.
        if (static_cast<unsigned char>(c) >= 0x20 || c == '\t' || c == '\n') o += c;
    }
  }
  return o;
}

// Ticks at multiples of 1, 2 or 5 x 10^k covering [lo, hi], about `want` of them.
std::vector<double> nice_ticks(double lo, double hi, int want) {
  const double raw = (hi - lo) / want, mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step)
    t.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
  return t;
}

std::string tick_text(double v) { return fmt::format("{:.4g}", v); }

void draw_panel(std::string& o, const CurvePanel& p, double x0, double y0) {
  const double w = kPanelW - kLeft - kRight, h = kPanelH - kTop - kBottom, ax = x0 + kLeft, ay = y0 + kTop;
  o += fmt::format("<g class=\"panel\" data-title=\"{}\">\n", esc(p.title));
  o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"15\" font-weight=\"bold\">{}</text>\n", ax, y0 + 22,
                   esc(p.title));
  double xlo = 1e300, xhi = -1e300, ylo = 1e300, yhi = -1e300;
  for (const auto& s : p.series)
    for (auto [x, y] : s.points) xlo = std::min(xlo, x), xhi = std::max(xhi, x), ylo = std::min(ylo, y), yhi = std::max(yhi, y);
  o += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"#ffffff\" "
                   "stroke=\"#444444\"/>\n", ax, ay, w, h);
  if (xlo > xhi) {
    o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\" fill=\"#888888\">no data yet</text>\n</g>\n",
                     ax + w / 2, ay + h / 2);
    return;
  }
  if (xhi - xlo < 1) xlo -= 0.5, xhi += 0.5;  // one epoch: centred
  if (yhi - ylo < 1e-12 * std::max(1.0, std::abs(yhi))) {
    const double pad = std::max(std::abs(yhi) * 0.05, 1e-12);
    ylo -= pad, yhi += pad;
  }
  const double ypad = (yhi - ylo) * 0.05;
  ylo -= ypad, yhi += ypad;
  auto X = [&](double x) { return ax + (x - xlo) / (xhi - xlo) * w; };
  auto Y = [&](double y) { return ay + h - (y - ylo) / (yhi - ylo) * h; };
  for (double t : nice_ticks(ylo, yhi, 5)) {
    o += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#dddddd\"/>\n", ax, Y(t),
                     ax + w, Y(t));
    o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"end\">{}</text>\n", ax - 5,
                     Y(t) + 4, esc(tick_text(t)));
  }
  for (double t : nice_ticks(xlo, xhi, 6)) {
    if (std::abs(t - std::round(t)) > 1e-9) continue;  // epochs are whole numbers
    o += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#444444\"/>\n", X(t),
                     ay + h, X(t), ay + h + 5);
    o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\n", X(t),
                     ay + h + 18, esc(tick_text(t)));
  }
  o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"12\" text-anchor=\"middle\">epoch</text>\n", ax + w / 2,
                   ay + h + 36);
  int k = 0;
  std::string legend;
  for (const auto& s : p.series) {
    if (s.points.empty()) continue;
    const char* colour = kColours[k % 5];
    std::string pts, values;
    for (auto [x, y] : s.points) {
      pts += fmt::format("{}{:.2f},{:.2f}", pts.empty() ? "" : " ", X(x), Y(y));
      values += fmt::format("{}{}:{}", values.empty() ? "" : " ", x, y);
    }
    o += fmt::format("<g class=\"series\" data-name=\"{}\" data-values=\"{}\">\n", esc(s.name), esc(values));
    o += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n", colour, pts);
    for (auto [x, y] : s.points)
      o += fmt::format("<circle cx=\"{:.2f}\" cy=\"{:.2f}\" r=\"2.5\" fill=\"{}\"/>\n", X(x), Y(y), colour);
    o += "</g>\n";
    const double ly = ay + 18 + 16 * k;
    legend += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"{}\" "
                          "stroke-width=\"2\"/>\n", ax + w - 130, ly - 4, ax + w - 112, ly - 4, colour);
    legend += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\">{}</text>\n", ax + w - 108, ly,
                          esc(s.name));
    ++k;
  }
  // The legend on a light box over the curves.
  o += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"126\" height=\"{}\" fill=\"#ffffff\" "
                   "fill-opacity=\"0.85\" stroke=\"#cccccc\"/>\n", ax + w - 136, ay + 6, 16 * k + 4);
  o += legend + "</g>\n";
}

}  // namespace

std::string render_curves_svg(const std::vector<CurvePanel>& panels, const std::string& title) {
  const int64_t rows = (static_cast<int64_t>(panels.size()) + 1) / 2;
  const double W = 2 * kPanelW, H = kHead + static_cast<double>(rows) * kPanelH;
  std::string o = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  o += fmt::format("<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{:.0f}\" height=\"{:.0f}\" "
                   "viewBox=\"0 0 {:.0f} {:.0f}\" font-family=\"sans-serif\">\n", W, H, W, H);
  o += fmt::format("<rect width=\"{:.0f}\" height=\"{:.0f}\" fill=\"#f7f7f7\"/>\n", W, H);
  o += fmt::format("<text x=\"16\" y=\"26\" font-size=\"17\">{}</text>\n", esc(title));
  for (size_t i = 0; i < panels.size(); ++i)
    draw_panel(o, panels[i], static_cast<double>(i % 2) * kPanelW, kHead + static_cast<double>(i / 2) * kPanelH);
  return o + "</svg>\n";
}

std::vector<CurvePanel> curves_from_summary(const std::string& summary_csv) {
  std::ifstream in(summary_csv);
  MO_CHECK(in.good(), "cannot read '{}' for the curves", summary_csv);
  std::string line;
  std::vector<std::string> header;
  std::map<std::string, std::vector<std::pair<double, double>>> cols;
  auto split = [](const std::string& l) {
    std::vector<std::string> f;
    std::stringstream ss(l);
    std::string x;
    while (std::getline(ss, x, ',')) f.push_back(x);
    if (!l.empty() && l.back() == ',') f.emplace_back();
    return f;
  };
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::vector<std::string> f = split(line);
    if (header.empty()) {
      header = f;
      continue;
    }
    const std::optional<double> epoch = parse_float(f[0]);
    if (!epoch) continue;
    for (size_t i = 1; i < f.size() && i < header.size(); ++i)
      if (const std::optional<double> v = parse_float(f[i])) cols[header[i]].emplace_back(*epoch, *v);
  }
  auto series = [&](const std::string& name) { return CurveSeries{name, cols[name]}; };
  return {{"loss", {series("train_loss"), series("eval_loss"), series("eval_loss_ema")}},
          {"top-1 accuracy (%)", {series("eval_top1"), series("eval_top1_ema")}},
          {"learning rate", {series("lr")}},
          {"images/s", {series("images_per_s")}}};
}

void write_curves_svg(const std::string& summary_csv, const std::string& svg_path, const std::string& title) {
  const std::string svg = render_curves_svg(curves_from_summary(summary_csv), title), tmp = temp_file_name(svg_path);
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << svg;
    out.flush();
    MO_CHECK(out.good(), "cannot write '{}'", tmp);
  }
  MO_CHECK(std::rename(tmp.c_str(), svg_path.c_str()) == 0, "cannot rename '{}' to '{}': {}", tmp, svg_path,
           std::strerror(errno));
}

}  // namespace mo::tools
