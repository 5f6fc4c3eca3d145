// The generation pipeline (issue 5, items 4–6) on tiny random models written by the test: img2img (strength 0 gives
// the re-encoded init image, strength 1 equals txt2img), the refine pass (size, infotext), the memory plan (weight
// bytes from the headers equal the files' tensor bytes, activation estimates equal what the models allocate, the
// refusal), ComfyUI-style folders, and the schedule / resize helpers. No timing.
#include "test_util.h"
#include "core/error.h"
#include "core/rng.h"
#include "flow/flow.h"
#include "flow/generate.h"
#include "flow/infotext.h"
#include "flow/inpaint.h"
#include "flow/memory_plan.h"
#include "flow/upscale.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "models/codec.h"
#include "models/dit.h"
#include "models/text_encoder.h"
#include "models/vae.h"
#include "ops/backend.h"
#include "ops/checked_backend.h"
#include <gtest/gtest.h>
#include <unistd.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

using namespace oboro;
namespace fs = std::filesystem;

namespace {

using oboro::test::error_of;

fs::path root() { return oboro::test::process_tmpdir("oboro_pipeline"); }

DiTConfig tiny_dit(const std::string& codec, int channels) {
  DiTConfig c;
  c.hidden_size = 32;
  c.heads = {2, 2};
  c.ffn_hidden_size = 48;
  c.text_dim = 16;
  c.latent_channels = channels;
  c.patch_size = 2;
  c.codec = codec;
  return c;
}

std::string write_dit(const fs::path& path, const DiTConfig& c, uint64_t seed, const std::string& te_name) {
  DiT d(c, cpu_backend());
  d.init_random_all(seed);
  // Small weights keep the velocity moderate (random weights of full scale saturate the tiny model).
  for (size_t i = 0; i < d.num_params(); ++i) d.params()[i] *= 0.3f;
  d.save(path.string(), {{"oboro.text_encoder", te_name}});
  return path.string();
}

std::string write_vae(const fs::path& path) {
  VaeConfig c;
  c.ch = 32;
  c.ch_mult = {1, 2};
  c.enc_blocks = 1;
  c.dec_blocks = 1;
  c.z_channels = 4;
  Vae v(c, cpu_backend());
  v.init_random(5);
  v.save(path.string());
  return path.string();
}

struct Models {
  std::string te, pix, flux, flux2, vae;
};
const Models& models() {
  static Models m = [] {
    Models r;
    r.te = oboro::test::write_tiny_text_encoder(root() / "te.safetensors", root());
    r.pix = write_dit(root() / "pix.safetensors", tiny_dit("pixels", 3), 1, "te.safetensors");
    r.flux = write_dit(root() / "flux.safetensors", tiny_dit("flux-vae", 4), 2, "te.safetensors");
    r.flux2 = write_dit(root() / "refiner.safetensors", tiny_dit("flux-vae", 4), 9, "te.safetensors");
    r.vae = write_vae(root() / "ae.safetensors");
    return r;
  }();
  return m;
}

Image test_image(int W, int H) {
  Image im;
  im.width = W;
  im.height = H;
  im.rgb.resize((size_t)W * H * 3);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < 3; ++c) im.rgb[((size_t)y * W + x) * 3 + c] = (uint8_t)((x * 37 + y * 11 + c * 80) % 256);
  return im;
}

GenerateRequest base_request(const std::string& model) {
  GenerateRequest rq;
  rq.model = model;
  rq.prompt = "a red square on left";
  rq.negative_prompt = "blue";
  rq.steps = 4;
  rq.cfg_scale = 3.f;
  rq.seed = 42;
  rq.width = 16;
  rq.height = 8;
  rq.vae = models().vae;
  return rq;
}

std::map<std::string, std::string> params_of(const std::string& infotext) {
  std::map<std::string, std::string> m;
  for (auto& [k, v] : parse_infotext(infotext).params) m[k] = v;
  return m;
}

}  // namespace

TEST(Pipeline, ScheduleFromStrength) {
  const int N = 1196;
  EXPECT_EQ(euler_timesteps_from(30, N, true, 1.0), euler_timesteps(30, N, true));
  for (double s : {0.25, 0.5, 0.75}) {
    auto t = euler_timesteps_from(30, N, true, s);
    EXPECT_EQ((int)t.size() - 1, (int)std::lround(30 * s));
    EXPECT_NEAR(t.front(), 1.0 - s, 1e-6);
    EXPECT_EQ(t.back(), 1.f);
    for (size_t i = 1; i < t.size(); ++i) EXPECT_GT(t[i], t[i - 1]);
  }
  EXPECT_EQ(euler_timesteps_from(30, N, true, 0.0), std::vector<float>{1.f});
  EXPECT_EQ(img2img_steps(30, 0.01), 1);
}

TEST(Pipeline, ResizePlanes) {
  std::vector<float> c(2 * 4 * 6, 0.25f), o(2 * 8 * 12);
  for (auto f : {ResizeFilter::Nearest, ResizeFilter::Bilinear, ResizeFilter::Lanczos}) {
    resize_planes(c.data(), 2, 4, 6, o.data(), 8, 12, f);
    for (float v : o) EXPECT_NEAR(v, 0.25f, 1e-5f);  // a constant stays constant
  }
  std::vector<float> a = {1, 2, 3, 4}, n(16);
  resize_planes(a.data(), 1, 2, 2, n.data(), 4, 4, ResizeFilter::Nearest);
  EXPECT_EQ(n, (std::vector<float>{1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4}));
}

// strength 0: no step runs and the output is the init image through the codec (pixels: exactly the image).
TEST(Pipeline, Img2imgStrengthZeroReturnsTheEncodedImage) {
  const fs::path img = root() / "init.png";
  save_png(img.string(), test_image(16, 8));
  GenerateRequest rq = base_request(models().pix);
  rq.init_image = img.string();
  rq.strength = 0.f;
  auto out = generate(cpu_backend(), rq, false);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].image.rgb, test_image(16, 8).rgb);
  EXPECT_EQ(params_of(out[0].infotext)["Denoising strength"], "0");

  // FLUX-VAE codec: decode(encode(image)); without a size the image's own (24x12, a multiple of this model's 4).
  const fs::path img2 = root() / "init2.png";
  save_png(img2.string(), test_image(24, 12));
  rq = base_request(models().flux);
  rq.width = rq.height = 0;
  rq.init_image = img2.string();
  rq.strength = 0.f;
  out = generate(cpu_backend(), rq, false);
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].image.width, 24);
  ASSERT_EQ(out[0].image.height, 12);
  LatentCodec codec = LatentCodec::open("flux-vae", 1, models().vae, cpu_backend(), "--vae");
  std::vector<float> chw(3 * 24 * 12), lat(4 * 12 * 6), back(chw.size());
  image_to_chw(test_image(24, 12), chw.data());
  codec.encode(chw.data(), 12, 24, lat.data());
  codec.decode(lat.data(), 12, 24, back.data());
  EXPECT_EQ(out[0].image.rgb, chw_to_image(back.data(), 12, 24).rgb);
}

TEST(Pipeline, Img2imgStrengthOneEqualsTxt2img) {
  const fs::path img = root() / "init.png";
  save_png(img.string(), test_image(16, 8));
  for (const std::string& m : {models().pix, models().flux}) {
    GenerateRequest rq = base_request(m);
    rq.batch_size = 2;
    auto t2i = generate(cpu_backend(), rq, false);
    rq.init_image = img.string();
    rq.strength = 1.f;
    auto i2i = generate(cpu_backend(), rq, false);
    ASSERT_EQ(t2i.size(), 2u);
    ASSERT_EQ(i2i.size(), 2u);
    for (int i = 0; i < 2; ++i) EXPECT_EQ(t2i[i].image.rgb, i2i[i].image.rgb) << m << " image " << i;
    // A partial strength changes the result, and runs from the image: closer to it than txt2img is.
    rq.strength = 0.3f;
    auto part = generate(cpu_backend(), rq, false);
    auto dist = [&](const Image& a) {
      double d = 0;
      for (size_t k = 0; k < a.rgb.size(); ++k) d += std::abs((int)a.rgb[k] - (int)test_image(16, 8).rgb[k]);
      return d;
    };
    EXPECT_LT(dist(part[0].image), dist(t2i[0].image)) << m;
  }
}

TEST(Pipeline, RefinePassSizeAndInfotext) {
  GenerateRequest rq = base_request(models().flux);
  rq.hr_scale = 2.f;
  rq.hr_steps = 3;
  rq.hr_strength = 0.5f;
  auto out = generate(cpu_backend(), rq, false);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].image.width, 32);
  EXPECT_EQ(out[0].image.height, 16);
  auto p = params_of(out[0].infotext);
  EXPECT_EQ(p["Size"], "16x8");
  EXPECT_EQ(p["Hires upscale"], "2");
  EXPECT_EQ(p["Hires steps"], "3");
  EXPECT_EQ(p["Hires upscaler"], "Latent");
  EXPECT_EQ(p["Denoising strength"], "0.5");
  EXPECT_EQ(p.count("Hires checkpoint"), 0u);
  auto j = nlohmann::json::parse(out[0].request_json);
  EXPECT_EQ(j["enable_hr"], true);
  EXPECT_EQ(j["hr_upscaler"], "Latent");

  // Pixel upscaler, explicit size, a separate refiner model.
  rq.hr_scale = 0;
  rq.hr_resize_x = 24;
  rq.hr_upscaler = "Lanczos";
  rq.hr_model = models().flux2;
  out = generate(cpu_backend(), rq, false);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].image.width, 24);
  EXPECT_EQ(out[0].image.height, 12);
  p = params_of(out[0].infotext);
  EXPECT_EQ(p["Hires resize"], "24x12");
  EXPECT_EQ(p["Hires upscaler"], "Lanczos");
  EXPECT_EQ(p["Hires checkpoint"], "refiner");

  rq.hr_upscaler = "ESRGAN_4x";
  std::string m = error_of([&] { generate(cpu_backend(), rq, false); });
  EXPECT_NE(m.find("--hr-upscaler 'ESRGAN_4x'"), std::string::npos) << m;
}

// Weight bytes come from the headers and equal the files' tensor bytes; F32 files take as much in memory.
TEST(Pipeline, MemoryPlanWeightsEqualTheFiles) {
  auto file_bytes = [](const std::string& path) {
    auto f = SafetensorsFile::open(path);
    size_t b = 0;
    int64_t n = 0;
    for (const auto& t : f->tensors()) {
      b += t.end - t.begin;
      n += shape_numel(t.shape);
    }
    return std::make_pair(b, n);
  };
  for (auto [w, path] : {std::make_pair(t5_weight_info(models().te), models().te),
                         std::make_pair(dit_weight_info(models().flux), models().flux),
                         std::make_pair(vae_weight_info(models().vae), models().vae)}) {
    auto [b, n] = file_bytes(path);
    EXPECT_EQ(w.file_bytes, b) << path;
    EXPECT_EQ(w.params, n) << path;
    EXPECT_GE(w.resident_bytes, (size_t)n * 4) << path;
    EXPECT_LT(w.resident_bytes, (size_t)n * 4 + 64 * 200) << path;  // F32 plus the 64-byte alignment of each view
    EXPECT_EQ(w.dtypes, "F32");
  }
  MemoryPlan plan = plan_generation(base_request(models().flux));
  ASSERT_EQ(plan.weights.size(), 3u);
  EXPECT_EQ(plan.weights[0].file_bytes, file_bytes(models().te).first);
  EXPECT_EQ(plan.weights[1].file_bytes, file_bytes(models().flux).first);
  EXPECT_EQ(plan.weights[2].file_bytes, file_bytes(models().vae).first);
  ASSERT_EQ(plan.stages.size(), 3u);  // T5, DiT, VAE decode: one component each
  EXPECT_EQ(plan.stages[0].weights, plan.weights[0].resident_bytes);
  EXPECT_EQ(plan.stages[1].weights, plan.weights[1].resident_bytes);
  EXPECT_EQ(plan.stages[2].weights, plan.weights[2].resident_bytes);
  EXPECT_NE(plan.format().find("peak"), std::string::npos);
}

// The activation estimates are exactly what the models' planners allocate.
TEST(Pipeline, ActivationEstimatesMatchThePlanners) {
  Backend& be = cpu_backend();
  DiTConfig c = tiny_dit("flux-vae", 4);
  c.heads = {2, 4};
  DiT d(c, be);
  d.init_random_all(1);
  for (auto [B, L, h, w] : {std::array<int, 4>{2, 5, 4, 6}, std::array<int, 4>{1, 3, 8, 2}}) {
    std::vector<float> x((size_t)B * 4 * h * w, 0.1f), v(x.size()), t(B, 0.5f), txt((size_t)B * L * 16, 0.2f),
        mask((size_t)B * L, 1.f);
    d.forward(v.data(), x.data(), t.data(), txt.data(), mask.data(), B, L, h, w, false);
    EXPECT_EQ(dit_activation_bytes(c, B, L, h, w), d.activation_bytes());
  }
  T5Config tc = t5_config_of(models().te);
  auto te = TextEncoder::load(models().te, be);
  te->encode({"a red square on left"}, false);
  const int L = (int)te->tokenizer().encode("a red square on left").size();
  EXPECT_EQ(t5_activation_bytes(tc, 1, L), te->t5().activation_bytes());
}

TEST(Pipeline, RefusesWhenTheBudgetIsTooSmall) {
  GenerateRequest rq = base_request(models().flux);
  rq.max_memory = 64 << 10;  // 64 KiB
  std::string m = error_of([&] { generate(cpu_backend(), rq, false); });
  EXPECT_NE(m.find("not enough memory"), std::string::npos) << m;
  EXPECT_NE(m.find("--max-memory"), std::string::npos) << m;
  EXPECT_NE(m.find("biggest component"), std::string::npos) << m;
  EXPECT_NE(m.find("Fix:"), std::string::npos) << m;
  EXPECT_FALSE(plan_generation(rq).fits());
  rq.check_memory = false;
  EXPECT_EQ(generate(cpu_backend(), rq, false).size(), 1u);
  EXPECT_EQ(parse_bytes("6G", "x"), size_t(6) << 30);
  EXPECT_EQ(parse_bytes("512MiB", "x"), size_t(512) << 20);
  EXPECT_NE(error_of([] { parse_bytes("lots", "--max-memory"); }).find("--max-memory 'lots'"), std::string::npos);

  // CLI: the refusal is one error line and exit code 1; --memory-plan prints the plan and exits 0.
  const std::string base = std::string(OBORO_BINARY) + " generate 'a red square' -m " + models().flux + " --vae " +
                           models().vae + " --size 16x8 --steps 1 -o " + (root() / "cli").string();
  const std::string log = (root() / "cli.log").string();
  EXPECT_NE(std::system((base + " --max-memory 1M >" + log + " 2>&1").c_str()), 0);
  std::ifstream f(log);
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("oboro: error: not enough memory"), std::string::npos) << text;
  EXPECT_EQ(std::system((base + " --memory-plan >" + log + " 2>&1").c_str()), 0);
  std::ifstream g(log);
  text.assign((std::istreambuf_iterator<char>(g)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("memory plan"), std::string::npos) << text;
  EXPECT_FALSE(fs::exists(root() / "cli"));
}

TEST(Pipeline, ComfyUIFolders) {
  const fs::path dir = root() / "comfy";
  for (const char* s : {"diffusion_models", "text_encoders", "vae"}) fs::create_directories(dir / s);
  fs::copy_file(models().flux, dir / "diffusion_models" / "flux.safetensors", fs::copy_options::overwrite_existing);
  fs::copy_file(models().te, dir / "text_encoders" / "t5.safetensors", fs::copy_options::overwrite_existing);
  fs::copy_file(models().vae, dir / "vae" / "ae.safetensors", fs::copy_options::overwrite_existing);
  GenerateRequest rq = base_request("flux");  // bare name, ".safetensors" added
  rq.text_encoder = "t5.safetensors";
  rq.vae = "";                                 // DIR/vae/ae.safetensors by default
  rq.models_dir = dir.string();
  auto out = generate(cpu_backend(), rq, false);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].image.rgb, generate(cpu_backend(), base_request(models().flux), false)[0].image.rgb);

  // $OBORO_MODELS_DIR when --models-dir is not given.
  rq.models_dir = "";
  ::setenv("OBORO_MODELS_DIR", dir.string().c_str(), 1);
  EXPECT_EQ(generate(cpu_backend(), rq, false).size(), 1u);
  ::unsetenv("OBORO_MODELS_DIR");

  rq.models_dir = dir.string();
  rq.vae = "missing-vae.safetensors";
  std::string m = error_of([&] { generate(cpu_backend(), rq, false); });
  EXPECT_NE(m.find("--vae missing-vae.safetensors: not found; looked in:"), std::string::npos) << m;
  EXPECT_NE(m.find((dir / "vae" / "missing-vae.safetensors").string()), std::string::npos) << m;
  rq.vae = "";
  rq.models_dir = "";
  rq.text_encoder = "t5";
  m = error_of([&] { generate(cpu_backend(), rq, false); });
  EXPECT_NE(m.find("--models-dir DIR"), std::string::npos) << m;
}

// The FLUX-VAE pipeline (T5, DiT, VAE encode for img2img, a pixel-space refine with a second model, VAE decode) under
// the checking backend: every buffer crossing is an upload or a download, and the images are bitwise the CPU's.
TEST(Pipeline, CheckedBackendGivesTheCpuImages) {
  std::unique_ptr<Backend> checked = make_checked_backend(cpu_backend());
  const fs::path init = root() / "checked_init.png";
  save_png(init.string(), test_image(16, 8));
  std::vector<GenerateRequest> cases;
  cases.push_back(base_request(models().flux));
  cases.push_back(base_request(models().flux));
  cases.back().init_image = init.string();
  cases.back().strength = 0.6f;
  cases.push_back(base_request(models().flux));
  cases.back().hr_scale = 2.f;
  cases.back().hr_steps = 2;
  cases.back().hr_upscaler = "Lanczos";
  cases.back().hr_model = models().flux2;
  for (const GenerateRequest& rq : cases) {
    const auto want = generate(cpu_backend(), rq, false);
    const auto got = generate(*checked, rq, false);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].image.rgb, want[i].image.rgb) << rq.init_image << " hr " << rq.hr_scale;
      EXPECT_EQ(got[i].infotext, want[i].infotext);
    }
  }
}

// ---- inpainting (flow/inpaint.h) ----

namespace {
// A mask image: white (repaint) in columns [x0, x1), black elsewhere.
Image column_mask(int W, int H, int x0, int x1) {
  Image m;
  m.width = W;
  m.height = H;
  m.rgb.assign((size_t)W * H * 3, 0);
  for (int y = 0; y < H; ++y)
    for (int x = x0; x < x1; ++x)
      for (int c = 0; c < 3; ++c) m.rgb[((size_t)y * W + x) * 3 + c] = 255;
  return m;
}
}  // namespace

TEST(Inpaint, BlurIsTheNormalisedGaussianWithTheA1111Kernel) {
  // A single white pixel in 21x21 spreads over ±int(2.5σ+0.5) pixels exactly, symmetric, nothing beyond.
  const int W = 21, sigma = 2, r = (int)(2.5 * sigma + 0.5);
  std::vector<uint8_t> m((size_t)W * W, 0);
  for (int y = 0; y < W; ++y)
    for (int x = 8; x < 13; ++x) m[(size_t)y * W + x] = 255;  // a 5-column stripe
  const auto b = gaussian_blur_u8(m, W, W, sigma);
  for (int x = 0; x < W; ++x) {
    const bool band = x >= 8 - r && x < 13 + r;
    if (!band) {
      EXPECT_EQ(b[10 * W + x], 0) << x;
    }
    EXPECT_EQ(b[10 * W + x], b[10 * W + (W - 1 - x)]) << x;  // symmetric
    EXPECT_EQ(b[10 * W + x], b[3 * W + x]) << x;             // constant along the stripe
  }
  EXPECT_GT(b[10 * W + 8 - r], 0);  // the kernel's last tap reaches
  EXPECT_LT(b[10 * W + 8], 255);
  EXPECT_GT(b[10 * W + 10], 200);
  EXPECT_EQ(gaussian_blur_u8(m, W, W, 0), m);
}

TEST(Inpaint, MaskThresholdInvertLatentGridAndOverlay) {
  // 16x8 mask, white columns [4, 12); stride 2 → latent 8x4, repaint latent columns 2..5.
  InpaintMask k = make_inpaint_mask(column_mask(16, 8, 4, 12), 16, 8, 2, 0, false, "m.png");
  ASSERT_EQ(k.latent.size(), 32u);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 8; ++x) EXPECT_EQ(k.latent[y * 8 + x], x >= 2 && x < 6 ? 1.f : 0.f) << x;
  for (int x = 0; x < 16; ++x) EXPECT_EQ(k.overlay[3 * 16 + x], x >= 4 && x < 12 ? 1.f : 0.f) << x;
  EXPECT_TRUE(k.note.empty());
  // Inverted: the complement. Grey 128 is "keep" (luminance must exceed 128), 129 repaint.
  k = make_inpaint_mask(column_mask(16, 8, 4, 12), 16, 8, 2, 0, true, "m.png");
  for (int x = 0; x < 8; ++x) EXPECT_EQ(k.latent[x], x >= 2 && x < 6 ? 0.f : 1.f) << x;
  Image grey = column_mask(16, 8, 0, 0);
  for (auto& v : grey.rgb) v = 128;
  EXPECT_EQ(make_inpaint_mask(grey, 16, 8, 2, 0, false, "g").latent, std::vector<float>(32, 0.f));
  for (auto& v : grey.rgb) v = 129;
  EXPECT_EQ(make_inpaint_mask(grey, 16, 8, 2, 0, false, "g").latent, std::vector<float>(32, 1.f));
  // Blur 2: the overlay is min(1, 2·blurred), zero beyond the kernel radius (5 px) from the white columns.
  k = make_inpaint_mask(column_mask(32, 8, 12, 20), 32, 8, 2, 2, false, "m.png");
  for (int x = 0; x < 32; ++x) {
    const float a = k.overlay[4 * 32 + x];
    if (x < 12 - 5 || x >= 20 + 5) {
      EXPECT_EQ(a, 0.f) << x;
    }
    if (x >= 12 && x < 20) {
      EXPECT_EQ(a, 1.f) << x;  // inside: ≥ 128 blurred → saturates
    }
  }
  EXPECT_GT(k.overlay[4 * 32 + 10], 0.f);
  // Another aspect: resized (cover + crop) with a note; a bad blur is one clear error.
  k = make_inpaint_mask(column_mask(32, 32, 0, 16), 16, 8, 2, 0, false, "m.png");
  EXPECT_NE(k.note.find("m.png"), std::string::npos);
  EXPECT_EQ(k.latent.size(), 32u);
  EXPECT_NE(error_of([] { make_inpaint_mask(column_mask(16, 8, 0, 4), 16, 8, 2, 99, false, "m"); }).find("--mask-blur"),
            std::string::npos);
}

// The run: pixels outside the blurred mask are the init image's bytes exactly (pixel-space composite), the
// repainted region changes; with the pixels codec even the latent kept region ends at the init exactly.
TEST(Inpaint, UnmaskedPixelsUnchangedMaskedRegionRepainted) {
  const fs::path img = root() / "inpaint_init.png", mask = root() / "inpaint_mask.png";
  const Image init = test_image(32, 16);
  save_png(img.string(), init);
  save_png(mask.string(), column_mask(32, 16, 12, 20));
  for (const std::string& m : {models().pix, models().flux}) {
    for (int blur : {0, 2}) {
      SCOPED_TRACE(m + " blur " + std::to_string(blur));
      GenerateRequest rq = base_request(m);
      rq.width = 32;
      rq.height = 16;
      rq.init_image = img.string();
      rq.mask_image = mask.string();
      rq.mask_blur = blur;
      rq.strength = 1.f;
      rq.batch_size = 2;
      auto out = generate(cpu_backend(), rq, false);
      ASSERT_EQ(out.size(), 2u);
      const int band = blur ? (int)(2.5 * blur + 0.5) : 0;
      for (const auto& g : out) {
        long changed = 0;
        for (int y = 0; y < 16; ++y)
          for (int x = 0; x < 32; ++x)
            for (int c = 0; c < 3; ++c) {
              const size_t k = ((size_t)y * 32 + x) * 3 + c;
              if (x < 12 - band || x >= 20 + band) {
                ASSERT_EQ(g.image.rgb[k], init.rgb[k]) << x << "," << y;
              }
              if (x >= 12 && x < 20) changed += std::abs((int)g.image.rgb[k] - (int)init.rgb[k]) > 8;
            }
        EXPECT_GT(changed, 8 * 16 * 3 / 2);  // most of the repainted values moved
      }
      const auto p = params_of(out[0].infotext);
      EXPECT_EQ(p.at("Mask blur"), std::to_string(blur));
      EXPECT_EQ(p.count("Mask mode"), 0u);
      EXPECT_EQ(p.at("Denoising strength"), "1");
    }
  }
  // Inverted: the columns outside [12, 20) repaint, the stripe stays.
  GenerateRequest rq = base_request(models().pix);
  rq.width = 32;
  rq.height = 16;
  rq.init_image = img.string();
  rq.mask_image = mask.string();
  rq.mask_blur = 0;
  rq.invert_mask = true;
  rq.strength = 0.8f;
  auto out = generate(cpu_backend(), rq, false);
  for (int y = 0; y < 16; ++y)
    for (int x = 12; x < 20; ++x)
      ASSERT_EQ(out[0].image.rgb[((size_t)y * 32 + x) * 3], init.rgb[((size_t)y * 32 + x) * 3]);
  EXPECT_NE(out[0].image.rgb, init.rgb);
  EXPECT_EQ(params_of(out[0].infotext).at("Mask mode"), "Inpaint not masked");
}

TEST(Inpaint, BadMaskIsOneClearError) {
  const fs::path img = root() / "inpaint_init.png", bad = root() / "not_a_mask.png";
  save_png(img.string(), test_image(32, 16));
  { std::ofstream(bad) << "not an image"; }
  GenerateRequest rq = base_request(models().pix);
  rq.mask_image = bad.string();
  EXPECT_NE(error_of([&] { generate(cpu_backend(), rq, false); }).find("--init-img"), std::string::npos);
  rq.init_image = img.string();
  const std::string e = error_of([&] { generate(cpu_backend(), rq, false); });
  EXPECT_NE(e.find("not_a_mask.png"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  // A mask of another size is resized (as A1111), not refused.
  const fs::path big = root() / "big_mask.png";
  save_png(big.string(), column_mask(64, 32, 24, 40));
  rq.mask_image = big.string();
  rq.mask_blur = 0;
  rq.width = 32;
  rq.height = 16;
  auto out = generate(cpu_backend(), rq, false);
  ASSERT_EQ(out.size(), 1u);
  for (int y = 0; y < 16; ++y)
    ASSERT_EQ(out[0].image.rgb[((size_t)y * 32 + 2) * 3], test_image(32, 16).rgb[((size_t)y * 32 + 2) * 3]);
}
