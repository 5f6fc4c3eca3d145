#include "train/plot.h"
#include <algorithm>
#include <cmath>
#include <cstdio>

namespace oboro {

std::string plot_loss_svg(const std::vector<std::pair<double, double>>& pts, const std::string& title,
                          const std::vector<std::pair<double, std::string>>& marks) {
  const double W = 720, H = 400, L = 70, R = 20, T = 40, B = 50;
  double x0 = pts.front().first, x1 = pts.back().first;
  if (x1 <= x0) x1 = x0 + 1;
  // y range from the 1st to 99th percentile so one spike does not flatten the curve
  std::vector<double> ys;
  for (auto& p : pts) if (std::isfinite(p.second)) ys.push_back(p.second);
  std::sort(ys.begin(), ys.end());
  double y0 = ys.empty() ? 0 : ys[ys.size() / 100], y1 = ys.empty() ? 1 : ys[ys.size() - 1 - ys.size() / 100];
  if (y1 <= y0) y1 = y0 + 1e-6;
  double pad = (y1 - y0) * 0.05;
  y0 = std::max(0.0, y0 - pad);
  y1 += pad;
  auto X = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto Y = [&](double y) { return T + (1 - (std::min(std::max(y, y0), y1) - y0) / (y1 - y0)) * (H - T - B); };
  std::string s;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" font-family=\"sans-serif\" "
                "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H);
  s += buf;
  std::snprintf(buf, sizeof buf, "<text x=\"%g\" y=\"24\" font-size=\"15\">%s</text>\n", L, title.c_str());
  s += buf;
  for (int i = 0; i <= 5; ++i) {  // ticks
    double yv = y0 + (y1 - y0) * i / 5, xv = x0 + (x1 - x0) * i / 5;
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"%g\" y=\"%.1f\" "
                  "text-anchor=\"end\">%.4g</text>\n",
                  L, Y(yv), W - R, Y(yv), L - 6, Y(yv) + 4, yv);
    s += buf;
    std::snprintf(buf, sizeof buf, "<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">%.0f</text>\n", X(xv), H - B + 18, xv);
    s += buf;
  }
  std::snprintf(buf, sizeof buf,
                "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">step</text><text x=\"16\" y=\"%g\" "
                "transform=\"rotate(-90 16 %g)\" text-anchor=\"middle\">loss</text>\n",
                (L + W - R) / 2, H - 10, (T + H - B) / 2, (T + H - B) / 2);
  s += buf;
  std::snprintf(buf, sizeof buf, "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"#333\"/>\n",
                L, T, W - L - R, H - T - B);
  s += buf;
  auto polyline = [&](const std::vector<std::pair<double, double>>& p, const char* colour, double width) {
    s += "<polyline fill=\"none\" stroke=\"" + std::string(colour) + "\" stroke-width=\"" + std::to_string(width) + "\" points=\"";
    size_t stride = std::max<size_t>(1, p.size() / 2000);
    for (size_t i = 0; i < p.size(); i += stride) {
      std::snprintf(buf, sizeof buf, "%.1f,%.1f ", X(p[i].first), Y(p[i].second));
      s += buf;
    }
    s += "\"/>\n";
  };
  polyline(pts, "#9ecae1", 1);
  std::vector<std::pair<double, double>> avg;  // moving average over ~2% of the run
  size_t win = std::max<size_t>(1, pts.size() / 50);
  double acc = 0;
  for (size_t i = 0; i < pts.size(); ++i) {
    acc += pts[i].second;
    if (i >= win) acc -= pts[i - win].second;
    avg.emplace_back(pts[i].first, acc / (double)std::min(i + 1, win));
  }
  polyline(avg, "#08519c", 2);
  for (const auto& [step, label] : marks) {
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%g\" x2=\"%.1f\" y2=\"%g\" stroke=\"#d62728\" stroke-dasharray=\"4 3\"/>"
                  "<text x=\"%.1f\" y=\"%g\" fill=\"#d62728\" font-size=\"10\">%s %.0f</text>\n",
                  X(step), T, X(step), H - B, X(step) + 3, T + 12, label.c_str(), step);
    s += buf;
  }
  s += "</svg>\n";
  return s;
}

}  // namespace oboro
