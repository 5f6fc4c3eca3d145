// Loss curve as a self-contained SVG (axes, ticks, raw loss and a moving average).
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace oboro {
// `marks`: steps marked with a red dashed vertical line and a label (loss-spike rollbacks: "rollback").
std::string plot_loss_svg(const std::vector<std::pair<double, double>>& step_loss, const std::string& title,
                          const std::vector<std::pair<double, std::string>>& marks = {});
}  // namespace oboro
