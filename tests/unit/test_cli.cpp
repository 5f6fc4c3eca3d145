// The `oboro` binary on bad input: every failure is ONE line on stderr naming the file, the
// tensor and the problem, with a non-zero exit and no crash (also run under ASan/UBSan).
#include "core/tensor.h"
#include "io/safetensors.h"
#include "models/dit.h"
#include "ops/backend.h"
#include <gtest/gtest.h>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sys/wait.h>

using namespace oboro;
namespace fs = std::filesystem;

namespace {

struct Result {
  int code;
  std::string out, err;
};

Result run(const std::string& args) {
  fs::path dir = fs::temp_directory_path() / ("oboro_cli_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::string out = (dir / "stdout").string(), err = (dir / "stderr").string();
  std::string cmd = std::string(OBORO_BINARY) + " " + args + " >" + out + " 2>" + err;
  int st = std::system(cmd.c_str());
  auto slurp = [](const std::string& p) {
    std::ifstream f(p);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), slurp(out), slurp(err)};
}

std::string tmp(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("oboro_cli_files_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return (d / name).string();
}

std::string read_bytes(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void write_bytes(const std::string& p, const std::string& b) {
  std::ofstream f(p, std::ios::binary);
  f << b;
}

DiTConfig cfg() {
  DiTConfig c;
  c.hidden_size = 32;
  c.heads = {2, 4, 8, 8};
  c.ffn_hidden_size = 48;
  c.text_dim = 16;
  c.latent_channels = 4;
  c.patch_size = 2;
  return c;
}

std::string model_file() {
  static std::string p = [] {
    std::string path = tmp("model.safetensors");
    DiT m(cfg(), cpu_backend());
    m.init_random_all(1);
    m.save(path);
    return path;
  }();
  return p;
}

// Replace the JSON header of a safetensors image (keeping the data section).
std::string with_header(const std::string& img, const std::string& header, int64_t claimed_len = -1) {
  uint64_t n = 0;
  std::memcpy(&n, img.data(), 8);
  std::string data = img.substr(8 + n);
  uint64_t len = claimed_len >= 0 ? (uint64_t)claimed_len : header.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &len, 8);
  return out + header + data;
}

std::string header_of(const std::string& img) {
  uint64_t n = 0;
  std::memcpy(&n, img.data(), 8);
  return img.substr(8, n);
}

void expect_one_line_error(const Result& r, std::initializer_list<std::string> needles) {
  EXPECT_NE(r.code, 0);
  EXPECT_LT(r.code, 128) << "crashed (signal " << r.code - 128 << "): " << r.err;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "more than one line:\n" << r.err;
  EXPECT_EQ(r.err.rfind("oboro: error: ", 0), 0u) << r.err;
  for (const auto& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << "missing '" << n << "' in: " << r.err;
}

}  // namespace

TEST(Cli, InfoOnAGoodModel) {
  Result r = run("info " + model_file());
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("layers.3.feed_forward.w2.weight"), std::string::npos);
  EXPECT_NE(r.out.find("hidden_size"), std::string::npos);
  r = run("info --json " + model_file());
  EXPECT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["parameters"].get<int64_t>(), cfg().param_count());
  EXPECT_EQ(j["config"]["hidden_size"], 32);
}

TEST(Cli, TruncatedFile) {
  std::string img = read_bytes(model_file());
  std::string p = tmp("truncated.safetensors");
  write_bytes(p, img.substr(0, img.size() - 100));
  expect_one_line_error(run("info " + p), {p});
  write_bytes(p, img.substr(0, 5));
  expect_one_line_error(run("info " + p), {p});
}

TEST(Cli, HeaderLiesAboutOffsetsAndSizes) {
  std::string img = read_bytes(model_file());
  std::string h = header_of(img);
  // Make x_embedder.bias claim one more element than its bytes.
  std::string p = tmp("lying.safetensors");
  auto pos = h.find("\"x_embedder.bias\"");
  ASSERT_NE(pos, std::string::npos);
  auto sp = h.find("\"shape\":[32]", pos);
  ASSERT_NE(sp, std::string::npos) << h.substr(pos, 120);
  std::string h2 = h;
  h2.replace(sp, 12, "\"shape\":[33]");
  write_bytes(p, with_header(img, h2));
  expect_one_line_error(run("info " + p), {p, "x_embedder.bias"});
  // Header length pointing past the end of the file.
  write_bytes(p, with_header(img, h, (int64_t)img.size() * 2));
  expect_one_line_error(run("info " + p), {p});
}

TEST(Cli, UnknownDtype) {
  std::string img = read_bytes(model_file());
  std::string h = header_of(img);
  auto pos = h.find("\"x_embedder.bias\"");
  auto dp = h.find("\"F32\"", pos);
  h.replace(dp, 5, "\"Q99\"");
  std::string p = tmp("dtype.safetensors");
  write_bytes(p, with_header(img, h));
  expect_one_line_error(run("info " + p), {p, "x_embedder.bias", "Q99"});
}

TEST(Cli, MissingTensorWrongShapeInconsistentConfig) {
  DiT m(cfg(), cpu_backend());
  m.init_random_all(2);
  auto host = download_params(m.layout(), m.params(), cpu_backend());
  auto save = [&](const std::string& name, std::vector<std::pair<std::string, Tensor>> ts, const DiTConfig& c) {
    SafetensorsWriter w;
    for (auto& [n, t] : ts) w.add(n, t);
    w.set_metadata("oboro.config", c.to_json().dump());
    std::string p = tmp(name);
    w.write(p);
    return p;
  };
  std::string in = tmp("in.safetensors");
  {
    SafetensorsWriter w;
    Tensor x = Tensor::zeros({1, 4, 4, 4}), t = Tensor::zeros({1}), txt = Tensor::zeros({1, 3, 16}),
           mask = Tensor::from_f32({1, 1, 1}, {1, 3});
    w.add("x", x); w.add("t", t); w.add("txt", txt); w.add("txt_mask", mask);
    w.write(in);
  }
  std::string out = tmp("out.safetensors");
  auto ts = host;
  ts.erase(ts.begin() + 5);
  std::string p = save("missing.safetensors", ts, cfg());
  expect_one_line_error(run("debug dit --model " + p + " --inputs " + in + " --output " + out), {p, host[5].first, "missing"});

  ts = host;
  ts[2].second = Tensor::zeros({7});
  p = save("shape.safetensors", ts, cfg());
  expect_one_line_error(run("debug dit --model " + p + " --inputs " + in + " --output " + out), {p, host[2].first, "(7,)"});

  DiTConfig bad = cfg();
  bad.heads = {2, 4, 8, 16};  // 32 is not divisible by 4·16
  p = save("inconsistent.safetensors", host, bad);
  expect_one_line_error(run("debug dit --model " + p + " --inputs " + in + " --output " + out), {p, "4·max(heads) = 64"});

  // A good model with inputs of the wrong shape.
  std::string in2 = tmp("in_bad.safetensors");
  {
    SafetensorsWriter w;
    Tensor x = Tensor::zeros({1, 3, 4, 4}), t = Tensor::zeros({1}), txt = Tensor::zeros({1, 3, 16}),
           mask = Tensor::from_f32({1, 1, 1}, {1, 3});
    w.add("x", x); w.add("t", t); w.add("txt", txt); w.add("txt_mask", mask);
    w.write(in2);
  }
  expect_one_line_error(run("debug dit --model " + model_file() + " --inputs " + in2 + " --output " + out),
                        {in2, "latent_channels = 4"});
  // And it works with the right inputs.
  Result r = run("debug dit --model " + model_file() + " --inputs " + in + " --output " + out);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(SafetensorsFile::open(out)->info("v").shape, (Shape{1, 4, 4, 4}));
}

TEST(Cli, MissingFileAndBadFlag) {
  expect_one_line_error(run("info /nonexistent/model.safetensors"), {"/nonexistent/model.safetensors"});
  Result r = run("info --no-such-flag x");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("no-such-flag"), std::string::npos) << r.err;
}
