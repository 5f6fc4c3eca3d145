#include "data/quality.h"

#include "core/error.h"
#include "core/threads.h"
#include "data/progress.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>

namespace oboro {

namespace fs = std::filesystem;

namespace {

std::mutex& scorer_mutex() {
  static std::mutex m;
  return m;
}
std::map<std::string, std::function<std::unique_ptr<QualityScorer>(const std::string&)>>& scorers() {
  static std::map<std::string, std::function<std::unique_ptr<QualityScorer>(const std::string&)>> r;
  return r;
}

bool parse_double(const std::string& s, double* out) {
  const std::string t = trim_copy(s);
  if (t.empty()) return false;
  char* end = nullptr;
  *out = std::strtod(t.c_str(), &end);
  return end == t.c_str() + t.size() && std::isfinite(*out);
}

// Splits a CSV line on the first separator (comma, tab or semicolon) from the right, so paths may
// contain commas; a quoted key ("a,b.png") is unquoted.
bool split_csv(const std::string& line, std::string* key, std::string* value) {
  const size_t p = line.find_last_of(",\t;");
  if (p == std::string::npos) return false;
  *key = trim_copy(line.substr(0, p));
  *value = line.substr(p + 1);
  if (key->size() >= 2 && key->front() == '"' && key->back() == '"') *key = key->substr(1, key->size() - 2);
  return true;
}

bool is_sha256(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!std::isxdigit((unsigned char)c)) return false;
  return true;
}

}  // namespace

QualityThresholds QualityThresholds::parse(const std::string& s) {
  QualityThresholds t;
  std::vector<double> v;
  std::string cur;
  for (char c : s + ",") {
    if (c == ',') {
      double x;
      if (!parse_double(cur, &x)) fail("--thresholds \"", s, "\": expected three numbers excellent,good,average (e.g. 6,5.2,4)");
      v.push_back(x);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (v.size() != 3 || !(v[0] > v[1] && v[1] > v[2]) || !std::isfinite(v[0]) || !std::isfinite(v[2]))
    fail("--thresholds \"", s, "\": expected three decreasing numbers excellent,good,average (e.g. 6,5.2,4)");
  t.excellent = v[0], t.good = v[1], t.average = v[2];
  return t;
}

std::string quality_tag(double s, const QualityThresholds& t) {
  if (s >= t.excellent) return "excellent score";
  if (s >= t.good) return "good score";
  if (s >= t.average) return "average score";
  return "";
}

void register_scorer(const std::string& name, std::function<std::unique_ptr<QualityScorer>(const std::string&)> f) {
  std::lock_guard<std::mutex> lk(scorer_mutex());
  scorers()[name] = std::move(f);
}

std::unique_ptr<QualityScorer> make_scorer(const std::string& spec) {
  const size_t c = spec.find(':');
  const std::string name = spec.substr(0, c), arg = c == std::string::npos ? "" : spec.substr(c + 1);
  std::function<std::unique_ptr<QualityScorer>(const std::string&)> f;
  std::string known;
  {
    std::lock_guard<std::mutex> lk(scorer_mutex());
    auto it = scorers().find(name);
    if (it != scorers().end()) f = it->second;
    for (const auto& [k, v] : scorers()) known += (known.empty() ? "" : ", ") + k;
  }
  if (!f)
    fail("unknown scorer \"", name, "\": ", known.empty() ? "this build has no scorer plug-ins; pass --scores FILE (CSV or JSONL)"
                                                         : "use one of " + known + ", or pass --scores FILE");
  return f(arg);
}

ScoreReport apply_scores(Manifest& m, const ScoreOptions& opt) {
  ScoreReport rep;
  if (opt.file.empty() == opt.scorer.empty()) fail("data score: pass either --scores FILE or --scorer NAME");
  if (!opt.tags.empty()) {
    if (opt.tags != "append" && opt.tags != "prepend" && opt.tags != "off")
      fail("--tags \"", opt.tags, "\": use append, prepend or off");
    m.set_meta("quality_tags", opt.tags);
  }
  sql::Db& db = m.db();
  sql::Stmt by_sha(db, "SELECT id, status, reason_kind FROM images WHERE sha256=?");
  sql::Stmt by_path(db, "SELECT id, status, reason_kind FROM images WHERE path=? OR relpath=?");
  sql::Stmt set_score(db, "UPDATE images SET score=?, quality=?, updated_at=? WHERE id=?");
  sql::Stmt ins_score(db, "INSERT INTO scores(image_id, name, value) VALUES (?,?,?) ON CONFLICT(image_id, name) DO UPDATE SET value=excluded.value");
  sql::Stmt set_status(db, "UPDATE images SET status=?, reason=?, reason_kind=? WHERE id=?");
  const int64_t t = now_unix();

  auto apply = [&](int64_t id, const std::string& status, const std::string& kind, double score) {
    const std::string tag = quality_tag(score, opt.thresholds);
    set_score.bind(1, score).bind(2, tag).bind(3, t).bind(4, id).run();
    ins_score.bind(1, id).bind(2, opt.name).bind(3, score).run();
    ++rep.matched_images;
    if (tag == "excellent score") ++rep.excellent;
    else if (tag == "good score") ++rep.good;
    else if (tag == "average score") ++rep.average;
    else ++rep.excluded;
    if (tag.empty() && status == "active") {
      char b[96];
      std::snprintf(b, sizeof b, "score %g < %g", score, opt.thresholds.average);
      set_status.bind(1, "removed").bind(2, b).bind(3, "score").bind(4, id).run();
    } else if (!tag.empty() && status == "removed" && kind == "score") {
      set_status.bind(1, "active").bind(2, "").bind(3, "").bind(4, id).run();
      ++rep.restored;
    }
  };
  auto apply_key = [&](const std::string& key, double score, const std::string& where) {
    ++rep.records;
    std::vector<std::tuple<int64_t, std::string, std::string>> hits;
    std::string k = key;
    for (auto& c : k) c = (char)std::tolower((unsigned char)c);
    if (is_sha256(k)) {
      by_sha.bind(1, k);
      while (by_sha.step()) hits.emplace_back(by_sha.i64(0), by_sha.text(1), by_sha.text(2));
      by_sha.reset();
    } else {
      std::error_code ec;
      const std::string abs = fs::absolute(key, ec).lexically_normal().string();
      by_path.bind(1, abs).bind(2, fs::path(key).lexically_normal().generic_string());
      while (by_path.step()) hits.emplace_back(by_path.i64(0), by_path.text(1), by_path.text(2));
      by_path.reset();
    }
    if (hits.empty()) {
      ++rep.unmatched;
      if (rep.unmatched_keys.size() < 10) rep.unmatched_keys.push_back(where + ": " + key);
    }
    for (const auto& [id, st, kind] : hits) apply(id, st, kind, score);
  };

  if (!opt.file.empty()) {
    std::ifstream f(opt.file, std::ios::binary);
    if (!f) fail(opt.file, ": cannot read the scores file: check the path (CSV `sha256_or_path,score` or JSONL)");
    std::string ext = fs::path(opt.file).extension().string();
    const bool jsonl = ext == ".jsonl" || ext == ".json";
    std::string line;
    int64_t lineno = 0;
    auto txp = std::make_unique<sql::Transaction>(db);
    while (std::getline(f, line)) {
      ++lineno;
      const std::string where = opt.file + ":" + std::to_string(lineno);
      const std::string tl = trim_copy(line);
      if (tl.empty() || tl[0] == '#') continue;
      std::string key;
      double score = 0;
      if (jsonl) {
        nlohmann::json j = nlohmann::json::parse(tl, nullptr, false);
        if (j.is_discarded() || !j.is_object()) fail(where, ": not a JSON object: each line is {\"sha256\": ..., \"score\": x}");
        for (const char* k : {"sha256", "path", "file", "image"})
          if (key.empty() && j.contains(k) && j[k].is_string()) key = j[k].get<std::string>();
        const char* skey = j.contains("score") ? "score" : j.contains("aesthetic") ? "aesthetic" : nullptr;
        if (key.empty() || !skey || !j[skey].is_number())
          fail(where, ": needs \"sha256\" (or \"path\") and a numeric \"score\"");
        score = j[skey].get<double>();
      } else {
        std::string val;
        if (!split_csv(tl, &key, &val)) fail(where, ": expected `sha256_or_path,score`");
        if (!parse_double(val, &score)) {
          if (lineno == 1) continue;  // header
          fail(where, ": \"", trim_copy(val), "\" is not a number: expected `sha256_or_path,score`");
        }
      }
      if (!std::isfinite(score)) fail(where, ": the score is not finite");
      apply_key(key, score, where);
      if (rep.records % 10000 == 0) {  // bounded transactions
        txp->commit();
        txp = std::make_unique<sql::Transaction>(db);
      }
    }
    txp->commit();
  } else {
    std::unique_ptr<QualityScorer> scorer = make_scorer(opt.scorer);
    std::vector<std::tuple<int64_t, std::string, std::string, std::string>> rows;  // id, path, status, kind
    {
      sql::Stmt s(db, "SELECT id, path, status, reason_kind FROM images WHERE status='active' OR reason_kind='score'");
      while (s.step()) rows.emplace_back(s.i64(0), s.text(1), s.text(2), s.text(3));
    }
    Progress prog("score " + scorer->id(), (int64_t)rows.size(), opt.progress);
    for (size_t b = 0; b < rows.size(); b += 256) {
      const size_t e = std::min(rows.size(), b + 256);
      std::vector<double> sc(e - b, NAN);
      parallel_for((int64_t)(e - b), [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
          try {
            sc[(size_t)i] = scorer->score(load_image(std::get<1>(rows[b + (size_t)i])));
          } catch (const std::exception& ex) {
            std::fprintf(stderr, "oboro: warning: %s (not scored)\n", ex.what());
          }
        }
      });
      sql::Transaction tx(db);
      for (size_t i = b; i < e; ++i) {
        ++rep.records;
        if (std::isfinite(sc[i - b])) apply(std::get<0>(rows[i]), std::get<2>(rows[i]), std::get<3>(rows[i]), sc[i - b]);
      }
      tx.commit();
      prog.add((int64_t)(e - b));
    }
  }
  return rep;
}

}  // namespace oboro
