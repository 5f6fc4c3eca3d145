#include "cli/bench_util.h"
#include "core/error.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "models/params.h"
#include <cmath>
#include <cstring>
#include <deque>
#include <sys/stat.h>
#include <algorithm>
#include <cstdlib>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

namespace oboro::cli {
namespace {
size_t status_kb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t n = std::char_traits<char>::length(key);
  while (std::getline(f, line))
    if (line.compare(0, n, key) == 0) return std::stoull(line.substr(n)) * 1024;
  return 0;
}
std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}
}  // namespace

double bench_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
size_t peak_rss_bytes() { return status_kb("VmHWM:"); }
size_t current_rss_bytes() { return status_kb("VmRSS:"); }
bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  if (!f) return false;
  f << "5";
  f.flush();
  return (bool)f;
}
std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

double sgemm_peak_gflops(Backend& be, int n) {
  std::vector<float> a((size_t)n * n), b((size_t)n * n);
  fill_normal(a.data(), (int64_t)a.size(), 1);
  fill_normal(b.data(), (int64_t)b.size(), 2);
  Buffer ab = upload_new(be, a, "sgemm.a"), bb = upload_new(be, b, "sgemm.b"), cb = be.alloc(a.size(), DType::F32, "sgemm.c");
  double best = 1e30;
  for (int r = 0; r < 4; ++r) {
    double t0 = bench_now();
    be.linear_forward(cb.f32(), ab.f32(), bb.f32(), nullptr, n, n, n);
    double dt = bench_now() - t0;
    if (r > 0) best = std::min(best, dt);  // the first call warms up the threads
  }
  return 2.0 * n * n * n / best / 1e9;
}

void require_python_torch(const std::string& python) {
  struct stat st;
  if (python.find('/') != std::string::npos && stat(python.c_str(), &st) != 0)
    fail("--compare-torch needs Python 3 with PyTorch: ", python,
         " does not exist (install them with `apt install python3 python3-torch`, or give --python PATH)");
  const std::string cmd = quote(python) + " -c 'import torch' >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0)
    fail("--compare-torch needs PyTorch: `", python,
         " -c 'import torch'` failed (install it with `apt install python3-torch`, or give --python PATH)");
}

nlohmann::json run_twin_script(const std::string& python, const std::string& script, const std::string& args,
                               const char* what) {
  struct stat st;
  if (stat(script.c_str(), &st) != 0) fail(what, ": script ", script, " not found (give --twin-script PATH)");
  const std::string cmd = quote(python) + " " + quote(script) + " " + args;
  std::fprintf(stderr, "  %s: %s\n", what, cmd.c_str());
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) fail("could not start ", what, ": ", cmd);
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, f)) out.append(buf, n);
  const int rc = pclose(f);
  if (rc != 0) fail(what, " failed (exit status ", rc, "): ", cmd);
  const size_t at = out.rfind("\n{");
  const size_t start = at == std::string::npos ? out.find('{') : at + 1;
  if (start == std::string::npos) fail(what, " printed no JSON object: ", cmd);
  try {
    return nlohmann::json::parse(out.substr(start));
  } catch (const std::exception& e) {
    fail(what, " printed invalid JSON (", e.what(), "): ", cmd);
  }
  return {};
}

// Random T5 weights written directly in `fmt` (the quantisable Linear weights; the rest F32), tensor by tensor,
// with the same scales as T5Encoder::init_weights (t5_init_stddev; norms 1), drawn from other RNG streams.
void write_t5_quantized(const std::string& path, const T5Config& c, WFormat fmt,
                        const std::map<std::string, std::string>& meta) {
  const ParamLayout layout = t5_param_layout(c);
  std::deque<Tensor> keep;
  SafetensorsWriter wr;
  std::vector<float> host;
  uint64_t k = 0;
  for (const auto& v : layout.views()) {
    host.assign(v.numel(), 1.f);
    if (v.shape.size() == 2) {
      const double sd = t5_init_stddev(c, v.name);
      fill_normal(host.data(), (int64_t)host.size(), 1, ++k);
      for (float& x : host) x = (float)(x * sd);
    }
    if (v.shape.size() == 2 && t5_quantizable(v.name) && fmt != WFormat::F32) {
      QuantizedWeight q = quantize_weight(host.data(), (int)v.shape[0], (int)v.shape[1], fmt, v.name);
      keep.push_back(q.data);
      wr.add(v.name, keep.back());
      if (q.scale.defined() && q.scale.numel() && fmt != WFormat::BF16 && fmt != WFormat::F16) {
        keep.push_back(q.scale);
        wr.add(scale_companion(v.name), keep.back());
      }
    } else {
      keep.push_back(Tensor::from_f32(host, v.shape));
      wr.add(v.name, keep.back());
    }
  }
  for (const auto& [key, val] : meta) wr.set_metadata(key, val);
  wr.set_metadata(kWeightFormatKey, wformat_name(fmt));
  wr.write(path);
}

}  // namespace oboro::cli
