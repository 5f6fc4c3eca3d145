// safetensors reader (mmap + full validation), sharded checkpoints, atomic writer.
//
// Reader guarantees: every structural problem in a file is reported as one oboro::Error whose
// single-line message starts with the file path (or the label given to from_bytes), names the
// tensor involved and says what is wrong. After a successful parse every tensor's byte range
// lies inside the data section, so tensor() never reads outside the file image.
//
// Views: tensor() returns a zero-copy view into the read-only mapping. The view holds a
// shared_ptr to its SafetensorsFile, so the mapping outlives the SafetensorsFile handle the
// caller holds. The mapping is PROT_READ: writing through a view is a bug (clone() first).
// safetensors does not align tensor data; a view whose address is not a multiple of its
// element size (e.g. an F32 tensor at an odd offset) is returned as an aligned owned copy
// instead, so typed access through data<T>() is always well-defined.
#include "io/safetensors.h"

#include "core/error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <system_error>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace oboro {

using json = nlohmann::json;

namespace {

constexpr uint64_t kMaxHeader = 100ull * 1000 * 1000;  // 100 MB, as the reference implementation
constexpr size_t kMaxRank = 64;
constexpr int kMaxJsonDepth = 64;

const DType kAllDTypes[] = {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::F64, DType::I64,
                            DType::I32, DType::I16, DType::I8,   DType::U8,      DType::BOOL};

std::string errno_text(int e) { return std::system_category().message(e); }

// Quote a user-controlled string for a one-line message: control bytes escaped, length capped.
std::string quote(const std::string& s, size_t cap = 160) {
  std::string r = "\"";
  size_t n = std::min(s.size(), cap);
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') { r += '\\'; r += (char)c; }
    else if (c == '\n') r += "\\n";
    else if (c == '\r') r += "\\r";
    else if (c == '\t') r += "\\t";
    else if (c < 0x20 || c == 0x7f) { char b[8]; std::snprintf(b, sizeof b, "\\x%02x", c); r += b; }
    else r += (char)c;
  }
  if (s.size() > cap) r += "...";
  return r + "\"";
}

// Make a third-party message safe for a one-line error.
std::string one_line(std::string s) {
  for (char& c : s)
    if ((unsigned char)c < 0x20 || c == 0x7f) c = ' ';
  if (s.size() > 300) s = s.substr(0, 300) + "...";
  return s;
}

std::string known_dtypes() {
  std::string r;
  for (DType t : kAllDTypes) r += (r.empty() ? "" : ", ") + std::string(dtype_name(t));
  return r;
}

std::string json_kind(const json& j) {
  if (j.is_number_float()) return "a non-integer number";
  if (j.is_number_integer()) return "an integer";
  return std::string("a JSON ") + j.type_name();
}

std::string offsets_str(uint64_t b, uint64_t e) { return str("[", b, ", ", e, "]"); }

// Edit distance, capped work: used only on the error path to suggest names.
size_t edit_distance(const std::string& a, const std::string& b) {
  if (a.size() > 256 || b.size() > 256) return std::max(a.size(), b.size());
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// " (did you mean "x"?)" or a hint about how many tensors there are.
std::string suggest(const std::string& name, const std::vector<std::string>& names) {
  if (names.empty()) return " (it holds no tensors)";
  size_t best = std::numeric_limits<size_t>::max();
  const std::string* pick = nullptr;
  size_t budget = 20000;  // bound the work on huge checkpoints
  for (const auto& n : names) {
    if (budget-- == 0) break;
    size_t d = edit_distance(name, n);
    if (d < best) { best = d; pick = &n; }
  }
  std::string r = str(" (it holds ", names.size(), " tensor", names.size() == 1 ? "" : "s");
  if (pick && best <= std::max<size_t>(3, name.size() / 3)) r += "; did you mean " + quote(*pick) + "?";
  return r + ")";
}

// Parse JSON from [b, e). Duplicate object keys are rejected (JSON parsers disagree on which
// one wins, so a file that relies on either is ambiguous). On failure throws with `where`
// as prefix.
json parse_json_strict(const char* b, const char* e, const std::string& where, const std::string& what) {
  struct State {
    std::vector<std::set<std::string>> keys;  // keys seen in each open object
    std::string top_key;                       // current key of the outermost object
    bool dup = false;
    std::string dup_key, dup_top;
    size_t dup_level = 0;
  } st;
  struct TooDeep {};
  json::parser_callback_t cb = [&st](int depth, json::parse_event_t ev, json& parsed) -> bool {
    if (depth > kMaxJsonDepth) throw TooDeep{};  // nothing legitimate nests this deep
    switch (ev) {
      case json::parse_event_t::object_start: st.keys.emplace_back(); break;
      case json::parse_event_t::object_end: if (!st.keys.empty()) st.keys.pop_back(); break;
      case json::parse_event_t::key:
        if (!st.keys.empty() && parsed.is_string()) {
          const std::string& k = parsed.get_ref<const std::string&>();
          if (st.keys.size() == 1) st.top_key = k;
          if (!st.keys.back().insert(k).second && !st.dup) {
            st.dup = true;
            st.dup_key = k;
            st.dup_top = st.top_key;
            st.dup_level = st.keys.size();
          }
        }
        break;
      default: break;
    }
    return true;
  };
  json j;
  try {
    j = json::parse(b, e, cb, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const TooDeep&) {
    fail(where, ": ", what, " nests JSON deeper than ", kMaxJsonDepth, " levels: the file is corrupt or hostile");
  } catch (const json::exception& ex) {
    std::string m = ex.what();
    if (m.rfind("[json.exception.", 0) == 0) {
      size_t p = m.find("] ");
      if (p != std::string::npos) m = m.substr(p + 2);
    }
    fail(where, ": ", what, " is not valid JSON (", one_line(m), "): the file is truncated or corrupt; re-download or re-export it");
  }
  if (st.dup) {
    if (st.dup_level == 1)
      fail(where, ": ", what, " lists key ", quote(st.dup_key), " twice (duplicate JSON key): the file is corrupt; re-export it");
    fail(where, ": ", what, ": entry ", quote(st.dup_top), " has key ", quote(st.dup_key),
         " twice (duplicate JSON key): the file is corrupt; re-export it");
  }
  return j;
}

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}


}  // namespace

// ============================================================================================
// SafetensorsFile
// ============================================================================================

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, size_);
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->self_ = f;
  f->path_ = path;
  // O_NONBLOCK: opening a FIFO must not hang; it is rejected below as not a regular file.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    int e = errno;
    fail(path, ": cannot open: ", errno_text(e), e == ENOENT ? " (check the path)" : "");
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail(path, ": cannot stat: ", errno_text(e));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail(path, ": is a directory, not a .safetensors file: pass the file (checkpoint directories are read via TensorSource)");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": is not a regular file: pass a .safetensors file");
  }
  if ((uint64_t)st.st_size > (uint64_t)std::numeric_limits<size_t>::max()) {
    ::close(fd);
    fail(path, ": file is too large to map");
  }
  f->size_ = (size_t)st.st_size;
  if (f->size_ >= 8) {
    void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail(path, ": cannot memory-map ", f->size_, " bytes: ", errno_text(e));
    }
    f->map_ = p;
    f->base_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  f->parse();  // on failure f is destroyed and the mapping released
  return f;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::from_bytes(std::string bytes, const std::string& label) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->self_ = f;
  f->path_ = label;
  f->bytes_ = std::move(bytes);
  f->base_ = reinterpret_cast<const uint8_t*>(f->bytes_.data());
  f->size_ = f->bytes_.size();
  f->parse();
  return f;
}

void SafetensorsFile::parse() {
  const std::string& P = path_;
  if (size_ < 8)
    fail(P, ": file is ", size_, " bytes, too short for a safetensors file (it must start with an 8-byte header length): "
         "the file is truncated or not a safetensors file");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= (uint64_t)base_[i] << (8 * i);
  if (n == 0) fail(P, ": header length is 0: not a safetensors file, or the file is corrupt");
  if (n > kMaxHeader)
    fail(P, ": header length ", n, " bytes exceeds the 100 MB limit: not a safetensors file, or the file is corrupt");
  if (n > size_ - 8)
    fail(P, ": header length ", n, " bytes runs past the end of the file (", size_,
         " bytes): the file is truncated; re-download or re-export it");
  data_start_ = 8 + (size_t)n;
  const uint64_t data_size = size_ - data_start_;

  const char* hb = reinterpret_cast<const char*>(base_ + 8);
  json h = parse_json_strict(hb, hb + n, P, "header");
  if (!h.is_object())
    fail(P, ": header is ", json_kind(h), ", not a JSON object: not a safetensors file, or the file is corrupt");

  infos_.clear();
  index_.clear();
  metadata_.clear();
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object())
        fail(P, ": __metadata__ is ", json_kind(v), ", not an object of strings: the file is corrupt; re-export it");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail(P, ": __metadata__ key ", quote(m.key()), " is ", json_kind(m.value()),
               ", but metadata values must be strings: re-export the file with string metadata");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string T = P + ": tensor " + quote(name) + ": ";
    if (!v.is_object()) fail(T, "entry is ", json_kind(v), ", not an object with dtype, shape and data_offsets");
    auto dt = v.find("dtype"), sh = v.find("shape"), off = v.find("data_offsets");
    if (dt == v.end()) fail(T, "entry has no \"dtype\"");
    if (sh == v.end()) fail(T, "entry has no \"shape\"");
    if (off == v.end()) fail(T, "entry has no \"data_offsets\"");
    if (!dt->is_string()) fail(T, "\"dtype\" is ", json_kind(*dt), ", not a string such as \"F32\"");
    auto dtype = dtype_from_name(dt->get<std::string>());
    if (!dtype)
      fail(T, "unsupported dtype ", quote(dt->get<std::string>()), ": oboro reads ", known_dtypes(),
           "; convert the checkpoint to one of these");
    const uint64_t es = dtype_size(*dtype);

    if (!sh->is_array()) fail(T, "\"shape\" is ", json_kind(*sh), ", not an array of non-negative integers");
    if (sh->size() > kMaxRank) fail(T, "shape has ", sh->size(), " dimensions; at most ", kMaxRank, " are supported");
    Shape shape;
    shape.reserve(sh->size());
    uint64_t prod_nz = 1;  // product of the non-zero dims, kept <= INT64_MAX / 8
    bool any_zero = false, absurd = false;
    for (const json& d : *sh) {
      if (!d.is_number_integer()) fail(T, "shape entry is ", json_kind(d), ", not a non-negative integer");
      if (!d.is_number_unsigned() && d.get<int64_t>() < 0)
        fail(T, "shape has negative dimension ", d.get<int64_t>(), ": the file is corrupt; re-export it");
      uint64_t u = d.get<uint64_t>();
      if (u > (uint64_t)std::numeric_limits<int64_t>::max()) { absurd = true; break; }
      shape.push_back((int64_t)u);
      if (u == 0) { any_zero = true; continue; }
      if (__builtin_mul_overflow(prod_nz, u, &prod_nz) || prod_nz > (uint64_t)std::numeric_limits<int64_t>::max() / 8) {
        absurd = true;
        break;
      }
    }
    if (absurd) fail(T, "shape ", one_line(sh->dump()), " is absurd: its element count overflows; the file is corrupt");
    const uint64_t numel = any_zero ? 0 : prod_nz;
    const uint64_t nbytes = numel * es;  // cannot overflow: numel <= INT64_MAX / 8, es <= 8

    if (!off->is_array() || off->size() != 2)
      fail(T, "\"data_offsets\" is ", off->is_array() ? str("an array of ", off->size(), " values") : json_kind(*off),
           ", not [begin, end]");
    uint64_t be[2];
    for (int k = 0; k < 2; ++k) {
      const json& x = (*off)[k];
      if (!x.is_number_integer()) fail(T, "data_offsets entry is ", json_kind(x), ", not a non-negative integer");
      if (!x.is_number_unsigned() && x.get<int64_t>() < 0)
        fail(T, "data_offsets has negative value ", x.get<int64_t>(), ": the file is corrupt; re-export it");
      be[k] = x.get<uint64_t>();
    }
    if (be[0] > be[1])
      fail(T, "data_offsets ", offsets_str(be[0], be[1]), " has begin > end: the file is corrupt; re-export it");
    if (be[1] > data_size)
      fail(T, "data_offsets ", offsets_str(be[0], be[1]), " ends beyond the data section (", data_size,
           " bytes): the file is truncated; re-download or re-export it");
    if (be[1] - be[0] != nbytes)
      fail(T, "data_offsets ", offsets_str(be[0], be[1]), " span ", be[1] - be[0], " bytes but ", dtype_name(*dtype),
           " shape ", shape_str(shape), " needs ", nbytes, ": the file is corrupt; re-export it");
    TensorInfo ti;
    ti.name = name;
    ti.dtype = *dtype;
    ti.shape = std::move(shape);
    ti.begin = be[0];
    ti.end = be[1];
    infos_.push_back(std::move(ti));
  }

  std::sort(infos_.begin(), infos_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  // Overlap check over non-empty ranges (holes between tensors are allowed).
  const TensorInfo* last = nullptr;  // non-empty range with the largest end so far
  for (const auto& ti : infos_) {
    if (ti.begin == ti.end) continue;
    if (last && ti.begin < last->end)
      fail(P, ": tensor ", quote(ti.name), " bytes ", offsets_str(ti.begin, ti.end), " overlap tensor ", quote(last->name),
           " bytes ", offsets_str(last->begin, last->end), ": the file is corrupt; re-export it");
    if (!last || ti.end > last->end) last = &ti;
  }
  for (size_t i = 0; i < infos_.size(); ++i) index_[infos_[i].name] = i;
}

bool SafetensorsFile::has(const std::string& name) const { return index_.count(name) != 0; }

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    std::vector<std::string> names;
    names.reserve(index_.size());
    for (const auto& kv : index_) names.push_back(kv.first);
    fail(path_, ": no tensor ", quote(name), suggest(name, names));
  }
  return infos_[it->second];
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo& ti = info(name);
  const uint8_t* p = base_ + data_start_ + ti.begin;
  const size_t es = dtype_size(ti.dtype);
  if (reinterpret_cast<uintptr_t>(p) % es != 0) {
    // Unaligned data (allowed by the format): hand out an aligned owned copy.
    Tensor t = Tensor::empty(ti.shape, ti.dtype);
    if (t.nbytes()) std::memcpy(t.raw(), p, t.nbytes());
    return t;
  }
  std::shared_ptr<void> keep = self_.lock();
  OBORO_ASSERT(keep != nullptr);
  return Tensor::borrow(const_cast<uint8_t*>(p), ti.shape, ti.dtype, std::move(keep));
}

Tensor SafetensorsFile::tensor_f32(const std::string& name) const {
  Tensor v = tensor(name);
  const uintptr_t p = reinterpret_cast<uintptr_t>(v.raw()), b = reinterpret_cast<uintptr_t>(base_);
  const bool borrowed = p >= b && p <= b + size_;
  Tensor out = v.dtype() != DType::F32 ? v.to_f32() : borrowed ? v.clone() : v;
  // The copy is owned: drop the mapped pages it was read from, so that loading a model does not keep the file's
  // pages in the resident set next to the loaded weights (the mapping is read-only and private: the pages are
  // simply read again from the file if anything touches them later).
  if (borrowed && map_ && v.nbytes()) {
    const uintptr_t page = (uintptr_t)::sysconf(_SC_PAGESIZE);
    const uintptr_t lo = (p + page - 1) / page * page, hi = (p + v.nbytes()) / page * page;
    if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
  }
  return out;
}

// ============================================================================================
// TensorSource
// ============================================================================================

namespace {

json read_json_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int e = errno;
    fail(path, ": cannot open: ", errno_text(e));
  }
  std::string s;
  char buf[1 << 16];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    s.append(buf, (size_t)in.gcount());
    if (s.size() > kMaxHeader) fail(path, ": ", what, " is larger than 100 MB: not a checkpoint index");
  }
  if (in.bad()) fail(path, ": read error");
  return parse_json_strict(s.data(), s.data() + s.size(), path, what);
}

// A shard named by an index: a relative path inside the index's folder, with no control character (a newline in a
// file name would also split every message that names the file).
bool shard_name_ok(const std::string& s) {
  if (s.empty() || s[0] == '/') return false;
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return false;
  for (const auto& part : std::filesystem::path(s))
    if (part == "..") return false;
  return true;
}

}  // namespace

TensorSource TensorSource::open(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    int e = errno;
    fail(path, ": cannot open checkpoint: ", errno_text(e), e == ENOENT ? " (check the path)" : "");
  }
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
    fail(path, ": is not a regular file or directory: pass a .safetensors file, an index.json or a checkpoint directory");
  std::string file = path;
  if (S_ISDIR(st.st_mode)) {
    std::vector<std::string> idx, single, other;
    std::error_code ec;
    std::filesystem::directory_iterator it(path, ec), end;
    if (ec) fail(path, ": cannot list directory: ", ec.message());
    for (; it != end; it.increment(ec)) {
      if (ec) fail(path, ": cannot list directory: ", ec.message());
      std::error_code ec2;
      if (!it->is_regular_file(ec2)) continue;
      std::string n = it->path().filename().string();
      if (ends_with(n, ".safetensors.index.json")) idx.push_back(n);
      else if (ends_with(n, ".safetensors")) single.push_back(n);
      else other.push_back(n);
    }
    if (ec) fail(path, ": cannot list directory: ", ec.message());
    std::sort(idx.begin(), idx.end());
    std::sort(single.begin(), single.end());
    std::sort(other.begin(), other.end());
    auto list = [](const std::vector<std::string>& v) {
      std::string r;
      for (size_t i = 0; i < v.size() && i < 8; ++i) r += (i ? ", " : "") + quote(v[i]);
      if (v.size() > 8) r += str(", ... (", v.size() - 8, " more)");
      return r;
    };
    if (idx.size() == 1) file = (std::filesystem::path(path) / idx[0]).string();
    else if (idx.size() > 1)
      fail(path, ": directory holds ", idx.size(), " *.safetensors.index.json files (", list(idx), "): pass the one you mean");
    else if (single.size() == 1) file = (std::filesystem::path(path) / single[0]).string();
    else if (single.empty())
      fail(path, ": directory holds no *.safetensors or *.safetensors.index.json file",
           other.empty() ? std::string(" (it is empty)") : " (found: " + list(other) + ")",
           ": pass the checkpoint file or its directory");
    else
      fail(path, ": directory holds ", single.size(), " *.safetensors files (", list(single),
           ") and no *.safetensors.index.json: pass one file, or add an index listing the shards");
  }

  TensorSource src;
  src.path_ = file;
  if (!ends_with(file, ".json")) {
    auto f = SafetensorsFile::open(file);
    for (const auto& ti : f->tensors()) src.where_[ti.name] = 0;
    src.metadata_ = f->metadata();
    src.files_.push_back(std::move(f));
    return src;
  }

  // Sharded checkpoint: Hugging Face index.
  json j = read_json_file(file, "index");
  if (!j.is_object()) fail(file, ": index is ", json_kind(j), ", not a JSON object with \"weight_map\"");
  auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object())
    fail(file, ": index has no \"weight_map\" object mapping tensor names to shard files: not a sharded safetensors index");
  std::map<std::string, std::string> index_meta;
  auto md = j.find("metadata");
  if (md != j.end() && !md->is_null()) {
    if (!md->is_object()) fail(file, ": index \"metadata\" is ", json_kind(*md), ", not an object");
    for (auto m = md->begin(); m != md->end(); ++m)
      if (m.value().is_string()) index_meta[m.key()] = m.value().get<std::string>();
  }
  std::map<std::string, std::string> listed;             // tensor -> shard
  std::map<std::string, std::pair<std::string, size_t>> shard_users;  // shard -> (first tensor, count)
  for (auto e = wm->begin(); e != wm->end(); ++e) {
    if (!e.value().is_string())
      fail(file, ": tensor ", quote(e.key()), ": weight_map value is ", json_kind(e.value()), ", not a shard file name");
    std::string shard = e.value().get<std::string>();
    if (!shard_name_ok(shard))
      fail(file, ": tensor ", quote(e.key()), ": shard ", quote(shard),
           " must be a relative path inside the index's directory (no leading / or .., no control characters)");
    listed[e.key()] = shard;
    auto& u = shard_users[shard];
    if (u.second++ == 0) u.first = e.key();
  }
  const std::filesystem::path dir = std::filesystem::path(file).parent_path();
  std::map<std::string, size_t> shard_index;
  for (const auto& [shard, users] : shard_users) {  // sorted by shard name: shard 0 = first file
    std::string full = (dir / shard).string();
    struct stat ss;
    if (::stat(full.c_str(), &ss) != 0) {
      int e = errno;
      fail(file, ": shard ", quote(shard), " (holding tensor ", quote(users.first),
           users.second > 1 ? str(" and ", users.second - 1, " more") : std::string(), ") cannot be opened at ", full,
           ": ", errno_text(e), e == ENOENT ? "; download the missing shard" : "");
    }
    shard_index[shard] = src.files_.size();
    src.files_.push_back(SafetensorsFile::open(full));
  }
  for (const auto& [name, shard] : listed) {
    size_t i = shard_index.at(shard);
    if (!src.files_[i]->has(name))
      fail(file, ": tensor ", quote(name), " is listed in weight_map for shard ", quote(shard),
           " but absent from it: the index and the shards do not match; re-download the checkpoint");
    src.where_[name] = i;
  }
  for (size_t i = 0; i < src.files_.size(); ++i) {
    for (const auto& ti : src.files_[i]->tensors()) {
      auto it = src.where_.find(ti.name);
      if (it == src.where_.end()) { src.where_[ti.name] = i; continue; }  // present but not listed: still usable
      if (it->second != i)
        fail(file, ": tensor ", quote(ti.name), " is in two shards, ", src.files_[it->second]->path(), " and ",
             src.files_[i]->path(), ": the checkpoint is inconsistent; re-download or re-export it");
    }
  }
  if (!src.files_.empty()) src.metadata_ = src.files_[0]->metadata();
  for (const auto& [k, v] : index_meta) src.metadata_[k] = v;
  return src;
}

std::vector<std::string> TensorSource::names() const {
  std::vector<std::string> r;
  r.reserve(where_.size());
  for (const auto& kv : where_) r.push_back(kv.first);
  return r;
}

bool TensorSource::has(const std::string& name) const { return where_.count(name) != 0; }

const TensorInfo& TensorSource::info(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(path_, ": no tensor ", quote(name), suggest(name, names()));
  return files_[it->second]->info(name);
}

Tensor TensorSource::tensor(const std::string& name) const {
  info(name);
  return files_[where_.at(name)]->tensor(name);
}

Tensor TensorSource::tensor_f32(const std::string& name) const {
  info(name);
  return files_[where_.at(name)]->tensor_f32(name);
}

// ============================================================================================
// Writer
// ============================================================================================

void SafetensorsWriter::check_name(const std::string& name) const {
  if (name.empty()) fail("safetensors writer: empty tensor name");
  if (name == "__metadata__") fail("safetensors writer: \"__metadata__\" is reserved and cannot be a tensor name");
}

void SafetensorsWriter::add(const std::string& name, const Tensor& t) {
  check_name(name);
  if (!t.defined()) fail("safetensors writer: tensor ", quote(name), " has no data");
  tensors_.emplace_back(name, t);
}

void SafetensorsWriter::add_lazy(const std::string& name, DType dtype, const Shape& shape,
                                 std::function<Tensor()> produce) {
  check_name(name);
  if (lazy_.count(name)) fail("safetensors writer: tensor ", quote(name), " was added twice: names must be unique");
  lazy_[name] = Lazy{dtype, shape, std::move(produce)};
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

void SafetensorsWriter::write(const std::string& path) const {
  std::vector<const std::pair<std::string, Tensor>*> order;
  order.reserve(tensors_.size() + lazy_.size());
  for (const auto& p : tensors_) order.push_back(&p);
  // Lazy tensors take part in the order under their name; their slot holds an empty Tensor until produced.
  std::vector<std::pair<std::string, Tensor>> lazy_slots;
  lazy_slots.reserve(lazy_.size());
  for (const auto& [name, l] : lazy_) lazy_slots.emplace_back(name, Tensor());
  for (const auto& p : lazy_slots) order.push_back(&p);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->first < b->first; });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i]->first == order[i - 1]->first)
      fail(path, ": tensor ", quote(order[i]->first), " was added twice: names must be unique");
  auto lazy_of = [&](const std::pair<std::string, Tensor>* p) -> const Lazy* {
    if (p < lazy_slots.data() || p >= lazy_slots.data() + lazy_slots.size()) return nullptr;
    return &lazy_.at(p->first);
  };

  json hdr = json::object();
  uint64_t off = 0;
  for (const auto* p : order) {
    const Lazy* lz = lazy_of(p);
    const DType dt = lz ? lz->dtype : p->second.dtype();
    const Shape& shape = lz ? lz->shape : p->second.shape();
    const uint64_t nb = (uint64_t)shape_numel(shape) * dtype_size(dt);
    if (!lz && nb && !p->second.raw()) fail(path, ": tensor ", quote(p->first), " has no data");
    json e = json::object();
    e["dtype"] = dtype_name(dt);
    e["shape"] = json::array();
    for (int64_t d : shape) e["shape"].push_back(d);
    e["data_offsets"] = json::array({off, off + nb});
    hdr[p->first] = std::move(e);
    off += nb;
  }
  if (!metadata_.empty()) {
    json m = json::object();
    for (const auto& [k, v] : metadata_) m[k] = v;
    hdr["__metadata__"] = std::move(m);
  }
  std::string hs;
  try {
    hs = hdr.dump();
  } catch (const json::exception& ex) {
    fail(path, ": cannot encode the header (", one_line(ex.what()), "): tensor names and metadata must be valid UTF-8");
  }
  while ((8 + hs.size()) % 8 != 0) hs += ' ';  // data section starts 8-byte aligned
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = (uint8_t)((uint64_t)hs.size() >> (8 * i));

  write_atomic(path, [&](const AtomicPut& put) {
    put(len, 8);
    put(hs.data(), hs.size());
    for (const auto* p : order) {
      Tensor produced;
      if (const Lazy* lz = lazy_of(p)) {
        produced = lz->produce();
        if (produced.dtype() != lz->dtype || produced.shape() != lz->shape)
          fail("internal error: lazy tensor ", p->first, " was declared ", dtype_name(lz->dtype), " ",
               shape_str(lz->shape), " but produced ", dtype_name(produced.dtype()), " ", shape_str(produced.shape()));
      }
      const Tensor& t = lazy_of(p) ? produced : p->second;
      if (t.numel() == 0) continue;
      if (t.is_contiguous()) {
        put(t.raw(), t.nbytes());
      } else {
        Tensor c = t.contiguous();
        put(c.raw(), c.nbytes());
      }
    }
  });
}


}  // namespace oboro
