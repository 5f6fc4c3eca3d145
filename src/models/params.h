// Flat parameter storage with named views (llm.c style): one buffer for weights, one for
// gradients, optimizer state later mirrors the same layout. Views are in declaration order.
#pragma once
#include "core/tensor.h"
#include <map>
#include <string>
#include <vector>

namespace oboro {

class Backend;
class TensorSource;

struct ParamView {
  std::string name;
  Shape shape;
  size_t offset = 0;  // in floats, into the flat buffer
  size_t numel() const { return (size_t)shape_numel(shape); }
};

class ParamLayout {
 public:
  void add(const std::string& name, const Shape& shape);
  const std::vector<ParamView>& views() const { return views_; }
  size_t total() const { return total_; }
  const ParamView* find(const std::string& name) const;
  const ParamView& at(const std::string& name) const;

 private:
  std::vector<ParamView> views_;
  std::map<std::string, size_t> index_;
  size_t total_ = 0;
};

// Load every view of `layout` from `src` into the backend buffer `dst` (converting to F32).
// Fails with one line naming the file and tensor on: a missing tensor, a wrong shape, a
// tensor in the file that the layout does not know (unknown key).
void load_params(const ParamLayout& layout, float* dst, Backend& be, const TensorSource& src, const std::string& what);

// Host copies of each view (for saving), in layout order.
std::vector<std::pair<std::string, Tensor>> download_params(const ParamLayout& layout, const float* src, Backend& be);

}  // namespace oboro
