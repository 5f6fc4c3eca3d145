// safetensors: round trips, atomic writes, zero-copy lifetime, every validation error,
// sharded checkpoints, the `oboro info` command and a randomized corruption test.
#include "core/error.h"
#include "core/tensor.h"
#include "io/safetensors.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace oboro;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

class TmpDir {
 public:
  TmpDir() {
    std::string t = (fs::temp_directory_path() / "oboro_st_XXXXXX").string();
    std::vector<char> buf(t.begin(), t.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
    path_ = buf.data();
  }
  ~TmpDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return (fs::path(path_) / name).string(); }
  const std::string& path() const { return path_; }
  std::vector<std::string> list() const {
    std::vector<std::string> r;
    for (auto& e : fs::directory_iterator(path_)) r.push_back(e.path().filename().string());
    std::sort(r.begin(), r.end());
    return r;
  }

 private:
  std::string path_;
};

std::string read_file(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_raw(const std::string& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out << bytes;
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = (char)(uint8_t)(n >> (8 * i));
  return s;
}

// 8-byte length + header + data; `len` overrides the length prefix.
std::string image(const std::string& header, const std::string& data = "", std::optional<uint64_t> len = {}) {
  return le64(len ? *len : header.size()) + header + data;
}

std::string bytes_of(const Tensor& t) {
  Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.raw()), c.nbytes());
}

Tensor make(const Shape& shape, DType dt, uint32_t seed) {
  Tensor t = Tensor::empty(shape, dt);
  std::mt19937 rng(seed);
  auto* p = static_cast<uint8_t*>(t.raw());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = (uint8_t)rng();
  if (dt == DType::BOOL)
    for (size_t i = 0; i < t.nbytes(); ++i) p[i] &= 1;
  return t;
}

// "{" + s + "}"
std::string braces(const std::string& s) {
  std::string r;
  r.reserve(s.size() + 2);
  r += '{';
  r += s;
  r += '}';
  return r;
}

const char* kLabel = "mem/test.safetensors";

// Parse `bytes`; expect an oboro::Error whose single-line message starts with the label and
// contains every needle.
void expect_error(const std::string& bytes, std::initializer_list<std::string> needles) {
  try {
    SafetensorsFile::from_bytes(bytes, kLabel);
    ADD_FAILURE() << "expected an error containing " << *needles.begin();
  } catch (const oboro::Error& e) {
    std::string m = e.what();
    EXPECT_EQ(m.rfind(kLabel, 0), 0u) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    for (const auto& n : needles) EXPECT_NE(m.find(n), std::string::npos) << "missing '" << n << "' in: " << m;
  }
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, const std::string& offs) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":" + offs + "}";
}

}  // namespace

// ============================================================================ round trips

TEST(Safetensors, RoundTripDtypesShapesMetadata) {
  TmpDir d;
  Tensor big = make({3, 5}, DType::F32, 1);
  Tensor noncontig = big.slice(1, 1, 4);  // (3, 3) view with row stride 5
  ASSERT_FALSE(noncontig.is_contiguous());
  std::vector<std::pair<std::string, Tensor>> ts = {
      {"f32", make({2, 3}, DType::F32, 2)},      {"f16", make({5}, DType::F16, 3)},
      {"bf16.scalar", make({}, DType::BF16, 4)}, {"i64", make({2, 2}, DType::I64, 5)},
      {"u8", make({3, 1, 2}, DType::U8, 6)},     {"bool", make({7}, DType::BOOL, 7)},
      {"f8", make({4, 4}, DType::F8_E4M3, 8)},   {"f64", make({3}, DType::F64, 9)},
      {"i8", make({1}, DType::I8, 10)},          {"i16", make({3}, DType::I16, 11)},
      {"i32", make({2}, DType::I32, 12)},        {"empty", Tensor::empty({0, 4}, DType::F32)},
      {"empty.bf16", Tensor::empty({2, 0}, DType::BF16)},
      {"noncontig", noncontig},
  };
  SafetensorsWriter w;
  for (auto& [n, t] : ts) w.add(n, t);
  w.set_metadata("format", "pt");
  w.set_metadata("oboro.config", "{\"dim\": 64}");
  w.set_metadata("unicode", "\xc3\xa9t\xc3\xa9");
  const std::string path = d / "model.safetensors";
  w.write(path);
  EXPECT_EQ(d.list(), std::vector<std::string>{"model.safetensors"});

  // header layout: data section 8-byte aligned, sorted names, contiguous offsets
  std::string raw = read_file(path);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= (uint64_t)(uint8_t)raw[i] << (8 * i);
  EXPECT_EQ((8 + n) % 8, 0u);
  json h = json::parse(raw.substr(8, n));
  uint64_t expect_off = 0;
  std::vector<std::string> sorted;
  for (auto& [nm, t] : ts) sorted.push_back(nm);
  std::sort(sorted.begin(), sorted.end());
  for (const auto& nm : sorted) {
    auto offs = h.at(nm).at("data_offsets");
    EXPECT_EQ(offs[0].get<uint64_t>(), expect_off) << nm;
    expect_off = offs[1].get<uint64_t>();
  }
  EXPECT_EQ(raw.size(), 8 + n + expect_off);
  EXPECT_EQ(h.at("__metadata__").at("format"), "pt");

  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->path(), path);
  EXPECT_EQ(f->tensors().size(), ts.size());
  for (size_t i = 1; i < f->tensors().size(); ++i) EXPECT_LE(f->tensors()[i - 1].end, f->tensors()[i].begin);
  for (auto& [nm, t] : ts) {
    SCOPED_TRACE(nm);
    ASSERT_TRUE(f->has(nm));
    Tensor r = f->tensor(nm);
    EXPECT_EQ(r.dtype(), t.dtype());
    EXPECT_EQ(r.shape(), t.shape());
    EXPECT_TRUE(r.is_contiguous());
    EXPECT_EQ(bytes_of(r), bytes_of(t));
    EXPECT_EQ(f->info(nm).end - f->info(nm).begin, t.nbytes());
    Tensor r32 = f->tensor_f32(nm);
    Tensor want = t.to_f32();
    ASSERT_EQ(r32.dtype(), DType::F32);
    ASSERT_EQ(r32.shape(), t.shape());
    for (int64_t k = 0; k < want.numel(); ++k) {
      float a = r32.f32()[k], b = want.f32()[k];
      if (!(std::isnan(a) && std::isnan(b))) {
        ASSERT_EQ(a, b) << k;
      }
    }
  }
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->metadata().at("unicode"), "\xc3\xa9t\xc3\xa9");
  EXPECT_EQ(f->metadata().size(), 3u);
  EXPECT_FALSE(f->has("nope"));
  try {
    f->info("f32x");
    ADD_FAILURE();
  } catch (const oboro::Error& e) {
    std::string m = e.what();
    EXPECT_EQ(m.rfind(path, 0), 0u) << m;
    EXPECT_NE(m.find("\"f32x\""), std::string::npos) << m;
    EXPECT_NE(m.find("did you mean \"f32\""), std::string::npos) << m;
  }
  EXPECT_THROW(f->tensor("nope"), oboro::Error);
}

TEST(Safetensors, TensorF32IsACopy) {
  TmpDir d;
  SafetensorsWriter w;
  w.add("x", Tensor::from_f32({1, 2, 3, 4}, {2, 2}));
  w.write(d / "a.safetensors");
  auto f = SafetensorsFile::open(d / "a.safetensors");
  Tensor v = f->tensor("x"), c = f->tensor_f32("x");
  EXPECT_NE(v.raw(), c.raw());
  c.f32()[0] = 42;  // owned, writable
  EXPECT_EQ(v.data<float>()[0], 1.0f);
}

TEST(Safetensors, EmptyFileAndNoMetadata) {
  TmpDir d;
  SafetensorsWriter w;
  w.write(d / "e.safetensors");
  std::string raw = read_file(d / "e.safetensors");
  EXPECT_EQ(raw.size() % 8, 0u);
  EXPECT_EQ(raw.find("__metadata__"), std::string::npos);
  auto f = SafetensorsFile::open(d / "e.safetensors");
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_TRUE(f->metadata().empty());
}

TEST(Safetensors, WriterRejectsBadNames) {
  SafetensorsWriter w;
  Tensor t = Tensor::from_f32({1}, {1});
  EXPECT_THROW(w.add("", t), oboro::Error);
  EXPECT_THROW(w.add("__metadata__", t), oboro::Error);
  TmpDir d;
  SafetensorsWriter w2;
  w2.add("a", t);
  w2.add("a", t);
  try {
    w2.write(d / "dup.safetensors");
    ADD_FAILURE();
  } catch (const oboro::Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"a\""), std::string::npos) << e.what();
  }
  EXPECT_TRUE(d.list().empty());
  SafetensorsWriter w3;
  w3.add("bad\xff", t);
  EXPECT_THROW(w3.write(d / "utf8.safetensors"), oboro::Error);
  EXPECT_TRUE(d.list().empty());
}

TEST(Safetensors, UnalignedDataIsCopiedAligned) {
  // F32 tensor at data offset 1 and F16 at offset 5: legal, but not aligned.
  float v[2] = {1.5f, -2.25f};
  uint16_t h = 0x3c00;
  std::string data(1, 'x');
  data.append(reinterpret_cast<const char*>(v), 8);
  data.append(1, 'y');
  data.append(reinterpret_cast<const char*>(&h), 2);
  std::string hdr = braces(entry("a", "F32", "[2]", "[1,9]") + "," + entry("h", "F16", "[1]", "[10,12]"));
  while ((8 + hdr.size()) % 8) hdr += ' ';
  std::string img = image(hdr, data);
  for (int pass = 0; pass < 2; ++pass) {
    std::shared_ptr<SafetensorsFile> f;
    TmpDir d;
    if (pass == 0) {
      f = SafetensorsFile::from_bytes(img, "mem");
    } else {
      write_file_atomic(d / "u.safetensors", img);
      f = SafetensorsFile::open(d / "u.safetensors");
    }
    Tensor a = f->tensor("a");
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.raw()) % 4, 0u);
    EXPECT_EQ(a.f32()[0], 1.5f);
    EXPECT_EQ(a.f32()[1], -2.25f);
    Tensor hh = f->tensor("h");
    EXPECT_EQ(reinterpret_cast<uintptr_t>(hh.raw()) % 2, 0u);
    EXPECT_EQ(f->tensor_f32("h").f32()[0], 1.0f);
    EXPECT_EQ(f->tensor_f32("a").f32()[1], -2.25f);
  }
}

TEST(Safetensors, ZeroCopyViewOutlivesFileHandle) {
  TmpDir d;
  Tensor src = make({64, 64}, DType::F32, 3);
  SafetensorsWriter w;
  w.add("w", src);
  w.write(d / "m.safetensors");
  auto f = SafetensorsFile::open(d / "m.safetensors");
  std::weak_ptr<SafetensorsFile> weak = f;
  Tensor view = f->tensor("w");
  Tensor view2 = f->tensor("w");
  EXPECT_EQ(view.raw(), view2.raw());  // same mapping: zero-copy
  f.reset();
  EXPECT_FALSE(weak.expired());  // the views keep the mapping alive
  EXPECT_EQ(bytes_of(view), bytes_of(src));
  view = Tensor();
  EXPECT_FALSE(weak.expired());
  EXPECT_EQ(bytes_of(view2), bytes_of(src));
  view2 = Tensor();
  EXPECT_TRUE(weak.expired());  // last view gone: unmapped
  // the same through from_bytes
  auto g = SafetensorsFile::from_bytes(read_file(d / "m.safetensors"), "mem");
  Tensor gv = g->tensor("w");
  g.reset();
  EXPECT_EQ(bytes_of(gv), bytes_of(src));
}

// ============================================================================ atomic writes

TEST(Safetensors, AtomicWriteLeavesNoTempFile) {
  TmpDir d;
  SafetensorsWriter w;
  w.add("a", Tensor::from_f32({1, 2}, {2}));
  w.write(d / "x.safetensors");
  w.write(d / "x.safetensors");  // overwrite
  EXPECT_EQ(d.list(), std::vector<std::string>{"x.safetensors"});
  write_file_atomic(d / "t.txt", "hello");
  write_file_atomic(d / "t.txt", "bye");
  EXPECT_EQ(read_file(d / "t.txt"), "bye");
  write_file_atomic(d / "empty.txt", "");
  EXPECT_EQ(read_file(d / "empty.txt"), "");
  EXPECT_EQ(d.list(), (std::vector<std::string>{"empty.txt", "t.txt", "x.safetensors"}));
}

TEST(Safetensors, AtomicWriteIntoMissingDirectoryThrowsAndLeavesNothing) {
  TmpDir d;
  const std::string p = d / "no/such/dir/m.safetensors";
  SafetensorsWriter w;
  w.add("a", Tensor::from_f32({1}, {1}));
  try {
    w.write(p);
    ADD_FAILURE();
  } catch (const oboro::Error& e) {
    std::string m = e.what();
    EXPECT_EQ(m.rfind(p, 0), 0u) << m;
    EXPECT_NE(m.find("No such file or directory"), std::string::npos) << m;
  }
  EXPECT_THROW(write_file_atomic(p, "x"), oboro::Error);
  EXPECT_TRUE(d.list().empty());
}

TEST(Safetensors, FailedRenameRemovesTempFile) {
  TmpDir d;
  fs::create_directory(d / "target");  // rename(file, existing dir) fails
  SafetensorsWriter w;
  w.add("a", Tensor::from_f32({1, 2, 3}, {3}));
  EXPECT_THROW(w.write(d / "target"), oboro::Error);
  EXPECT_EQ(d.list(), std::vector<std::string>{"target"});
}

TEST(Safetensors, FailedWriteKeepsExistingFile) {
  TmpDir d;
  const std::string p = d / "keep.safetensors";
  SafetensorsWriter w1;
  w1.add("old", Tensor::from_f32({7, 8}, {2}));
  w1.write(p);
  const std::string before = read_file(p);

  // Make write() fail halfway: a file-size limit turns the big write into EFBIG.
  SafetensorsWriter w2;
  Tensor big = Tensor::zeros({1 << 18}, DType::F32);  // 1 MiB
  w2.add("new", big);
  struct rlimit old;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = old;
  lim.rlim_cur = 64 * 1024;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
  std::string msg;
  try {
    w2.write(p);
  } catch (const oboro::Error& e) {
    msg = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_EQ(msg.rfind(p, 0), 0u) << msg;
  EXPECT_NE(msg.find("File too large"), std::string::npos) << msg;
  EXPECT_EQ(read_file(p), before);
  EXPECT_EQ(d.list(), std::vector<std::string>{"keep.safetensors"});
  EXPECT_TRUE(SafetensorsFile::open(p)->has("old"));
}

// ============================================================================ validation

TEST(SafetensorsValidation, FileTooShort) {
  expect_error("", {"too short"});
  expect_error("abc", {"3 bytes", "too short"});
  TmpDir d;
  write_raw(d / "short.safetensors", "1234567");
  try {
    SafetensorsFile::open(d / "short.safetensors");
    ADD_FAILURE();
  } catch (const oboro::Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(d / "short.safetensors", 0), 0u) << e.what();
  }
}

TEST(SafetensorsValidation, OpenErrors) {
  TmpDir d;
  EXPECT_THROW(SafetensorsFile::open(d / "missing.safetensors"), oboro::Error);
  EXPECT_THROW(SafetensorsFile::open(d.path()), oboro::Error);
}

TEST(SafetensorsValidation, HeaderLengthZero) { expect_error(image("", "{}"), {"header length is 0"}); }

TEST(SafetensorsValidation, HeaderLengthOver100MB) {
  expect_error(image("{}", "", 200ull * 1000 * 1000), {"100 MB"});
  expect_error(image("{}", "", ~0ull), {"100 MB"});
}

TEST(SafetensorsValidation, HeaderBeyondFileEnd) { expect_error(image("{}", "", 1000), {"header length 1000", "past the end"}); }

TEST(SafetensorsValidation, HeaderNotJson) {
  expect_error(image("{\"a\":"), {"header", "not valid JSON"});
  expect_error(image(std::string("{\"a\0\":1}", 8)), {"not valid JSON"});
  expect_error(image("{\"a\":\"\xff\"}"), {"not valid JSON"});
}

TEST(SafetensorsValidation, DeeplyNestedHeader) {
  expect_error(image(std::string(1000000, '[')), {"deeper than"});
  std::string deep = "{\"a\":";
  for (int i = 0; i < 200; ++i) deep += "{\"a\":";
  expect_error(image(deep), {"deeper than"});
}

TEST(SafetensorsValidation, HeaderNotObject) {
  expect_error(image("[1, 2]"), {"not a JSON object"});
  expect_error(image("42"), {"not a JSON object"});
}

TEST(SafetensorsValidation, EntryNotObject) { expect_error(image("{\"w\": [1]}"), {"tensor \"w\"", "not an object"}); }

TEST(SafetensorsValidation, MissingDtype) {
  expect_error(image("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", "abcd"), {"tensor \"w\"", "no \"dtype\""});
}

TEST(SafetensorsValidation, MissingShape) {
  expect_error(image("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", "abcd"), {"tensor \"w\"", "no \"shape\""});
}

TEST(SafetensorsValidation, MissingDataOffsets) {
  expect_error(image("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", "abcd"), {"tensor \"w\"", "no \"data_offsets\""});
}

TEST(SafetensorsValidation, WrongJsonTypes) {
  expect_error(image("{\"w\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", "abcd"),
               {"tensor \"w\"", "\"dtype\" is an integer"});
  expect_error(image(braces(entry("w", "F32", "\"1\"", "[0,4]")), "abcd"), {"tensor \"w\"", "\"shape\" is a JSON string"});
  expect_error(image(braces(entry("w", "F32", "[1.0]", "[0,4]")), "abcd"), {"tensor \"w\"", "non-integer"});
  expect_error(image(braces(entry("w", "F32", "[null]", "[0,4]")), "abcd"), {"tensor \"w\"", "shape entry"});
  expect_error(image(braces(entry("w", "F32", "[1]", "{}")), "abcd"), {"tensor \"w\"", "not [begin, end]"});
  expect_error(image(braces(entry("w", "F32", "[1]", "[0]")), "abcd"), {"tensor \"w\"", "array of 1 values"});
  expect_error(image(braces(entry("w", "F32", "[1]", "[0,4,8]")), "abcd"), {"tensor \"w\"", "not [begin, end]"});
  expect_error(image(braces(entry("w", "F32", "[1]", "[0,\"4\"]")), "abcd"), {"tensor \"w\"", "data_offsets entry"});
  expect_error(image(braces(entry("w", "F32", "[1]", "[0,4.5]")), "abcd"), {"tensor \"w\"", "data_offsets entry"});
}

TEST(SafetensorsValidation, UnknownDtype) {
  expect_error(image(braces(entry("w", "F8_E5M2", "[4]", "[0,4]")), "abcd"),
               {"tensor \"w\"", "unsupported dtype \"F8_E5M2\"", "F32, F16, BF16, F8_E4M3"});
}

TEST(SafetensorsValidation, NegativeDim) {
  expect_error(image(braces(entry("w", "F32", "[-1, 4]", "[0,4]")), "abcd"), {"tensor \"w\"", "negative dimension -1"});
}

TEST(SafetensorsValidation, AbsurdShape) {
  expect_error(image(braces(entry("w", "F32", "[4294967296, 4294967296]", "[0,0]"))), {"tensor \"w\"", "absurd"});
  expect_error(image(braces(entry("w", "F32", "[18446744073709551615]", "[0,0]"))), {"tensor \"w\"", "absurd"});
  // numel*4 wraps to 0 in 64 bits: must not be accepted as an empty tensor
  expect_error(image(braces(entry("w", "F32", "[4611686018427387904]", "[0,0]"))), {"tensor \"w\"", "absurd"});
  expect_error(image(braces(entry("w", "F32", "[2305843009213693952, 8]", "[0,0]"))), {"tensor \"w\"", "absurd"});
  std::string many = "[";
  for (int i = 0; i < 100; ++i) many += i ? ",1" : "1";
  expect_error(image(braces(entry("w", "F32", many + "]", "[0,4]")), "abcd"), {"tensor \"w\"", "dimensions"});
}

TEST(SafetensorsValidation, OffsetsBeginAfterEnd) {
  expect_error(image(braces(entry("w", "U8", "[0]", "[4,0]")), "abcd"), {"tensor \"w\"", "[4, 0]", "begin > end"});
  expect_error(image(braces(entry("w", "U8", "[1]", "[-1,0]")), "abcd"), {"tensor \"w\"", "negative"});
}

TEST(SafetensorsValidation, OffsetsBeyondData) {
  expect_error(image(braces(entry("w", "F32", "[4]", "[0,16]")), "abcdefgh"),
               {"tensor \"w\"", "[0, 16]", "beyond the data section (8 bytes)"});
  expect_error(image(braces(entry("w", "F32", "[0]", "[9,9]")), "abcdefgh"), {"tensor \"w\"", "beyond"});
}

TEST(SafetensorsValidation, SizeMismatch) {
  expect_error(image(braces(entry("w", "F32", "[2]", "[0,12]")), "abcdefghijkl"),
               {"tensor \"w\"", "span 12 bytes", "F32 shape (2,) needs 8"});
  expect_error(image(braces(entry("w", "BF16", "[2, 3]", "[0,6]")), "abcdefghijkl"), {"tensor \"w\"", "needs 12"});
}

TEST(SafetensorsValidation, OverlappingTensors) {
  expect_error(image(braces(entry("a", "F32", "[2]", "[0,8]") + "," + entry("b", "F32", "[2]", "[4,12]")),
                     "abcdefghijkl"),
               {"\"a\"", "\"b\"", "overlap"});
  expect_error(image(braces(entry("a", "U8", "[12]", "[0,12]") + "," + entry("b", "U8", "[2]", "[4,6]")),
                     "abcdefghijkl"),
               {"\"a\"", "\"b\"", "overlap"});
  // same range twice
  expect_error(image(braces(entry("a", "U8", "[4]", "[0,4]") + "," + entry("b", "U8", "[4]", "[0,4]")), "abcd"),
               {"overlap"});
}

TEST(SafetensorsValidation, HolesAndEmptyTensorsAreAllowed) {
  auto f = SafetensorsFile::from_bytes(
      image(braces(entry("a", "U8", "[4]", "[0,4]") + "," + entry("b", "U8", "[2]", "[8,10]") + "," +
                entry("e", "F32", "[0, 3]", "[2,2]")),
            "abcdefghij"),
      "mem");
  EXPECT_EQ(f->tensors().size(), 3u);
  EXPECT_EQ(bytes_of(f->tensor("b")), "ij");
  EXPECT_EQ(f->tensor("e").numel(), 0);
  EXPECT_EQ(f->tensor_f32("e").numel(), 0);
  EXPECT_EQ(f->tensors()[0].name, "a");  // data-offset order
  EXPECT_EQ(f->tensors()[2].name, "b");
}

TEST(SafetensorsValidation, MetadataNotObjectOfStrings) {
  expect_error(image("{\"__metadata__\": [\"a\"]}"), {"__metadata__", "not an object of strings"});
  expect_error(image("{\"__metadata__\": {\"k\": 1}}"), {"__metadata__", "\"k\"", "must be strings"});
  expect_error(image("{\"__metadata__\": {\"k\": {\"x\":\"y\"}}}"), {"__metadata__", "\"k\""});
  auto f = SafetensorsFile::from_bytes(image("{\"__metadata__\": {\"k\": \"v\"}}   "), "mem");
  EXPECT_EQ(f->metadata().at("k"), "v");
}

TEST(SafetensorsValidation, DuplicateKeys) {
  expect_error(image(braces(entry("a", "U8", "[4]", "[0,4]") + "," + entry("a", "U8", "[4]", "[0,4]")), "abcd"),
               {"\"a\"", "twice"});
  expect_error(image("{\"a\":{\"dtype\":\"U8\",\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,4]}}", "abcd"),
               {"\"a\"", "\"dtype\"", "twice"});
}

TEST(SafetensorsValidation, MessagesAreOneLineWithHostileNames) {
  expect_error(image("{\"bad\\nname\\u0000\": 3}"), {"tensor \"bad\\nname\\x00\"", "not an object"});
}

// ============================================================================ sharded checkpoints

namespace {
struct Sharded {
  TmpDir d;
  Tensor a = make({4}, DType::F32, 1), b = make({2, 2}, DType::BF16, 2), c = make({3}, DType::I32, 3);
  Sharded() {
    SafetensorsWriter w1, w2;
    w1.add("a", a);
    w1.add("b", b);
    w1.set_metadata("format", "pt");
    w1.set_metadata("shard", "1");
    w1.write(d / "model-00001-of-00002.safetensors");
    w2.add("c", c);
    w2.set_metadata("shard", "2");
    w2.write(d / "model-00002-of-00002.safetensors");
    index(R"({"metadata": {"total_size": 36, "note": "hi", "shard": "index"},
              "weight_map": {"a": "model-00001-of-00002.safetensors",
                             "b": "model-00001-of-00002.safetensors",
                             "c": "model-00002-of-00002.safetensors"}})");
  }
  void index(const std::string& text) { write_raw(d / "model.safetensors.index.json", text); }
  std::string idx() const { return d / "model.safetensors.index.json"; }
};

void expect_source_error(const std::string& path, std::initializer_list<std::string> needles) {
  try {
    TensorSource::open(path);
    ADD_FAILURE() << "expected an error for " << path;
  } catch (const oboro::Error& e) {
    std::string m = e.what();
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    for (const auto& n : needles) EXPECT_NE(m.find(n), std::string::npos) << "missing '" << n << "' in: " << m;
  }
}
}  // namespace

TEST(TensorSource, ShardedLoadsAsOne) {
  Sharded s;
  for (const std::string& p : {s.idx(), s.d.path()}) {
    TensorSource src = TensorSource::open(p);
    EXPECT_EQ(src.path(), s.idx());
    EXPECT_EQ(src.names(), (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_EQ(src.files().size(), 2u);
    EXPECT_EQ(bytes_of(src.tensor("a")), bytes_of(s.a));
    EXPECT_EQ(bytes_of(src.tensor("b")), bytes_of(s.b));
    EXPECT_EQ(bytes_of(src.tensor("c")), bytes_of(s.c));
    EXPECT_EQ(src.info("c").dtype, DType::I32);
    EXPECT_EQ(src.tensor_f32("b").dtype(), DType::F32);
    EXPECT_TRUE(src.has("c"));
    EXPECT_FALSE(src.has("d"));
    EXPECT_THROW(src.tensor("d"), oboro::Error);
    EXPECT_EQ(src.metadata().at("format"), "pt");     // from shard 0
    EXPECT_EQ(src.metadata().at("note"), "hi");       // from the index
    EXPECT_EQ(src.metadata().at("shard"), "index");   // index wins
    EXPECT_EQ(src.metadata().count("total_size"), 0u);  // non-string index metadata is skipped
  }
}

TEST(TensorSource, SingleFileAndDirectoryWithOneFile) {
  TmpDir d;
  SafetensorsWriter w;
  w.add("x", Tensor::from_f32({1, 2, 3}, {3}));
  w.set_metadata("k", "v");
  w.write(d / "only.safetensors");
  for (const std::string& p : {d / "only.safetensors", d.path()}) {
    TensorSource src = TensorSource::open(p);
    EXPECT_EQ(src.path(), d / "only.safetensors");
    EXPECT_EQ(src.names(), std::vector<std::string>{"x"});
    EXPECT_EQ(src.tensor_f32("x").f32()[2], 3.0f);
    EXPECT_EQ(src.metadata().at("k"), "v");
  }
}

TEST(TensorSource, MissingShard) {
  Sharded s;
  fs::remove(s.d / "model-00002-of-00002.safetensors");
  expect_source_error(s.idx(), {s.idx(), "\"model-00002-of-00002.safetensors\"", "\"c\"", "download"});
}

TEST(TensorSource, TensorListedButAbsentFromShard) {
  Sharded s;
  s.index(R"({"weight_map": {"a": "model-00001-of-00002.safetensors", "zz": "model-00002-of-00002.safetensors"}})");
  expect_source_error(s.idx(), {s.idx(), "tensor \"zz\"", "absent", "model-00002-of-00002.safetensors"});
}

TEST(TensorSource, SameTensorInTwoShards) {
  Sharded s;
  SafetensorsWriter w;
  w.add("c", s.c);
  w.add("a", s.a);  // also in shard 1
  w.write(s.d / "model-00002-of-00002.safetensors");
  expect_source_error(s.idx(), {"tensor \"a\"", "two shards"});
}

TEST(TensorSource, BadIndex) {
  Sharded s;
  s.index("[1]");
  expect_source_error(s.idx(), {s.idx(), "not a JSON object"});
  s.index("{\"metadata\": {}}");
  expect_source_error(s.idx(), {s.idx(), "weight_map"});
  s.index("{\"weight_map\": {\"a\": 3}}");
  expect_source_error(s.idx(), {"tensor \"a\"", "not a shard file name"});
  s.index("{\"weight_map\": {\"a\": \"../x.safetensors\"}}");
  expect_source_error(s.idx(), {"tensor \"a\"", "relative path"});
  s.index("{\"weight_map\": ");
  expect_source_error(s.idx(), {s.idx(), "not valid JSON"});
}

TEST(TensorSource, DirectoryAmbiguityErrors) {
  TmpDir d;
  expect_source_error(d.path(), {d.path(), "no *.safetensors", "empty"});
  write_raw(d / "notes.txt", "x");
  expect_source_error(d.path(), {"\"notes.txt\""});
  SafetensorsWriter w;
  w.add("x", Tensor::from_f32({1}, {1}));
  w.write(d / "a.safetensors");
  w.write(d / "b.safetensors");
  expect_source_error(d.path(), {"2 *.safetensors files", "\"a.safetensors\"", "\"b.safetensors\"", "no *.safetensors.index.json"});
  write_raw(d / "one.safetensors.index.json", "{\"weight_map\": {\"x\": \"a.safetensors\"}}");
  EXPECT_EQ(TensorSource::open(d.path()).names(), std::vector<std::string>{"x"});
  write_raw(d / "two.safetensors.index.json", "{\"weight_map\": {}}");
  expect_source_error(d.path(), {"2 *.safetensors.index.json", "\"one.safetensors.index.json\""});
  expect_source_error(d / "nope", {d / "nope", "No such file"});
}

// ============================================================================ oboro info

#ifdef OBORO_BINARY
namespace {
int run_cmd(const std::string& cmd, std::string* out) {
  std::string full = cmd + " 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out->append(buf, n);
  int st = ::pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
}  // namespace

TEST(InfoCommand, TextAndJson) {
  if (!fs::exists(OBORO_BINARY)) GTEST_SKIP() << "oboro binary not built";
  TmpDir d;
  SafetensorsWriter w;
  w.add("blocks.0.w", Tensor::zeros({40, 50}, DType::BF16));
  w.add("bias", Tensor::zeros({7}, DType::F32));
  w.set_metadata("oboro.config", "{\"dim\": 64, \"layers\": 2}");
  w.set_metadata("format", "pt");
  w.write(d / "m.safetensors");
  std::string out;
  ASSERT_EQ(run_cmd(std::string(OBORO_BINARY) + " info " + d / "m.safetensors", &out), 0) << out;
  EXPECT_NE(out.find("tensors: 2"), std::string::npos) << out;
  EXPECT_NE(out.find("parameters: 2,007"), std::string::npos) << out;
  EXPECT_NE(out.find("blocks.0.w"), std::string::npos) << out;
  EXPECT_NE(out.find("(40, 50)"), std::string::npos) << out;
  EXPECT_NE(out.find("BF16: 1 tensor, 2,000 parameters"), std::string::npos) << out;
  EXPECT_NE(out.find("config:"), std::string::npos) << out;
  EXPECT_NE(out.find("\"layers\": 2"), std::string::npos) << out;
  EXPECT_NE(out.find("format: pt"), std::string::npos) << out;

  out.clear();
  ASSERT_EQ(run_cmd(std::string(OBORO_BINARY) + " info --json " + d / "m.safetensors", &out), 0) << out;
  json j = json::parse(out);
  EXPECT_EQ(j["file"], d / "m.safetensors");
  EXPECT_EQ(j["parameters"], 2007);
  ASSERT_EQ(j["tensors"].size(), 2u);
  EXPECT_EQ(j["tensors"][0]["name"], "bias");
  EXPECT_EQ(j["tensors"][1]["dtype"], "BF16");
  EXPECT_EQ(j["tensors"][1]["shape"], json::array({40, 50}));
  EXPECT_EQ(j["metadata"]["format"], "pt");
  EXPECT_EQ(j["config"]["layers"], 2);

  Sharded s;
  out.clear();
  ASSERT_EQ(run_cmd(std::string(OBORO_BINARY) + " info --json " + s.d.path(), &out), 0) << out;
  j = json::parse(out);
  EXPECT_EQ(j["tensors"].size(), 3u);
  EXPECT_EQ(j["parameters"], 4 + 4 + 3);
  EXPECT_TRUE(j["config"].is_null());

  write_raw(d / "bad.safetensors", image("{\"w\": 3}"));
  out.clear();
  EXPECT_EQ(run_cmd(std::string(OBORO_BINARY) + " info " + d / "bad.safetensors", &out), 1) << out;
  EXPECT_EQ(out.rfind("oboro: error: " + d / "bad.safetensors" + ": tensor \"w\"", 0), 0u) << out;
}
#endif

// ============================================================================ corruption fuzz

namespace {

struct Corpus {
  std::string img;
  std::vector<std::string> names;
};

Corpus build_corpus() {
  SafetensorsWriter w;
  Corpus c;
  std::vector<std::pair<std::string, Tensor>> ts = {
      {"a.weight", make({3, 4}, DType::F32, 1)}, {"b.bias", make({5}, DType::F16, 2)},
      {"c", make({2, 2, 2}, DType::BF16, 3)},    {"d.f8", make({6}, DType::F8_E4M3, 4)},
      {"e.idx", make({3}, DType::I64, 5)},       {"f.mask", make({4}, DType::BOOL, 6)},
      {"g.empty", Tensor::empty({0}, DType::F32)}, {"h.scalar", make({}, DType::F64, 7)},
  };
  for (auto& [n, t] : ts) {
    w.add(n, t);
    c.names.push_back(n);
  }
  w.set_metadata("format", "pt");
  w.set_metadata("oboro.config", "{\"dim\": 12}");
  TmpDir d;
  w.write(d / "seed.safetensors");
  c.img = read_file(d / "seed.safetensors");
  return c;
}

uint64_t hdr_len(const std::string& img) {
  uint64_t n = 0;
  for (int i = 0; i < 8 && i < (int)img.size(); ++i) n |= (uint64_t)(uint8_t)img[i] << (8 * i);
  return n;
}

void set_hdr_len(std::string& img, uint64_t n) {
  if (img.size() < 8) return;
  std::string l = le64(n);
  std::copy(l.begin(), l.end(), img.begin());
}

// Header bounds that are valid for this image, for header-aware mutations.
bool header_range(const std::string& img, size_t* lo, size_t* hi) {
  if (img.size() < 9) return false;
  uint64_t n = hdr_len(img);
  if (n == 0 || n > img.size() - 8) return false;
  *lo = 8;
  *hi = 8 + (size_t)n;
  return true;
}

// Replace [pos, pos+len) of the header with `ins` and keep the length prefix consistent.
void splice_header(std::string& img, size_t pos, size_t len, const std::string& ins) {
  uint64_t n = hdr_len(img);
  img.replace(pos, len, ins);
  set_hdr_len(img, n - len + ins.size());
}

void mutate(std::string& img, std::mt19937_64& rng, const Corpus& c) {
  static const char kJsonish[] = "{}[]\":,0123456789-+eE. \\tnulfrsa_";
  auto rnd = [&](uint64_t n) { return n ? rng() % n : 0; };
  size_t lo, hi;
  switch (rnd(10)) {
    case 0: {  // flip bytes anywhere in the header region (length prefix included)
      size_t end = std::min(img.size(), header_range(img, &lo, &hi) ? hi : img.size());
      for (int k = 0, m = 1 + (int)rnd(4); k < m && end; ++k) img[rnd(end)] ^= (char)(1 + rnd(255));
      break;
    }
    case 1:  // truncate
      img.resize(rnd(img.size() + 1));
      break;
    case 2: {  // change the length prefix
      uint64_t n = hdr_len(img);
      switch (rnd(4)) {
        case 0: n = rng(); break;
        case 1: n += (int64_t)rnd(33) - 16; break;
        case 2: n = rnd(img.size() + 16); break;
        default: n = (uint64_t)1 << rnd(64); break;
      }
      if (img.size() >= 8) set_hdr_len(img, n);
      break;
    }
    case 3: {  // splice digits into a JSON number
      if (!header_range(img, &lo, &hi)) break;
      std::vector<size_t> digits;
      for (size_t i = lo; i < hi; ++i)
        if (img[i] >= '0' && img[i] <= '9') digits.push_back(i);
      if (digits.empty()) break;
      size_t at = digits[rnd(digits.size())] + rnd(2);
      std::string ins;
      for (int k = 0, m = 1 + (int)rnd(22); k < m; ++k) ins += (char)('0' + rnd(10));
      if (rnd(3) == 0) img.insert(at, ins);  // sometimes leave the length prefix stale
      else splice_header(img, at, 0, ins);
      break;
    }
    case 4: {  // replace a number with an interesting one
      if (!header_range(img, &lo, &hi)) break;
      std::vector<size_t> starts;
      for (size_t i = lo + 1; i < hi; ++i)
        if (img[i] >= '0' && img[i] <= '9' && !(img[i - 1] >= '0' && img[i - 1] <= '9')) starts.push_back(i);
      if (starts.empty()) break;
      size_t s = starts[rnd(starts.size())], e = s;
      while (e < hi && img[e] >= '0' && img[e] <= '9') ++e;
      static const char* kNums[] = {"-1", "0", "1", "18446744073709551615", "18446744073709551616",
                                    "9223372036854775807", "9223372036854775808", "4611686018427387904",
                                    "1e3", "1.5", "-0", "4294967296", "2305843009213693952", "99999999999999999999999"};
      std::string rep = rnd(4) == 0 ? std::to_string(rng() >> rnd(64)) : kNums[rnd(std::size(kNums))];
      splice_header(img, s, e - s, rep);
      break;
    }
    case 5: {  // duplicate a tensor entry (duplicate key), possibly with shifted offsets
      if (!header_range(img, &lo, &hi)) break;
      const std::string& nm = c.names[rnd(c.names.size())];
      size_t s = img.find("\"" + nm + "\":{", lo);
      if (s == std::string::npos || s >= hi) break;
      size_t e = img.find('}', s);
      if (e == std::string::npos || e >= hi) break;
      std::string dup = img.substr(s, e + 1 - s);
      if (rnd(2)) {
        size_t q = dup.find("\"" + nm + "\"");
        dup.replace(q, nm.size() + 2, "\"" + nm + "_copy\"");  // distinct key, same bytes: overlap
      }
      splice_header(img, lo + 1, 0, dup + ",");
      break;
    }
    case 6: {  // insert JSON-ish junk
      if (!header_range(img, &lo, &hi)) break;
      std::string ins;
      for (int k = 0, m = 1 + (int)rnd(6); k < m; ++k) ins += kJsonish[rnd(sizeof kJsonish - 1)];
      splice_header(img, lo + rnd(hi - lo + 1), 0, ins);
      break;
    }
    case 7: {  // delete a range of the header
      if (!header_range(img, &lo, &hi)) break;
      size_t s = lo + rnd(hi - lo), len = 1 + rnd(std::min<size_t>(12, hi - s));
      splice_header(img, s, std::min(len, hi - s), "");
      break;
    }
    case 8: {  // swap a dtype name
      if (!header_range(img, &lo, &hi)) break;
      static const char* kD[] = {"F32", "F16", "BF16", "F8_E4M3", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL",
                                 "F8_E5M2", "U64", "", "f32"};
      size_t s = img.find("\"dtype\":\"", lo + rnd(hi - lo));
      if (s == std::string::npos || s >= hi) break;
      s += 9;
      size_t e = img.find('"', s);
      if (e == std::string::npos || e >= hi) break;
      splice_header(img, s, e - s, kD[rnd(std::size(kD))]);
      break;
    }
    default: {  // shrink or grow the data section
      if (rnd(2) && !img.empty()) img.resize(img.size() - 1 - rnd(std::min<size_t>(img.size(), 40) ));
      else img.append(rnd(40), (char)rnd(256));
      break;
    }
  }
}

}  // namespace

TEST(SafetensorsFuzz, RandomCorruptionNeverCrashes) {
  const Corpus c = build_corpus();
  ASSERT_EQ(SafetensorsFile::from_bytes(c.img, "seed")->tensors().size(), c.names.size());
  std::mt19937_64 rng(0x0b0f0);
  int parsed = 0, rejected = 0;
  const int kIters = 20000;
  for (int it = 0; it < kIters; ++it) {
    std::string img = c.img;
    for (int k = 0, m = 1 + (int)(rng() % 3); k < m; ++k) mutate(img, rng, c);
    std::shared_ptr<SafetensorsFile> f;
    try {
      f = SafetensorsFile::from_bytes(img, "fuzz");
    } catch (const oboro::Error& e) {
      std::string m = e.what();
      ASSERT_EQ(m.rfind("fuzz: ", 0), 0u) << "iteration " << it << ": " << m;
      ASSERT_EQ(m.find('\n'), std::string::npos) << "iteration " << it << ": " << m;
      ++rejected;
      continue;
    } catch (const std::exception& e) {
      FAIL() << "iteration " << it << ": non-oboro exception: " << e.what();
    }
    ++parsed;
    // Parsed: every tensor must be fully readable inside the buffer (ASan checks the reads).
    uint64_t sum = 0;
    for (const auto& ti : f->tensors()) {
      ASSERT_LE(ti.begin, ti.end);
      ASSERT_LE(ti.end, img.size());
      Tensor t = f->tensor(ti.name);
      ASSERT_EQ(t.nbytes(), ti.end - ti.begin);
      const auto* p = static_cast<const uint8_t*>(t.raw());
      for (size_t i = 0; i < t.nbytes(); ++i) sum += p[i];
      Tensor t32 = f->tensor_f32(ti.name);
      ASSERT_EQ(t32.numel(), t.numel());
      for (int64_t i = 0; i < t32.numel(); ++i) sum += (uint64_t)(t32.f32()[i] == t32.f32()[i]);
    }
    (void)sum;
  }
  RecordProperty("parsed", parsed);
  RecordProperty("rejected", rejected);
  EXPECT_GT(parsed, 100);
  EXPECT_GT(rejected, kIters / 2);
}
