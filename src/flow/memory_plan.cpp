#include "flow/memory_plan.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "models/dit.h"
#include <malloc.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>

namespace oboro {

namespace {

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

struct Acc {
  WeightInfo w;
  std::set<std::string> dtypes;
  void add(const TensorInfo& ti) {
    w.params += shape_numel(ti.shape);
    w.file_bytes += ti.end - ti.begin;
    // Loading one tensor holds its mapped pages and its F32 copy at once (the pages are dropped after the copy).
    w.load_copy_bytes = std::max(w.load_copy_bytes, (ti.end - ti.begin) + (size_t)shape_numel(ti.shape) * sizeof(float));
    dtypes.insert(dtype_name(ti.dtype));
  }
  size_t quantized_floats = 0;  // of the layout's floats: held in `fmt` instead of F32
  WFormat fmt = WFormat::F32;
  WeightInfo done(size_t layout_floats) {
    w.resident_bytes = (layout_floats - quantized_floats) * sizeof(float) +
                       (size_t)((double)quantized_floats * wformat_bytes_per_weight(fmt));
    for (const auto& d : dtypes) w.dtypes += (w.dtypes.empty() ? "" : "+") + d;
    return w;
  }
};

T5Config t5_config_from(const TensorSource& src) {
  auto it = src.metadata().find("oboro.t5_config");
  if (it == src.metadata().end()) return T5Config::infer(src);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(it->second);
  } catch (const std::exception& e) {
    fail(src.path(), ": 'oboro.t5_config' metadata is not valid JSON: ", e.what());
  }
  return T5Config::from_json(j, src.path());
}

DiTConfig dit_config_from(const TensorSource& src) {
  auto it = src.metadata().find("oboro.config");
  if (it == src.metadata().end())
    fail(src.path(), ": no 'oboro.config' in the safetensors metadata — this is not an oboro DiT file "
                     "(a model file must carry its config; see `oboro info` and spec §9)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(it->second);
  } catch (const std::exception& e) {
    fail(src.path(), ": 'oboro.config' metadata is not valid JSON: ", e.what());
  }
  return DiTConfig::from_json(j, src.path());
}

// §8 name → name in the file, and the canonical shapes (as Vae::load maps them).
struct VaeNames {
  std::map<std::string, std::string> file_of;
  std::map<std::string, Shape> shapes;
};
VaeNames vae_names(const TensorSource& src) {
  VaeNames r;
  const auto names = src.names();
  int levels = 0;
  for (const auto& n : names) {
    const std::string pre = "decoder.up_blocks.";
    if (starts_with(n, pre.c_str())) {
      size_t e = n.find('.', pre.size());
      try {
        levels = std::max(levels, std::stoi(n.substr(pre.size(), e - pre.size())) + 1);
      } catch (...) {
      }
    }
  }
  for (const auto& n : names) {
    const std::string canon = vae_canonical_name(n, levels);
    r.file_of.emplace(canon, n);
    Shape s = src.info(n).shape;
    const bool attn = canon.find(".attn_1.") != std::string::npos &&
                      (canon.ends_with(".q.weight") || canon.ends_with(".k.weight") || canon.ends_with(".v.weight") ||
                       canon.ends_with(".proj_out.weight"));
    if (attn && s.size() == 2) s = {s[0], s[1], 1, 1};
    r.shapes[canon] = s;
  }
  return r;
}

std::string read_proc(const char* file, const char* key) {
  std::ifstream f(file);
  std::string line;
  const size_t n = std::strlen(key);
  while (std::getline(f, line))
    if (line.compare(0, n, key) == 0) return line.substr(n);
  return "";
}
size_t kb_field(const char* file, const char* key) {
  std::string v = read_proc(file, key);
  if (v.empty()) return 0;
  try {
    return (size_t)std::stoull(v) * 1024;
  } catch (...) {
    return 0;
  }
}

}  // namespace

T5Config t5_config_of(const std::string& path) { return t5_config_from(TensorSource::open(path)); }
DiTConfig dit_config_of(const std::string& path) { return dit_config_from(TensorSource::open(path)); }
VaeConfig vae_config_of(const std::string& path) {
  TensorSource src = TensorSource::open(path);
  return VaeConfig::infer(vae_names(src).shapes, src.path());
}

WeightInfo t5_weight_info(const std::string& path, std::optional<WFormat> fmt) {
  TensorSource src = TensorSource::open(path);
  const T5Config cfg = t5_config_from(src);
  const ParamLayout layout = t5_param_layout(cfg);
  Acc a;
  a.fmt = fmt ? *fmt : file_weight_format(src);
  if (a.fmt != WFormat::F32)
    for (const auto& v : layout.views())
      if (t5_quantizable(v.name)) a.quantized_floats += (size_t)shape_numel(v.shape);
  a.w.component = "T5 v1.1 encoder";
  a.w.path = src.path();
  for (const auto& v : layout.views()) {
    std::string n = v.name;
    if (n == "shared.weight" && !src.has(n)) n = "encoder.embed_tokens.weight";
    if (src.has(n)) a.add(src.info(n));
  }
  return a.done(layout.total());
}

WeightInfo dit_weight_info(const std::string& path, std::optional<WFormat> fmt) {
  TensorSource src = TensorSource::open(path);
  const ParamLayout layout = dit_param_layout(dit_config_from(src));
  Acc a;
  a.fmt = fmt ? *fmt : file_weight_format(src);
  if (a.fmt != WFormat::F32)
    for (const auto& v : layout.views())
      if (dit_quantizable(v.name)) a.quantized_floats += (size_t)shape_numel(v.shape);
  a.w.component = "DiT";
  a.w.path = src.path();
  for (const auto& v : layout.views())
    if (src.has(v.name)) a.add(src.info(v.name));
  return a.done(layout.total());
}

WeightInfo vae_weight_info(const std::string& path, WFormat fmt) {
  TensorSource src = TensorSource::open(path);
  const VaeNames vn = vae_names(src);
  const ParamLayout layout = vae_param_layout(VaeConfig::infer(vn.shapes, src.path()));
  Acc a;
  a.fmt = fmt;
  if (a.fmt != WFormat::F32)
    for (const auto& v : layout.views())
      if (vae_quantizable(v.name, v.shape)) a.quantized_floats += (size_t)shape_numel(v.shape);
  a.w.component = "VAE";
  a.w.path = src.path();
  for (const auto& v : layout.views()) {
    auto it = vn.file_of.find(v.name);
    if (it != vn.file_of.end()) a.add(src.info(it->second));
  }
  return a.done(layout.total());
}

// The models count their own plans (a dry run over the buffers forward() allocates): nothing is copied here.
size_t t5_activation_bytes(const T5Config& c, int B, int L) { return T5Encoder::activation_bytes(c, B, L, false); }

size_t dit_activation_bytes(const DiTConfig& c, int B, int L, int h, int w) {
  return DiT::activation_bytes(c, B, L, h, w, false);
}

size_t vae_pass_bytes(const VaeConfig& c, bool encoder, int h, int w, const VaeRunOptions& o, WFormat fmt) {
  if (!Vae::would_tile(c, encoder, h, w, o, fmt)) return Vae::activation_bytes(c, encoder, h, w, fmt);
  const int s = c.stride(), th = std::min(o.tile, h), tw = std::min(o.tile, w);
  const int Cin = encoder ? c.in_channels : c.z_channels, Cout = encoder ? c.z_channels : c.out_channels;
  const int iu = encoder ? s : 1, ou = encoder ? 1 : s;
  size_t b = Vae::activation_bytes(c, encoder, th, tw, fmt);
  b += ((size_t)Cin * th * iu * tw * iu + (size_t)Cout * th * ou * tw * ou) * sizeof(float);
  b += ((size_t)Cout * h * ou * w * ou + (size_t)h * ou + (size_t)w * ou) * sizeof(double);
  return b;
}

size_t MemoryPlan::peak() const {
  size_t m = 0;
  for (const auto& s : stages) m = std::max(m, s.total());
  return baseline + m;
}

int MemoryPlan::peak_stage() const {
  int best = -1;
  size_t m = 0;
  for (size_t i = 0; i < stages.size(); ++i)
    if (best < 0 || stages[i].total() > m) { m = stages[i].total(); best = (int)i; }
  return best;
}

std::string fmt_bytes(size_t b) {
  char buf[32];
  if (b >= (size_t(1) << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", b / 1073741824.0);
  else if (b >= (size_t(1) << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", b / 1048576.0);
  else std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  return buf;
}

std::string MemoryPlan::format() const {
  std::string o = "memory plan (" + shape + "; Linear weights held in the --type/--te-type format (else as stored), VAE conv weights in --vae-type (else F32), the rest as F32; each component loaded for its stage and "
                  "released after it):\n";
  char line[512];
  for (const auto& w : weights) {
    std::snprintf(line, sizeof line, "  %-16s %7.3fB params  file %10s (%s)  in memory %10s  %s\n", w.component.c_str(),
                  w.params / 1e9, fmt_bytes(w.file_bytes).c_str(), w.dtypes.c_str(), fmt_bytes(w.resident_bytes).c_str(),
                  w.path.c_str());
    o += line;
  }
  std::snprintf(line, sizeof line, "  %-44s %11s %11s %11s %11s\n", "stage", "weights", "activations", "buffers",
                "total");
  o += line;
  const int pk = peak_stage();
  for (size_t i = 0; i < stages.size(); ++i) {
    const auto& s = stages[i];
    std::snprintf(line, sizeof line, "  %-44s %11s %11s %11s %11s%s\n", s.name.c_str(), fmt_bytes(s.weights).c_str(),
                  fmt_bytes(s.activations).c_str(), fmt_bytes(s.buffers).c_str(), fmt_bytes(s.total()).c_str(),
                  (int)i == pk ? "  <- peak" : "");
    o += line;
  }
  std::snprintf(line, sizeof line, "  peak %s (stage total + %s already held by the process); budget %s (%s): %s\n",
                fmt_bytes(peak()).c_str(), fmt_bytes(baseline).c_str(), fmt_bytes(budget).c_str(),
                budget_source.c_str(), fits() ? "fits" : "DOES NOT FIT");
  o += line;
  return o;
}

std::string MemoryPlan::refusal() const {
  const int pk = peak_stage();
  const PlanStage* s = pk >= 0 ? &stages[pk] : nullptr;
  const WeightInfo* big = nullptr;
  for (const auto& w : weights)
    if (!big || w.resident_bytes > big->resident_bytes) big = &w;
  std::string m = str("not enough memory: the run needs ", fmt_bytes(peak()), " at its peak");
  if (s) m += str(" (stage '", s->name, "': weights ", fmt_bytes(s->weights), ", activations ", fmt_bytes(s->activations),
                  ", buffers ", fmt_bytes(s->buffers), ")");
  m += str(" but the budget is ", fmt_bytes(budget), " (", budget_source, ")");
  if (big) m += str("; the biggest component is the ", big->component, " (", fmt_bytes(big->resident_bytes), " as F32, ",
                    big->path, ")");
  std::string fix;
  if (s && s->component == "VAE")
    fix = "tile the VAE (--vae-tiling, smaller --vae-tile), hold its conv weights as --vae-type bf16, or generate "
          "fewer pixels (--size)";
  else if (s && s->component == "DiT")
    fix = "generate fewer pixels (--size, a smaller --hr-scale) or fewer images per batch (--batch-size 1), or store "
          "the DiT in a smaller weight format (--type bf16 halves it, --type q8_0 about a quarter; see docs/formats.md)";
  else
    fix = "hold the T5 in a smaller weight format (--te-type bf16 halves it, --te-type q8_0 about a quarter; or convert "
          "it once with `oboro convert --type q8_0`) or use a machine with more memory; only this stage holds the T5 (it is released before the DiT loads)";
  m += str(". Fix: ", fix, "; or raise the budget with --max-memory SIZE if more memory is really free "
                          "(--memory-plan prints the whole plan, --no-memory-check skips this check)");
  return m;
}

size_t current_rss_bytes() { return kb_field("/proc/self/status", "VmRSS:"); }
size_t peak_rss_bytes() { return kb_field("/proc/self/status", "VmHWM:"); }
void reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  if (f) f << "5";
}
size_t mem_available_bytes() { return kb_field("/proc/meminfo", "MemAvailable:"); }
void trim_heap() { ::malloc_trim(0); }

size_t parse_bytes(const std::string& s, const std::string& what) {
  double v = 0;
  char unit[8] = {0};
  int n = std::sscanf(s.c_str(), "%lf%7s", &v, unit);
  std::string u = unit;
  for (auto& ch : u) ch = (char)std::toupper((unsigned char)ch);
  double mul = 0;
  if (n == 1 || u == "B") mul = 1;
  else if (u == "K" || u == "KB" || u == "KIB") mul = 1024.0;
  else if (u == "M" || u == "MB" || u == "MIB") mul = 1048576.0;
  else if (u == "G" || u == "GB" || u == "GIB") mul = 1073741824.0;
  else if (u == "T" || u == "TB" || u == "TIB") mul = 1099511627776.0;
  if (n < 1 || mul == 0 || !(v > 0) || !std::isfinite(v) || v * mul >= 9.2e18)  // (size_t) of more: undefined
    fail(what, " '", s, "': give a size like 6G, 6GiB, 512M or a number of bytes");
  return (size_t)(v * mul);
}

}  // namespace oboro
