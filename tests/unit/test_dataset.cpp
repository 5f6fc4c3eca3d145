// Dataset: folder scanning (N_name repeats, sidecar captions), kohya TOML parsing (inheritance,
// unknown keys, errors with line numbers), load() augmentations and determinism, corrupt images.
#include "test_util.h"
#include "core/error.h"
#include "core/threads.h"
#include "data/dataset.h"
#include "io/image.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <unistd.h>

using namespace oboro;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("oboro_dataset_test_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write_text(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary);
  f << s;
}

// w×h image whose left half is red and right half blue, with a gradient down.
void write_png(const fs::path& p, int w = 24, int h = 16) {
  fs::create_directories(p.parent_path());
  Image im;
  im.width = w;
  im.height = h;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      im.rgb.insert(im.rgb.end(), {uint8_t(x < w / 2 ? 255 : 0), uint8_t(y * 255 / (h - 1)), uint8_t(x < w / 2 ? 0 : 255)});
  save_png(p.string(), im);
}

using oboro::test::error_of;

std::vector<std::string> split_tags(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  std::string t;
  while (std::getline(ss, t, ',')) {
    while (!t.empty() && t.front() == ' ') t.erase(0, 1);
    v.push_back(t);
  }
  return v;
}

}  // namespace

TEST(Dataset, DirectoryWithRepeatsAndCaptions) {
  const fs::path d = fresh_dir("dir");
  write_png(d / "a.png");
  write_text(d / "a.txt", "\xef\xbb\xbf  cat, dog  \r\nsecond line ignored\n");
  write_png(d / "10_foo" / "b.png");
  write_text(d / "10_foo" / "b.txt", "a red circle");
  write_png(d / "10_foo" / "sub" / "c.PNG");      // no caption; inherits the 10 repeats
  write_png(d / "2_bar" / "e.png");
  write_png(d / ".hidden" / "x.png");             // hidden: skipped
  write_text(d / "notes.md", "not an image");
  const Dataset ds = Dataset::open(d.string());
  ASSERT_EQ(ds.size(), 1u + 10u + 10u + 2u);
  // Sorted paths, repeats consecutive.
  EXPECT_EQ(ds.entries()[0].image_path, (d / "10_foo" / "b.png").string());
  EXPECT_EQ(ds.entries()[0].caption, "a red circle");
  EXPECT_EQ(ds.entries()[10].image_path, (d / "10_foo" / "sub" / "c.PNG").string());
  EXPECT_EQ(ds.entries()[10].caption, "");
  EXPECT_EQ(ds.entries()[20].image_path, (d / "2_bar" / "e.png").string());
  EXPECT_EQ(ds.entries()[22].image_path, (d / "a.png").string());
  EXPECT_EQ(ds.entries()[22].caption, "cat, dog");
  ASSERT_EQ(ds.subsets().size(), 3u);
  EXPECT_EQ(ds.subsets()[ds.entries()[0].subset].num_repeats, 10);
  EXPECT_EQ(ds.subsets()[ds.entries()[20].subset].num_repeats, 2);
  EXPECT_EQ(ds.subsets()[ds.entries()[22].subset].num_repeats, 1);
  const auto caps = ds.captions();
  EXPECT_EQ(caps, (std::vector<std::string>{"a red circle", "", "", "cat, dog"}));
}

TEST(Dataset, OpenErrors) {
  const fs::path d = fresh_dir("errors");
  std::string m = error_of([&] { Dataset::open((d / "nope").string()); });
  EXPECT_NE(m.find((d / "nope").string()), std::string::npos) << m;
  EXPECT_NE(m.find("no such file"), std::string::npos) << m;
  fs::create_directories(d / "empty");
  write_text(d / "empty" / "x.txt", "caption without image");
  m = error_of([&] { Dataset::open((d / "empty").string()); });
  EXPECT_NE(m.find("no images found"), std::string::npos) << m;
  write_text(d / "file.json", "{}");
  m = error_of([&] { Dataset::open((d / "file.json").string()); });
  EXPECT_NE(m.find("not a directory or a .toml"), std::string::npos) << m;
}

TEST(Dataset, KohyaToml) {
  const fs::path d = fresh_dir("toml");
  write_png(d / "imgs" / "a.png");
  write_text(d / "imgs" / "a.caption", "one, two, three");
  write_png(d / "imgs" / "b.jpg.png");
  write_png(d / "imgs" / "deeper" / "ignored.png");  // kohya subsets do not recurse
  write_png(d / "other" / "z.webp.png");
  write_text(d / "ds.toml", R"([general]
shuffle_caption = true
keep_tokens = 1
caption_extension = ".caption"
color_aug = true

[[datasets]]
resolution = 512
batch_size = 4
num_repeats = 2

  [[datasets.subsets]]
  image_dir = "imgs"

  [[datasets.subsets]]
  image_dir = "other"
  num_repeats = 5
  flip_aug = true
  keep_tokens = 2
  caption_dropout_rate = 0.25
  class_tokens = "sks dog"
  random_crop = true
)");
  testing::internal::CaptureStderr();
  const Dataset ds = Dataset::open((d / "ds.toml").string());
  const std::string err = testing::internal::GetCapturedStderr();
  // One warning line naming the unknown keys (with lines).
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_NE(err.find("general.color_aug (line 5)"), std::string::npos) << err;
  EXPECT_NE(err.find("datasets[0].subsets[1].random_crop (line 22)"), std::string::npos) << err;
  EXPECT_EQ(err.find("resolution"), std::string::npos) << err;

  ASSERT_EQ(ds.subsets().size(), 2u);
  const DatasetSubset& s0 = ds.subsets()[0];
  const DatasetSubset& s1 = ds.subsets()[1];
  EXPECT_EQ(s0.image_dir, (d / "imgs").string());
  EXPECT_EQ(s0.num_repeats, 2);  // from [[datasets]]
  EXPECT_TRUE(s0.shuffle_caption);  // from [general]
  EXPECT_EQ(s0.keep_tokens, 1);
  EXPECT_EQ(s0.caption_extension, ".caption");
  EXPECT_FALSE(s0.flip_aug);
  EXPECT_EQ(s1.num_repeats, 5);
  EXPECT_EQ(s1.keep_tokens, 2);
  EXPECT_TRUE(s1.flip_aug);
  EXPECT_FLOAT_EQ(s1.caption_dropout_rate, 0.25f);
  ASSERT_EQ(ds.size(), 2u * 2u + 5u);
  EXPECT_EQ(ds.entries()[0].caption, "one, two, three");
  EXPECT_EQ(ds.entries()[2].caption, "");          // b has no caption
  EXPECT_EQ(ds.entries()[4].caption, "sks dog");   // class_tokens fallback
  EXPECT_EQ(ds.entries()[4].subset, 1);
}

TEST(Dataset, TomlErrors) {
  const fs::path d = fresh_dir("tomlerr");
  write_png(d / "imgs" / "a.png");
  auto open_toml = [&](const std::string& body) {
    write_text(d / "bad.toml", body);
    return error_of([&] { Dataset::open((d / "bad.toml").string()); });
  };
  const std::string file = (d / "bad.toml").string();
  std::string m = open_toml("[general]\nflip_aug = true\nkeep_tokens = = 3\n");
  EXPECT_NE(m.find(file + ":3"), std::string::npos) << m;  // toml++ reports the line of the problem
  EXPECT_NE(m.find("invalid TOML"), std::string::npos) << m;
  m = open_toml("[[datasets]]\n[[datasets.subsets]]\nimage_dir = \"imgs\"\nnum_repeats = \"three\"\n");
  EXPECT_NE(m.find(file + ":4"), std::string::npos) << m;
  EXPECT_NE(m.find("num_repeats must be an integer"), std::string::npos) << m;
  m = open_toml("[[datasets]]\n[[datasets.subsets]]\nimage_dir = \"imgs\"\ncaption_dropout_rate = 1.5\n");
  EXPECT_NE(m.find("out of range"), std::string::npos) << m;
  m = open_toml("[[datasets]]\n[[datasets.subsets]]\nnum_repeats = 1\n");
  EXPECT_NE(m.find("has no image_dir"), std::string::npos) << m;
  m = open_toml("[[datasets]]\n[[datasets.subsets]]\nimage_dir = \"missing\"\n");
  EXPECT_NE(m.find("does not exist"), std::string::npos) << m;
  m = open_toml("[general]\nflip_aug = true\n");
  EXPECT_NE(m.find("no [[datasets]]"), std::string::npos) << m;
  m = open_toml("[[datasets]]\nresolution = 64\n");
  EXPECT_NE(m.find("has no [[datasets.subsets]]"), std::string::npos) << m;
}

TEST(Dataset, LoadIsDeterministicAndAugments) {
  const fs::path d = fresh_dir("load");
  write_png(d / "a.png", 48, 16);  // wide: the crop position matters
  write_text(d / "a.txt", "keep, t1, t2, t3, t4, t5, t6");
  write_text(d / "ds.toml",
             "[[datasets]]\n[[datasets.subsets]]\nimage_dir = \".\"\nshuffle_caption = true\nkeep_tokens = 1\n"
             "flip_aug = true\n");
  const Dataset ds = Dataset::open((d / "ds.toml").string());
  ASSERT_EQ(ds.size(), 1u);
  std::vector<float> a(3 * 16 * 16), b(a.size());
  std::string ca, cb;
  ASSERT_TRUE(ds.load(0, 16, 16, 1234, a.data(), &ca));
  ASSERT_TRUE(ds.load(0, 16, 16, 1234, b.data(), &cb));
  EXPECT_EQ(a, b);
  EXPECT_EQ(ca, cb);

  // Seed 0: centre crop; pixels equal resize_cover_crop(…, 0.5, 0.5) up to a possible flip.
  ASSERT_TRUE(ds.load(0, 16, 16, 0, a.data(), nullptr));
  std::vector<float> ref(a.size());
  image_to_chw(resize_cover_crop(load_image((d / "a.png").string()), 16, 16), ref.data());
  std::vector<float> ref_flip(ref.size());
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 16; ++y)
      for (int x = 0; x < 16; ++x) ref_flip[(c * 16 + y) * 16 + x] = ref[(c * 16 + y) * 16 + 15 - x];
  EXPECT_TRUE(a == ref || a == ref_flip);

  // Over many seeds: crops vary, the first tag stays first, tags are a permutation.
  std::set<std::vector<float>> distinct;
  std::set<std::string> orders;
  for (uint64_t s = 1; s <= 200; ++s) {
    std::string cap;
    ASSERT_TRUE(ds.load(0, 16, 16, s, a.data(), &cap));
    distinct.insert(a);
    auto tags = split_tags(cap);
    ASSERT_EQ(tags.size(), 7u) << cap;
    EXPECT_EQ(tags[0], "keep");
    std::sort(tags.begin() + 1, tags.end());
    EXPECT_EQ(tags, (std::vector<std::string>{"keep", "t1", "t2", "t3", "t4", "t5", "t6"}));
    orders.insert(cap);
  }
  EXPECT_GT(distinct.size(), 20u);
  EXPECT_GT(orders.size(), 50u);
  EXPECT_EQ(ds.skipped(), 0u);
}

TEST(Dataset, FlipAugAboutHalf) {
  const fs::path d = fresh_dir("flip");
  write_png(d / "a.png", 16, 16);  // left half red, right half blue; no crop freedom
  write_text(d / "ds.toml", "[[datasets]]\n[[datasets.subsets]]\nimage_dir = \".\"\nflip_aug = true\n");
  const Dataset ds = Dataset::open((d / "ds.toml").string());
  std::vector<float> px(3 * 16 * 16);
  int flipped = 0;
  for (uint64_t s = 1; s <= 200; ++s) {
    ASSERT_TRUE(ds.load(0, 16, 16, s, px.data(), nullptr));
    ASSERT_NE(px[0] > 0.f, px[15] > 0.f);  // exactly one side is red
    flipped += px[0] < 0.f;               // red plane at x=0 low: blue on the left
  }
  EXPECT_GT(flipped, 60);
  EXPECT_LT(flipped, 140);
}

TEST(Dataset, CaptionDropout) {
  const fs::path d = fresh_dir("dropout");
  write_png(d / "a.png");
  write_text(d / "a.txt", "something");
  write_text(d / "ds.toml", "[[datasets]]\n[[datasets.subsets]]\nimage_dir = \".\"\ncaption_dropout_rate = 0.5\n");
  const Dataset ds = Dataset::open((d / "ds.toml").string());
  std::vector<float> px(3 * 8 * 8);
  int dropped = 0;
  for (uint64_t s = 1; s <= 200; ++s) {
    std::string cap;
    ASSERT_TRUE(ds.load(0, 8, 8, s, px.data(), &cap));
    EXPECT_TRUE(cap.empty() || cap == "something");
    dropped += cap.empty();
  }
  EXPECT_GT(dropped, 60);
  EXPECT_LT(dropped, 140);
}

TEST(Dataset, CorruptImageSkippedAndCounted) {
  const fs::path d = fresh_dir("corrupt");
  write_png(d / "good.png");
  write_text(d / "zbad.png", "this is not a png");
  const Dataset ds = Dataset::open(d.string());  // scanning reads no pixels
  ASSERT_EQ(ds.size(), 2u);
  std::vector<float> px(3 * 8 * 8);
  std::string cap = "unchanged";
  EXPECT_TRUE(ds.load(0, 8, 8, 5, px.data(), &cap));
  testing::internal::CaptureStderr();
  EXPECT_FALSE(ds.load(1, 8, 8, 5, px.data(), &cap));
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_NE(err.find((d / "zbad.png").string()), std::string::npos) << err;
  EXPECT_EQ(ds.skipped(), 1u);
  testing::internal::CaptureStderr();
  EXPECT_FALSE(ds.load(1, 8, 8, 6, px.data(), &cap));
  testing::internal::GetCapturedStderr();
  EXPECT_EQ(ds.skipped(), 2u);
}

TEST(Dataset, ParallelLoadsMatchSerial) {
  const fs::path d = fresh_dir("parallel");
  for (int k = 0; k < 6; ++k) {
    write_png(d / ("3_set") / ("img" + std::to_string(k) + ".png"), 20 + 4 * k, 16);
    write_text(d / "3_set" / ("img" + std::to_string(k) + ".txt"), "a, b, c, d");
  }
  write_text(d / "3_set" / "broken.png", "nope");
  const Dataset ds = Dataset::open(d.string());
  ASSERT_EQ(ds.size(), 21u);
  const size_t per = 3 * 12 * 12;
  std::vector<float> serial(ds.size() * per), par(ds.size() * per);
  std::vector<std::string> cs(ds.size()), cp(ds.size());
  std::vector<char> ok_s(ds.size()), ok_p(ds.size());
  testing::internal::CaptureStderr();
  for (size_t i = 0; i < ds.size(); ++i) ok_s[i] = ds.load(i, 12, 12, 99 + i, serial.data() + i * per, &cs[i]);
  parallel_for((int64_t)ds.size(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) ok_p[i] = ds.load(i, 12, 12, 99 + i, par.data() + i * per, &cp[i]);
  });
  testing::internal::GetCapturedStderr();
  EXPECT_EQ(serial, par);
  EXPECT_EQ(cs, cp);
  EXPECT_EQ(ok_s, ok_p);
  EXPECT_EQ(ds.skipped(), 6u);  // broken.png × 3 repeats, twice
}
