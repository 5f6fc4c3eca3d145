// Shapes dataset: holdout parsing and exclusion, determinism, files written; evaluator: prompt
// parsing, accuracy on the dataset's own ground-truth renders (≥ 98% colour and shape at 32 px),
// and low scores on noise.
#include "core/error.h"
#include "core/rng.h"
#include "data/shapes.h"
#include "data/shapes_eval.h"
#include "io/image.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <unistd.h>

using namespace oboro;
using namespace oboro::shapes;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("oboro_shapes_test_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d.parent_path());
  return d;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

ParsedPrompt expected_from_scene(const Scene& s) {
  ParsedPrompt p;
  for (const auto& o : s.objects) p.objects.push_back({o.colour, o.shape, o.size});
  p.relation = s.relation;
  p.ok = true;
  return p;
}

}  // namespace

TEST(Shapes, ParseHoldout) {
  Holdout h = parse_holdout("red:triangle, Blue:circle;large:cross small:purple:square");
  ASSERT_EQ(h.combos.size(), 4u);
  EXPECT_TRUE(h.matches(0, 2, 0));
  EXPECT_TRUE(h.matches(0, 2, 1));
  EXPECT_FALSE(h.matches(0, 1, 1));
  EXPECT_TRUE(h.matches(2, 0, 1));
  EXPECT_TRUE(h.matches(5, 3, 1));
  EXPECT_FALSE(h.matches(5, 3, 0));
  EXPECT_FALSE(h.matches(5, 3, -1));  // unknown size never matches a size combination
  EXPECT_TRUE(h.matches(4, 1, 0));
  EXPECT_EQ(h.strs(), (std::vector<std::string>{"red:triangle", "blue:circle", "large:cross", "small:purple:square"}));
  EXPECT_TRUE(parse_holdout("").empty());
  EXPECT_THROW(parse_holdout("red:hexagon"), Error);
  EXPECT_THROW(parse_holdout("red:blue"), Error);
  EXPECT_THROW(parse_holdout("small,large"), Error);  // nothing left to train on
}

TEST(Shapes, ScenesDeterministicAndHoldoutExcluded) {
  const Holdout h = parse_holdout("red:triangle,blue:circle");
  int two = 0;
  int rel[kNumRelations] = {0};
  for (uint64_t i = 0; i < 2000; ++i) {
    const Scene s = make_scene(42, 1, i, 32, h, SceneKind::Train);
    const Scene again = make_scene(42, 1, i, 32, h, SceneKind::Train);
    ASSERT_EQ(s.caption, again.caption);
    ASSERT_FALSE(s.heldout);
    for (const auto& o : s.objects) {
      ASSERT_FALSE(h.matches(o.colour, o.shape, o.size)) << s.caption;
      // Inside the image with a margin; size in its band.
      ASSERT_GE(o.cx - o.side / 2, 1.f);
      ASSERT_LE(o.cx + o.side / 2, 31.f);
      ASSERT_GE(o.cy - o.side / 2, 1.f);
      ASSERT_LE(o.cy + o.side / 2, 31.f);
      const float f = o.side / 32;
      if (o.size == 0) ASSERT_TRUE(f >= kSmallMin && f <= kSmallMax);
      else ASSERT_TRUE(f >= kLargeMin && f <= kLargeMax);
    }
    if (s.objects.size() == 2) {
      ++two;
      rel[s.relation]++;
      const Object &a = s.objects[0], &b = s.objects[1];
      // Bounding boxes do not overlap.
      const bool apart = std::fabs(a.cx - b.cx) >= (a.side + b.side) / 2 || std::fabs(a.cy - b.cy) >= (a.side + b.side) / 2;
      ASSERT_TRUE(apart) << s.caption;
      ASSERT_FALSE(a.colour == b.colour && a.shape == b.shape);
    }
    EXPECT_TRUE(s.caption.rfind("a ", 0) == 0 || s.caption.rfind("an orange", 0) == 0) << s.caption;
    EXPECT_EQ(s.caption.find("a orange"), std::string::npos) << s.caption;
  }
  EXPECT_GT(two, 800);
  EXPECT_LT(two, 1200);
  for (int r : rel) EXPECT_GT(r, 150);
  // Held-out scenes always contain a held-out combination.
  for (uint64_t i = 0; i < 300; ++i) {
    const Scene s = make_scene(42, 4, i, 32, h, SceneKind::HeldOut);
    EXPECT_TRUE(s.heldout) << s.caption;
  }
  EXPECT_EQ(make_scene(1, 1, 0, 32, h, SceneKind::Train).caption.empty(), false);
  EXPECT_NE(render_scene(make_scene(1, 1, 5, 32, h, SceneKind::Train), 32).rgb,
            render_scene(make_scene(2, 1, 5, 32, h, SceneKind::Train), 32).rgb);
}

TEST(Shapes, ParsePrompt) {
  ParsedPrompt p = parse_prompt("a red circle above a small blue square");
  ASSERT_TRUE(p.ok) << p.error;
  ASSERT_EQ(p.objects.size(), 2u);
  EXPECT_EQ(p.objects[0].colour, 0);
  EXPECT_EQ(p.objects[0].shape, 0);
  EXPECT_EQ(p.objects[0].size, -1);
  EXPECT_EQ(p.objects[1].colour, 2);
  EXPECT_EQ(p.objects[1].shape, 1);
  EXPECT_EQ(p.objects[1].size, 0);
  EXPECT_EQ(p.relation, 0);
  p = parse_prompt("A large green triangle.");
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.objects[0].size, 1);
  p = parse_prompt("a purple cross to the right of an orange circle");
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.relation, 3);
  EXPECT_FALSE(parse_prompt("a cat on a sofa").ok);
  EXPECT_FALSE(parse_prompt("a red circle and a blue square").ok);
  EXPECT_FALSE(parse_prompt("a red").ok);
  EXPECT_EQ(prompt_from_infotext("a red circle\nleft of a cross\nNegative prompt: x\nSteps: 20, Seed: 1"),
            "a red circle\nleft of a cross");
  EXPECT_EQ(prompt_from_infotext("a red circle\nSteps: 20, Seed: 1"), "a red circle");
  // Every generated caption parses back to its scene.
  const Holdout none;
  for (uint64_t i = 0; i < 500; ++i) {
    const Scene s = make_scene(3, 1, i, 32, none, SceneKind::Train);
    const ParsedPrompt q = parse_prompt(s.caption);
    ASSERT_TRUE(q.ok) << s.caption;
    ASSERT_EQ(q.objects.size(), s.objects.size());
    EXPECT_EQ(q.relation, s.relation);
    for (size_t k = 0; k < s.objects.size(); ++k) {
      EXPECT_EQ(q.objects[k].colour, s.objects[k].colour);
      EXPECT_EQ(q.objects[k].shape, s.objects[k].shape);
      EXPECT_EQ(q.objects[k].size, s.objects[k].size_in_caption ? s.objects[k].size : -1);
    }
  }
}

TEST(Shapes, EvaluatorOnGroundTruth32px) {
  // 400 rendered images at 32 px (seen and held-out scenes); the evaluator must recover colour and
  // shape ≥ 98% and every other attribute nearly always. Sizes are checked against the truth even
  // when the caption omits them.
  const Holdout h = parse_holdout("red:triangle,blue:circle");
  Tally t;
  int size_ok = 0, size_n = 0;
  std::string failures;
  for (uint64_t i = 0; i < 400; ++i) {
    const Scene s = make_scene(11, i % 2 ? 2 : 4, i, 32, h, i % 4 == 0 ? SceneKind::HeldOut : SceneKind::Seen);
    const Image img = render_scene(s, 32);
    const auto det = detect_objects(img);
    const ImageScore sc = score_image(expected_from_scene(s), det);
    t.add(sc);
    size_ok += sc.size_ok;
    size_n += sc.size_n;
    if (!sc.all_ok && failures.size() < 2000) {
      failures += s.caption + " →";
      for (const auto& d : det)
        failures += std::string(" ") + size_name(d.size) + " " + colour_name(d.colour) + " " + shape_name(d.shape) +
                    " (side " + std::to_string(d.side) + ")";
      failures += "\n";
    }
  }
  const double colour = (double)t.colour / t.objects, shape = (double)t.shape / t.objects;
  const double size = (double)size_ok / size_n, relation = (double)t.relation / t.relation_n;
  const double count = (double)t.count / t.images, all = (double)t.all / t.images;
  std::printf("[ground truth 32px, %ld images / %ld objects] colour %.4f shape %.4f size %.4f relation %.4f count %.4f all %.4f\n",
              t.images, t.objects, colour, shape, size, relation, count, all);
  EXPECT_GE(colour, 0.98) << failures;
  EXPECT_GE(shape, 0.98) << failures;
  EXPECT_GE(size, 0.97) << failures;
  EXPECT_GE(relation, 0.98) << failures;
  EXPECT_GE(count, 0.98) << failures;
  EXPECT_GE(all, 0.95) << failures;
}

TEST(Shapes, EvaluatorOnGroundTruthLarger) {
  // The evaluator is resolution independent: 64 and 128 px renders score as well.
  const Holdout none;
  for (int S : {64, 128}) {
    Tally t;
    for (uint64_t i = 0; i < 60; ++i) {
      const Scene s = make_scene(12, 1, i, S, none, SceneKind::Train);
      t.add(score_image(expected_from_scene(s), detect_objects(render_scene(s, S))));
    }
    EXPECT_GE((double)t.all / t.images, 0.95) << S;
  }
}

TEST(Shapes, EvaluatorLowOnNoise) {
  const Holdout none;
  Tally t;
  for (uint64_t i = 0; i < 100; ++i) {
    const Scene s = make_scene(13, 1, i, 32, none, SceneKind::Train);
    Image noise;
    noise.width = noise.height = 32;
    noise.rgb.resize(32 * 32 * 3);
    for (size_t k = 0; k < noise.rgb.size(); ++k) noise.rgb[k] = (uint8_t)(uniform_at(99, i, k) * 256.f);
    t.add(score_image(expected_from_scene(s), detect_objects(noise)));
  }
  // Also a blank background: nothing detected.
  Image blank;
  blank.width = blank.height = 32;
  blank.rgb.assign(32 * 32 * 3, 238);
  EXPECT_TRUE(detect_objects(blank).empty());
  const double all = (double)t.all / t.images, shape = (double)t.shape / t.objects, count = (double)t.count / t.images;
  std::printf("[noise] all %.3f shape %.3f count %.3f\n", all, shape, count);
  EXPECT_LE(all, 0.05);
  EXPECT_LE(count, 0.1);
}

TEST(Shapes, GenerateDatasetFilesDeterministic) {
  const fs::path a = fresh_dir("gen_a"), b = fresh_dir("gen_b");
  GenerateOptions o;
  o.count = 40;
  o.size = 32;
  o.seed = 7;
  o.holdout = "red:triangle,blue:circle";
  o.prompts = 30;
  o.out_dir = a.string();
  const GenerateSummary s = generate_dataset(o);
  EXPECT_EQ(s.images, 40);
  EXPECT_EQ(s.heldout_images, 0);
  EXPECT_EQ(s.seen_prompts, 30);
  EXPECT_EQ(s.heldout_prompts, 30);
  o.out_dir = b.string();
  generate_dataset(o);
  for (const char* f : {"000000.png", "000000.txt", "000039.png", "manifest.json", "prompts_seen.txt", "prompts_heldout.txt"})
    EXPECT_EQ(slurp(a / f), slurp(b / f)) << f;

  // Manifest: one record per image, no held-out combination in training images.
  const auto m = nlohmann::json::parse(slurp(a / "manifest.json"));
  EXPECT_EQ(m["licence"], kLicence);
  ASSERT_EQ(m["images"].size(), 40u);
  const Holdout h = parse_holdout(o.holdout);
  for (const auto& rec : m["images"]) {
    EXPECT_EQ(rec["split"], "train");
    EXPECT_EQ(rec["licence"], kLicence);
    EXPECT_EQ(slurp(a / rec["file"].get<std::string>()).substr(1, 3), "PNG");
    const std::string stem = rec["file"].get<std::string>().substr(0, 6);
    EXPECT_EQ(slurp(a / (stem + ".txt")), rec["caption"].get<std::string>() + "\n");
    for (const auto& ob : rec["objects"]) {
      const std::string pair = ob["colour"].get<std::string>() + ":" + ob["shape"].get<std::string>();
      EXPECT_TRUE(pair != "red:triangle" && pair != "blue:circle") << pair;
      EXPECT_EQ(ob["bbox"].size(), 4u);
    }
  }
  // Held-out prompts all name a held-out pair; seen prompts none.
  std::istringstream held(slurp(a / "prompts_heldout.txt")), seen(slurp(a / "prompts_seen.txt"));
  for (std::string line; std::getline(held, line);) {
    const ParsedPrompt p = parse_prompt(line);
    ASSERT_TRUE(p.ok) << line;
    bool any = false;
    for (const auto& ob : p.objects) any |= h.matches(ob.colour, ob.shape, ob.size);
    EXPECT_TRUE(any) << line;
  }
  for (std::string line; std::getline(seen, line);) {
    const ParsedPrompt p = parse_prompt(line);
    for (const auto& ob : p.objects) EXPECT_FALSE(h.matches(ob.colour, ob.shape, ob.size)) << line;
  }

  // An existing dataset is not overwritten without force.
  EXPECT_THROW(generate_dataset(o), Error);
  o.force = true;
  o.count = 10;
  generate_dataset(o);
  EXPECT_FALSE(fs::exists(b / "000039.png"));

  // The directory evaluator on the dataset itself (captions from sidecars, holdout from manifest).
  EvalOptions eo;
  eo.images_dir = a.string();
  const EvalResult r = evaluate_dir(eo);
  EXPECT_EQ(r.all.images, 40);
  EXPECT_EQ(r.skipped, 0);
  EXPECT_EQ(r.holdout, (std::vector<std::string>{"red:triangle", "blue:circle"}));
  EXPECT_GE((double)r.all.all / r.all.images, 0.95) << r.text;
  EXPECT_NE(r.text.find("all-correct"), std::string::npos);
  const auto j = nlohmann::json::parse(r.json);
  EXPECT_EQ(j["evaluated"], 40);
}

TEST(Shapes, TestSplitAndInfotextPrompts) {
  const fs::path d = fresh_dir("test_split");
  GenerateOptions o;
  o.count = 60;
  o.seed = 3;
  o.split = "test";
  o.holdout = "green:square";
  o.prompts = 5;
  o.out_dir = d.string();
  o.holdout = "green:square,large:cross";
  const GenerateSummary s = generate_dataset(o);
  EXPECT_GT(s.heldout_images, 15);
  EXPECT_LT(s.heldout_images, 45);
  {
    // The manifest's held-out flags agree with what the evaluator reads from the prompts.
    EvalOptions eo;
    eo.images_dir = d.string();
    const EvalResult r = evaluate_dir(eo);
    EXPECT_EQ(r.heldout.images, s.heldout_images);
    EXPECT_EQ(r.all.all, 60);
  }

  // Generated-image style: the prompt lives in the `parameters` chunk, no sidecar.
  const fs::path g = fresh_dir("generated");
  fs::create_directories(g);
  const Holdout h = parse_holdout("green:square");
  for (int i = 0; i < 20; ++i) {
    const Scene sc = make_scene(5, 4, i, 32, h, i % 2 ? SceneKind::HeldOut : SceneKind::Seen);
    save_png((g / ("img" + std::to_string(i) + ".png")).string(), render_scene(sc, 32),
             {{"parameters", sc.caption + "\nNegative prompt: blurry\nSteps: 20, Sampler: Euler, Seed: " + std::to_string(i)}});
  }
  std::ofstream(g / "unparseable.txt") << "x";  // not an image: ignored
  { std::ofstream f(g / "cat.png", std::ios::binary); f << "garbage"; }  // skipped with a warning
  EvalOptions eo;
  eo.images_dir = g.string();
  eo.holdout = "green:square";
  eo.per_image = true;
  testing::internal::CaptureStderr();
  const EvalResult r = evaluate_dir(eo);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("cat.png"), std::string::npos) << err;
  EXPECT_EQ(r.skipped, 1);
  EXPECT_EQ(r.all.images, 20);
  EXPECT_EQ(r.heldout.images, 10);
  EXPECT_EQ(r.seen.images, 10);
  EXPECT_GE((double)r.all.all / r.all.images, 0.95) << r.text;
  const auto j = nlohmann::json::parse(r.json);
  EXPECT_EQ(j["images"].size(), 20u);
  EXPECT_EQ(j["heldout"]["images"], 10);
}

#ifdef OBORO_BINARY
TEST(Shapes, EvalCli) {
  const fs::path d = fresh_dir("cli");
  GenerateOptions o;
  o.count = 12;
  o.out_dir = d.string();
  generate_dataset(o);
  const std::string out = (d / "eval.json").string();
  const std::string cmd = std::string(OBORO_BINARY) + " eval shapes --images " + d.string() + " --json > " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  const auto j = nlohmann::json::parse(slurp(out));
  EXPECT_EQ(j["evaluated"], 12);
  const std::string bad = std::string(OBORO_BINARY) + " eval shapes --images " + (d / "nope").string() + " 2>/dev/null";
  EXPECT_NE(std::system(bad.c_str()), 0);
}
#endif

TEST(Shapes, EvaluatorToleratesBlurAndNoise) {
  // Generated images are softer and noisier than renders: one 3×3 binomial blur plus Gaussian
  // noise (σ = 8 per channel) must still score high.
  const Holdout none;
  Tally t;
  for (uint64_t i = 0; i < 200; ++i) {
    const Scene s = make_scene(14, 1, i, 32, none, SceneKind::Train);
    const Image im = render_scene(s, 32);
    Image soft = im;
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x)
        for (int c = 0; c < 3; ++c) {
          float acc = 0, wsum = 0;
          for (int dy = -1; dy <= 1; ++dy)
            for (int dx = -1; dx <= 1; ++dx) {
              const int xx = std::clamp(x + dx, 0, 31), yy = std::clamp(y + dy, 0, 31);
              const float w = (dx ? 1.f : 2.f) * (dy ? 1.f : 2.f);
              acc += w * im.rgb[3 * (yy * 32 + xx) + c];
              wsum += w;
            }
          const float v = acc / wsum + 8.f * normal_at(15, i, (uint64_t)3 * (y * 32 + x) + c);
          soft.rgb[3 * (y * 32 + x) + c] = (uint8_t)std::clamp((int)std::lround(v), 0, 255);
        }
    t.add(score_image(expected_from_scene(s), detect_objects(soft)));
  }
  std::printf("[blur+noise] colour %.3f shape %.3f count %.3f all %.3f\n", (double)t.colour / t.objects,
              (double)t.shape / t.objects, (double)t.count / t.images, (double)t.all / t.images);
  EXPECT_GE((double)t.colour / t.objects, 0.98);
  EXPECT_GE((double)t.shape / t.objects, 0.95);
  EXPECT_GE((double)t.count / t.images, 0.97);
}
