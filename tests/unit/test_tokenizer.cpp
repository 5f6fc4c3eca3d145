// SentencePiece tokenizer with the T5 conventions (spec §1, §7) and `oboro data vocab`: training on a
// generated caption corpus, T5 id layout, </s> appended, truncation keeps </s>, round trip, determinism.
#include "test_util.h"
#include "core/error.h"
#include "models/tokenizer.h"

#include <gtest/gtest.h>
#include <sentencepiece_trainer.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

using namespace oboro;
namespace fs = std::filesystem;

namespace {

fs::path tmpdir() {
  static fs::path d = [] {
    fs::path p = fs::temp_directory_path() / ("oboro_tok_" + std::to_string(::getpid()));
    fs::remove_all(p);
    fs::create_directories(p);
    return p;
  }();
  return d;
}

using oboro::test::error_of;

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

const char* kColors[] = {"red", "blue", "green", "yellow", "purple", "orange"};
const char* kShapes[] = {"circle", "square", "triangle", "star"};
const char* kRel[] = {"above", "below", "left of", "right of"};

// "a red circle above a blue square", every combination except those with a white object (held out).
std::vector<std::string> corpus() {
  std::vector<std::string> v;
  for (auto c1 : kColors)
    for (auto s1 : kShapes)
      for (auto r : kRel)
        for (auto c2 : kColors)
          for (auto s2 : kShapes) v.push_back(std::string("a ") + c1 + " " + s1 + " " + r + " a " + c2 + " " + s2);
  return v;
}

const Tokenizer& trained() {
  static Tokenizer t = [] {
    std::string prefix = (tmpdir() / "voc").string();
    train_vocab(corpus(), 60, prefix);
    return Tokenizer::load(prefix + ".model");
  }();
  return t;
}

TEST(Tokenizer, TrainsAUnigramVocabularyWithT5Ids) {
  const Tokenizer& t = trained();
  EXPECT_TRUE(fs::exists(tmpdir() / "voc.vocab"));
  EXPECT_GT(t.vocab_size(), 20);
  EXPECT_LE(t.vocab_size(), 60);
  // The .vocab file lists the special pieces first, in T5 order.
  std::ifstream f(tmpdir() / "voc.vocab");
  std::string l0, l1, l2;
  std::getline(f, l0);
  std::getline(f, l1);
  std::getline(f, l2);
  EXPECT_EQ(l0.substr(0, l0.find('\t')), "<pad>");
  EXPECT_EQ(l1.substr(0, l1.find('\t')), "</s>");
  EXPECT_EQ(l2.substr(0, l2.find('\t')), "<unk>");
  EXPECT_EQ(Tokenizer::kPad, 0);
  EXPECT_EQ(Tokenizer::kEos, 1);
  EXPECT_EQ(Tokenizer::kUnk, 2);
}

TEST(Tokenizer, EncodeAppendsEosAndRoundTrips) {
  const Tokenizer& t = trained();
  std::vector<std::string> texts = corpus();
  texts.resize(50);
  texts.push_back("a purple star right of a green triangle");  // in the corpus
  texts.push_back("a star above a star above a star");          // an unseen arrangement of seen words
  for (const auto& s : texts) {
    std::vector<int> ids = t.encode(s);
    ASSERT_GE(ids.size(), 2u) << s;
    EXPECT_EQ(ids.back(), Tokenizer::kEos) << s;
    EXPECT_EQ(std::count(ids.begin(), ids.end(), Tokenizer::kEos), 1) << s;
    for (int id : ids) {
      EXPECT_GE(id, 1) << s;  // never pad
      EXPECT_LT(id, t.vocab_size()) << s;
      EXPECT_NE(id, Tokenizer::kUnk) << s;
    }
    EXPECT_EQ(t.decode(ids), s);
  }
  EXPECT_EQ(t.encode(""), std::vector<int>{Tokenizer::kEos});
  EXPECT_EQ(t.decode({Tokenizer::kPad, Tokenizer::kEos}), "");
  // A character absent from the corpus is <unk>.
  std::vector<int> z = t.encode("zzz");
  EXPECT_NE(std::find(z.begin(), z.end(), Tokenizer::kUnk), z.end());
  EXPECT_NE(error_of([&] { t.decode({t.vocab_size()}); }).find("out of range"), std::string::npos);
}

TEST(Tokenizer, TruncationKeepsEos) {
  const Tokenizer& t = trained();
  std::string s = "a red circle above a blue square";
  std::vector<int> full = t.encode(s);
  ASSERT_GT(full.size(), 4u);
  std::vector<int> cut = t.encode(s, 4);
  ASSERT_EQ(cut.size(), 4u);
  EXPECT_TRUE(std::equal(cut.begin(), cut.begin() + 3, full.begin()));
  EXPECT_EQ(cut.back(), Tokenizer::kEos);
  EXPECT_EQ(t.encode(s, 1), std::vector<int>{Tokenizer::kEos});
  EXPECT_EQ(t.encode(s, (int)full.size()), full);
  EXPECT_NE(error_of([&] { t.encode(s, 0); }).find("too small"), std::string::npos);
}

TEST(Tokenizer, TrainingIsDeterministic) {
  std::string a = (tmpdir() / "det_a").string(), b = (tmpdir() / "det_b").string();
  train_vocab(corpus(), 48, a);
  train_vocab(corpus(), 48, b);
  EXPECT_EQ(slurp(a + ".model"), slurp(b + ".model")) << "two trainings gave different .model files";
  EXPECT_EQ(slurp(a + ".vocab"), slurp(b + ".vocab"));
  EXPECT_FALSE(slurp(a + ".model").empty());
}

TEST(Tokenizer, SerializedRoundTripAndMove) {
  const Tokenizer& t = trained();
  Tokenizer u = Tokenizer::from_serialized(t.serialized());
  EXPECT_EQ(u.vocab_size(), t.vocab_size());
  EXPECT_EQ(u.encode("a red star"), t.encode("a red star"));
  Tokenizer w = std::move(u);
  EXPECT_EQ(w.encode("a red star"), t.encode("a red star"));
  EXPECT_EQ(t.serialized(), slurp(tmpdir() / "voc.model"));
}

TEST(Tokenizer, LoadErrorsNameTheFile) {
  std::string missing = (tmpdir() / "nope" / "spiece.model").string();
  std::string e = error_of([&] { Tokenizer::load(missing); });
  EXPECT_NE(e.find(missing + ": cannot read the SentencePiece model"), std::string::npos) << e;
  std::string junk = (tmpdir() / "junk.model").string();
  std::ofstream(junk) << "this is not a protobuf";
  e = error_of([&] { Tokenizer::load(junk); });
  EXPECT_NE(e.find(junk + ": not a SentencePiece model"), std::string::npos) << e;
  // A valid SentencePiece model with the library's default ids (unk 0, bos 1, eos 2) is not T5's layout.
  std::string corpus_file = (tmpdir() / "corpus.txt").string();
  {
    std::ofstream f(corpus_file);
    for (const auto& l : corpus()) f << l << "\n";
  }
  std::string prefix = (tmpdir() / "default_ids").string();
  auto st = sentencepiece::SentencePieceTrainer::Train("--input=" + corpus_file + " --model_prefix=" + prefix +
                                                       " --vocab_size=40 --hard_vocab_limit=false --minloglevel=2");
  ASSERT_TRUE(st.ok()) << st.ToString();
  e = error_of([&] { Tokenizer::load(prefix + ".model"); });
  EXPECT_NE(e.find(prefix + ".model: SentencePiece model has pad/eos/unk ids -1/2/0 but T5 needs 0/1/2"),
            std::string::npos)
      << e;
}

TEST(Tokenizer, TrainingErrors) {
  std::string p = (tmpdir() / "err").string();
  EXPECT_NE(error_of([&] { train_vocab({"", "  "}, 50, p); }).find("no caption text"), std::string::npos);
  std::string e = error_of([&] { train_vocab(corpus(), 10, p); });
  EXPECT_NE(e.find("vocabulary training failed"), std::string::npos) << e;
  EXPECT_NE(e.find("distinct characters"), std::string::npos) << e;
}

// ---------------------------------------------------------------------------------------------
// oboro data vocab

struct Result {
  int code;
  std::string out, err;
};
Result run_cli(const std::string& args) {
  std::string o = (tmpdir() / "stdout").string(), e = (tmpdir() / "stderr").string();
  int st = std::system((std::string(OBORO_BINARY) + " " + args + " >" + o + " 2>" + e).c_str());
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), slurp(o), slurp(e)};
}

TEST(DataVocabCli, FromCaptionFileAndDatasetFolder) {
  std::string caps = (tmpdir() / "caps.txt").string();
  {
    std::ofstream f(caps);
    for (const auto& l : corpus()) f << l << "\r\n\n";  // CRLF and blank lines are tolerated
  }
  std::string out = (tmpdir() / "cli_file").string();
  Result r = run_cli("data vocab --captions " + caps + " --vocab-size 50 --out " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("pieces"), std::string::npos) << r.out;
  Tokenizer t = Tokenizer::load(out + ".model");
  EXPECT_EQ(t.decode(t.encode("a red star below a blue circle")), "a red star below a blue circle");
  // The same captions via the library give the same file.
  std::string lib = (tmpdir() / "lib_file").string();
  train_vocab(corpus(), 50, lib);
  EXPECT_EQ(slurp(out + ".model"), slurp(lib + ".model"));

  // Dataset folder: sidecar .txt files (first non-empty line), nested, other files ignored.
  fs::path ds = tmpdir() / "dataset";
  fs::create_directories(ds / "10_sub");
  auto lines = corpus();
  for (size_t i = 0; i < 300; ++i) {
    fs::path dir = i % 2 ? ds / "10_sub" : ds;
    std::ofstream(dir / ("img" + std::to_string(i) + ".txt")) << "\n" << lines[i * 7 % lines.size()] << "\nsecond line\n";
    std::ofstream(dir / ("img" + std::to_string(i) + ".png")) << "not really a png";
  }
  std::string out2 = (tmpdir() / "cli_dir").string();
  r = run_cli("data vocab --captions " + ds.string() + " --vocab-size 40 --out " + out2);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("on 300 captions"), std::string::npos) << r.err;
  EXPECT_GT(Tokenizer::load(out2 + ".model").vocab_size(), 3);

  // Errors: one line naming the path.
  r = run_cli("data vocab --captions " + (tmpdir() / "missing.txt").string() + " --vocab-size 40 --out " + out2);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find((tmpdir() / "missing.txt").string() + ": no such file or directory"), std::string::npos)
      << r.err;
  fs::create_directories(tmpdir() / "empty_ds");
  r = run_cli("data vocab --captions " + (tmpdir() / "empty_ds").string() + " --vocab-size 40 --out " + out2);
  EXPECT_NE(r.err.find("found no caption text"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

}  // namespace
