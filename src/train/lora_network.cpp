#include "train/lora_network.h"
#include "core/error.h"
#include "core/rng.h"
#include "train/train_config.h"
#include <nlohmann/json.hpp>
#include <algorithm>
#include <cmath>
#include <sstream>

namespace oboro {

namespace {

lora::Family family_named(const std::string& n, const std::string& arg) {
  for (lora::Family f : {lora::Family::Attention, lora::Family::FeedForward, lora::Family::Modulation,
                         lora::Family::Embedder, lora::Family::Final})
    if (n == lora::family_name(f)) return f;
  if (n == "ffn" || n == "swiglu" || n == "mlp") return lora::Family::FeedForward;
  if (n == "adaln" || n == "adaLN") return lora::Family::Modulation;
  if (n == "embedders") return lora::Family::Embedder;
  fail("network_args '", arg, "': unknown target '", n,
       "': choose from attention, feed_forward, modulation, embedder, final (comma-separated)");
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

int parse_block(const std::string& s, const std::string& arg) {
  size_t used = 0;
  int v = -1;
  try { v = std::stoi(s, &used); } catch (...) { used = 0; }
  if (used != s.size() || v < 0) fail("network_args '", arg, "': '", s, "' is not a block index (e.g. blocks=0-3,6)");
  return v;
}

}  // namespace

// ---------------------------------------------------------------- settings

LoraSettings LoraSettings::from_config(const TrainConfig& cfg) {
  LoraSettings s;
  s.dim = cfg.network_dim;
  s.alpha = cfg.network_alpha > 0 ? cfg.network_alpha : (float)cfg.network_dim;
  for (const std::string& arg : cfg.network_args) {
    const size_t eq = arg.find('=');
    if (eq == std::string::npos) fail("network_args '", arg, "': expected key=value (targets=… or blocks=…)");
    const std::string key = arg.substr(0, eq), value = arg.substr(eq + 1);
    if (key == "targets") {
      for (const std::string& t : split(value, ',')) {
        const lora::Family f = family_named(t, arg);
        if (std::find(s.families.begin(), s.families.end(), f) == s.families.end()) s.families.push_back(f);
      }
      if (s.families.empty()) fail("network_args '", arg, "': no target given");
    } else if (key == "blocks") {
      for (const std::string& r : split(value, ',')) {
        const size_t dash = r.find('-');
        const int a = parse_block(r.substr(0, dash), arg), b = dash == std::string::npos ? a : parse_block(r.substr(dash + 1), arg);
        if (b < a) fail("network_args '", arg, "': range ", r, " is backwards");
        s.blocks.push_back({a, b});
      }
    } else {
      fail("network_args '", arg, "': unknown key '", key, "' (oboro's LoRA takes targets=… and blocks=…)");
    }
  }
  if (s.families.empty()) s.families = {lora::Family::Attention, lora::Family::FeedForward};
  return s;
}

bool LoraSettings::targets(const std::string& tensor) const {
  const lora::TensorPlace p = lora::place_of(tensor);
  if (std::find(families.begin(), families.end(), p.family) == families.end()) return false;
  if (p.block < 0 || blocks.empty()) return true;
  for (auto [a, b] : blocks)
    if (p.block >= a && p.block <= b) return true;
  return false;
}

std::string LoraSettings::args_json() const {
  std::string t, b;
  for (lora::Family f : families) {
    if (!t.empty()) t.push_back(',');
    t.append(lora::family_name(f));
  }
  for (auto [x, y] : blocks) {
    if (!b.empty()) b.push_back(',');
    b.append(x == y ? std::to_string(x) : str(x, "-", y));
  }
  nlohmann::json j = {{"targets", t}};
  if (!b.empty()) j["blocks"] = b;
  return j.dump();
}

// ---------------------------------------------------------------- the network

LoraNetwork::LoraNetwork(const DiT& dit, const LoraSettings& s, uint64_t seed) : be_(dit.backend()), s_(s) {
  if (s.dim < 1) fail("network_dim must be at least 1, got ", s.dim);
  const int r = s.dim;
  const ParamLayout dit_layout = dit_param_layout(dit.config());  // every tensor (also quantised ones)
  for (const ParamView& v : dit_layout.views()) {
    if (v.shape.size() != 2 || v.name.size() < 7 || v.name.substr(v.name.size() - 7) != ".weight") continue;
    if (!s.targets(v.name)) continue;
    Module m;
    m.tensor = v.name;
    m.N = (int)v.shape[0];
    m.K = (int)v.shape[1];
    const std::string stem = lora::module_of(v.name);
    layout_.add(stem + ".lora_down.weight", {r, m.K});
    layout_.add(stem + ".lora_up.weight", {m.N, r});
    m.down = layout_.at(stem + ".lora_down.weight").offset;
    m.up = layout_.at(stem + ".lora_up.weight").offset;
    by_tensor_[m.tensor] = mods_.size();
    mods_.push_back(std::move(m));
  }
  if (mods_.empty())
    fail("network_args selects no DiT weight (targets ", s.args_json(), "): widen targets= or blocks= (the model has ",
         dit.config().layers(), " blocks, 0-", dit.config().layers() - 1, ")");
  // down ~ U(−1/√K, 1/√K) (kaiming_uniform_ with a = √5), up = 0.
  std::vector<float> host(layout_.total(), 0.f);
  for (size_t i = 0; i < mods_.size(); ++i) {
    const Module& m = mods_[i];
    const float bound = 1.f / std::sqrt((float)m.K);
    fill_uniform(host.data() + m.down, (int64_t)r * m.K, seed, 0x10a0 + i, 0, -bound, bound);
  }
  params_ = upload_new(be_, host, "lora.params");
  grads_ = be_.alloc(layout_.total(), DType::F32, "lora.grads");
}

void LoraNetwork::load_weights(const std::string& path, const DiT& dit) {
  const lora::LoraFile f = lora::read_lora(path, lora::LoraKeyMap::from_layout(dit_param_layout(dit.config())));
  for (const lora::LoraModule& lm : f.modules) {
    auto it = by_tensor_.find(lm.tensor);
    if (it == by_tensor_.end())
      fail("network_weights ", path, ": ", lm.key, " adapts ", lm.tensor, ", which network_args does not target (",
           s_.args_json(), "): widen targets=/blocks=");
    if (lm.rank() != s_.dim)
      fail("network_weights ", path, ": ", lm.key, " has rank ", lm.rank(), " but network_dim is ", s_.dim);
    if (std::fabs(lm.alpha - s_.alpha) > 1e-6f * std::max(1.f, s_.alpha))
      fail("network_weights ", path, ": ", lm.key, " has alpha ", lm.alpha, " but network_alpha resolves to ", s_.alpha,
           ": set network_alpha to the file's");
    const Module& m = mods_[it->second];
    be_.upload(params_.f32() + m.down, lm.down.f32(), (size_t)s_.dim * m.K);
    be_.upload(params_.f32() + m.up, lm.up.f32(), (size_t)m.N * s_.dim);
  }
  std::fprintf(stderr, "network_weights: continued %zu of %zu LoRA modules from %s\n", f.modules.size(), mods_.size(),
               path.c_str());
}

void LoraNetwork::zero_grads() { be_.zero(grads_.f32(), grads_.size()); }

std::vector<lora::LoraWriteModule> LoraNetwork::write_modules() const {
  const std::vector<float> host = download_all(params_);
  std::vector<lora::LoraWriteModule> out;
  const int r = s_.dim;
  for (const Module& m : mods_) {
    lora::LoraWriteModule w;
    w.tensor = m.tensor;
    w.down = Tensor::empty({r, m.K}, DType::F32);
    w.up = Tensor::empty({m.N, r}, DType::F32);
    std::copy_n(host.data() + m.down, (size_t)r * m.K, w.down.f32());
    std::copy_n(host.data() + m.up, (size_t)m.N * r, w.up.f32());
    w.alpha = s_.alpha;
    out.push_back(std::move(w));
  }
  return out;
}

LoraNetwork::Module* LoraNetwork::find(const std::string& tensor, int K) {
  auto it = by_tensor_.find(tensor);
  if (it == by_tensor_.end()) return nullptr;
  Module& m = mods_[it->second];
  if (m.K != K) fail("internal error: LoRA module ", tensor, " has K ", m.K, " but the DiT passes ", K);
  return &m;
}

float* LoraNetwork::scratch(Buffer& b, size_t n, const char* what) {
  if (b.size() < n) b = be_.alloc(n, DType::F32, what);
  return b.f32();
}

// zs (M, r) = alpha/dim · x·downᵀ; each part p: y_p (M, N_p) += zs·up_pᵀ, up_p the rows of up at the part's offset.
void LoraNetwork::forward(const std::string& tensor, const float* x, int M, int K, std::initializer_list<Part> outs,
                          bool training) {
  Module* m = find(tensor, K);
  if (!m) return;
  const int r = s_.dim;
  const size_t mr = (size_t)M * r;
  float* zs = scratch(zs_, mr, "lora.zs");
  if (training) {
    if (m->zs_rows != M) { m->zs = be_.alloc(mr, DType::F32, "lora.zs"); m->zs_rows = M; }
    zs = m->zs.f32();
  }
  float* z = scratch(z_, mr, "lora.z");
  be_.linear_forward(z, x, params_.f32() + m->down, nullptr, M, K, r);
  be_.zero(zs, mr);
  be_.axpy(zs, z, s_.scale(), mr);
  int row = 0;
  for (const Part& p : outs) {
    float* tmp = scratch(tmp_, (size_t)M * p.N, "lora.tmp");
    be_.linear_forward(tmp, zs, params_.f32() + m->up + (size_t)row * r, nullptr, M, r, p.N);
    be_.add_inplace(p.y, tmp, (size_t)M * p.N);
    row += p.N;
  }
  if (row != m->N) fail("internal error: LoRA module ", tensor, " has ", m->N, " rows but the DiT passes ", row);
}

// dzs = Σ_p dy_p·up_p, d_up_p += dy_pᵀ·zs; dz = alpha/dim · dzs; d_down += dzᵀ·x; dx += dz·down.
void LoraNetwork::backward(const std::string& tensor, float* dx, const float* x, int M, int K,
                           std::initializer_list<DPart> douts) {
  Module* m = find(tensor, K);
  if (!m) return;
  if (m->zs_rows != M) fail("internal error: LoRA backward of ", tensor, " without its training forward");
  const int r = s_.dim;
  const size_t mr = (size_t)M * r;
  float* dzs = scratch(dzs_, mr, "lora.dzs");
  float* dz = scratch(dz_, mr, "lora.dz");
  be_.zero(dzs, mr);
  int row = 0;
  for (const DPart& p : douts) {
    const size_t up = m->up + (size_t)row * r;
    be_.linear_backward(dzs, grads_.f32() + up, nullptr, p.dy, m->zs.f32(), params_.f32() + up, M, r, p.N);
    row += p.N;
  }
  be_.zero(dz, mr);
  be_.axpy(dz, dzs, s_.scale(), mr);
  be_.linear_backward(dx, grads_.f32() + m->down, nullptr, dz, x, params_.f32() + m->down, M, K, r);
}

}  // namespace oboro
