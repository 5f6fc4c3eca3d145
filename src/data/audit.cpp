#include "data/audit.h"

#include "core/error.h"
#include "core/sha256.h"
#include "data/progress.h"
#include "io/safetensors.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

namespace oboro {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
ModelDataset parse_model_dataset(const std::string& model, const json& j) {
  if (!j.is_object() || !j.contains("digest") || !j["digest"].is_string())
    fail(model, ": oboro.dataset is not a JSON object with a \"digest\": the file's metadata is damaged; re-save it");
  ModelDataset d;
  d.raw = j.dump();
  d.digest = j["digest"].get<std::string>();
  if (j.contains("images") && j["images"].is_number_integer()) d.images = j["images"].get<int64_t>();
  for (const char* k : {"licenses", "sources"})
    if (j.contains(k) && j[k].is_object())
      for (const auto& [name, n] : j[k].items())
        if (n.is_number_integer()) (std::string(k) == "licenses" ? d.licenses : d.sources)[name] = n.get<int64_t>();
  if (j.contains("attribution") && j["attribution"].is_array())
    for (const auto& a : j["attribution"])
      if (a.is_string()) d.attribution.push_back(a.get<std::string>());
  return d;
}

TensorSource open_model_for_audit(const std::string& model) {
  std::error_code ec;
  if (!fs::exists(model, ec)) fail(model, ": no such model file: pass the .safetensors file written by `oboro train`");
  return TensorSource::open(model);
}

[[noreturn]] void no_dataset(const std::string& model) {
  fail(model, ": has no oboro.dataset metadata: the model was not trained from a folder with a manifest.jsonl (export "
       "one with `oboro data export --manifest M.db -o DIR` and train from it), so its images cannot be audited");
}
}  // namespace

ModelDataset read_model_dataset(const std::string& model) {
  TensorSource src = open_model_for_audit(model);
  auto it = src.metadata().find("oboro.dataset");
  if (it == src.metadata().end()) no_dataset(model);
  const json j = json::parse(it->second, nullptr, false);
  ModelDataset d = parse_model_dataset(model, j.is_discarded() ? json() : j);
  d.raw = it->second;
  return d;
}

std::vector<SourcedDataset> read_model_datasets(const std::string& model) {
  TensorSource src = open_model_for_audit(model);
  auto it = src.metadata().find("oboro.datasets");
  if (it == src.metadata().end()) return {{"", read_model_dataset(model)}};
  const json arr = json::parse(it->second, nullptr, false);
  if (!arr.is_array() || arr.empty())
    fail(model, ": oboro.datasets is not a non-empty JSON array: the file's metadata is damaged; re-save it");
  std::vector<SourcedDataset> out;
  for (const json& e : arr) {
    if (!e.is_object() || !e.contains("dataset"))
      fail(model, ": an oboro.datasets entry has no \"dataset\": the file's metadata is damaged; re-save it");
    SourcedDataset s;
    const std::string name = e.contains("model") && e["model"].is_string() ? e["model"].get<std::string>() : "?";
    const std::string sha = e.contains("sha256") && e["sha256"].is_string() ? e["sha256"].get<std::string>() : "";
    s.from = name + (sha.empty() ? "" : " (" + sha.substr(0, 10) + ")");
    s.dataset = parse_model_dataset(model, e["dataset"]);
    out.push_back(std::move(s));
  }
  return out;
}

// Digest over the rows of a query returning (sha256, license) ordered by sha256, license.
std::string digest_of(sql::Stmt& s) {
  Sha256 h;
  while (s.step()) {
    const std::string l = s.text(0) + " " + s.text(1) + "\n";
    h.update(l.data(), l.size());
  }
  return "sha256:" + h.hex();
}

// ---- register ----

RegisterReport register_model(Manifest& m, const std::string& model, const std::string& data_dir) {
  RegisterReport rep;
  const ModelDataset d = read_model_dataset(model);
  rep.digest = d.digest;
  std::error_code ec;
  const std::string file = fs::is_directory(model, ec) ? "" : model;
  if (file.empty()) fail(model, ": pass the model file itself (or its .safetensors.index.json), not a folder");
  const std::string file_sha = sha256_file(file);
  sql::Db& db = m.db();
  {
    sql::Stmt s(db, "SELECT id, digest, linked_by, images FROM models WHERE file_sha256=?");
    s.bind(1, file_sha);
    if (s.step()) {
      rep.already = true;
      rep.model_id = s.i64(0);
      rep.linked_by = s.text(2);
      rep.images = s.i64(3);
      return rep;
    }
  }
  sql::Transaction tx(db);
  std::vector<int64_t> ids;
  // 1. An export with the same digest.
  {
    sql::Stmt s(db, "SELECT id, dir FROM exports WHERE digest=? ORDER BY id DESC LIMIT 1");
    s.bind(1, d.digest);
    if (s.step()) {
      const int64_t eid = s.i64(0);
      rep.linked_by = "export " + std::to_string(eid) + " (" + s.text(1) + ")";
      sql::Stmt e(db, "SELECT image_id FROM export_images WHERE export_id=?");
      e.bind(1, eid);
      while (e.step()) ids.push_back(e.i64(0));
    }
  }
  // 2. The training folder's manifest.jsonl, if given.
  if (rep.linked_by.empty() && !data_dir.empty()) {
    const fs::path mp = fs::path(data_dir) / "manifest.jsonl";
    std::ifstream f(mp);
    if (!f) fail(mp.string(), ": cannot read: --data must be the training folder holding its manifest.jsonl");
    std::vector<std::string> lines, shas;
    int64_t lineno = 0;
    for (std::string line; std::getline(f, line);) {
      ++lineno;
      if (trim_copy(line).empty()) continue;
      const json j = json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("sha256") || !j["sha256"].is_string())
        fail(mp.string(), ":", lineno, ": needs \"sha256\"");
      const std::string sha = j["sha256"].get<std::string>();
      const std::string lic = j.contains("license") && j["license"].is_string() ? j["license"].get<std::string>() : "";
      lines.push_back(sha + " " + lic + "\n");
      shas.push_back(sha);
    }
    const std::string dd = dataset_digest(lines);
    if (dd != d.digest)
      fail(model, ": its dataset digest ", d.digest, " differs from ", mp.string(), " (", dd,
           "): the model was trained on another version of that folder");
    rep.linked_by = "data folder " + fs::absolute(data_dir).lexically_normal().string();
    sql::Stmt s(db, "SELECT id FROM images WHERE sha256=?");
    std::set<std::string> uniq(shas.begin(), shas.end());
    int64_t missing = 0;
    for (const auto& sha : uniq) {
      s.bind(1, sha);
      bool any = false;
      while (s.step()) ids.push_back(s.i64(0)), any = true;
      s.reset();
      missing += !any;
    }
    if (missing)
      std::fprintf(stderr, "oboro: warning: %lld of the model's images are not in %s (ingest %s to track them)\n",
                   (long long)missing, m.path().c_str(), data_dir.c_str());
  }
  // 3. The current active set.
  if (rep.linked_by.empty()) {
    sql::Stmt s(db, "SELECT sha256, license FROM images WHERE status='active' ORDER BY sha256, license");
    if (digest_of(s) == d.digest) {
      rep.linked_by = "active set";
      sql::Stmt a(db, "SELECT id FROM images WHERE status='active'");
      while (a.step()) ids.push_back(a.i64(0));
    }
  }
  // 4. The images cached for one stage and codec (a model trained with manifest + cache_dir).
  if (rep.linked_by.empty()) {
    std::vector<std::pair<int64_t, std::string>> sets;
    sql::Stmt q(db, "SELECT DISTINCT stage, codec FROM image_cache ORDER BY stage, codec");
    while (q.step()) sets.emplace_back(q.i64(0), q.text(1));
    for (const auto& [stage, codec] : sets) {
      const char* from = "FROM images i JOIN image_cache ic ON ic.image_id=i.id WHERE i.status='active' AND "
                         "ic.stage=? AND ic.codec=?";
      sql::Stmt s(db, str("SELECT i.sha256, i.license ", from, " ORDER BY i.sha256, i.license"));
      s.bind(1, stage).bind(2, codec);
      if (digest_of(s) != d.digest) continue;
      rep.linked_by = str("cache stage ", stage, " ", codec);
      sql::Stmt a(db, str("SELECT i.id ", from));
      a.bind(1, stage).bind(2, codec);
      while (a.step()) ids.push_back(a.i64(0));
      break;
    }
  }
  if (rep.linked_by.empty())
    fail(model, ": its dataset digest ", d.digest, " matches no export recorded in ", m.path(),
         " nor its active set: pass --data <the training folder> (with its manifest.jsonl), or register it with the "
         "manifest the training folder was exported from");
  sql::Stmt ins(db, "INSERT INTO models(path, file_sha256, digest, images, linked_by, registered) VALUES (?,?,?,?,?,?) "
                    "RETURNING id");
  ins.bind(1, fs::absolute(model).lexically_normal().string()).bind(2, file_sha).bind(3, d.digest);
  ins.bind(4, (int64_t)ids.size()).bind(5, rep.linked_by).bind(6, now_unix());
  if (!ins.step()) db.fail_sql("model insert returned no id");
  rep.model_id = ins.i64(0);
  ins.reset();
  sql::Stmt l(db, "INSERT INTO model_images(model_id, image_id) VALUES (?,?) ON CONFLICT DO NOTHING");
  for (int64_t id : ids) l.bind(1, rep.model_id).bind(2, id).run();
  rep.images = (int64_t)ids.size();
  tx.commit();
  return rep;
}

std::vector<ModelRef> models_using(Manifest& m, int64_t image_id) {
  std::vector<ModelRef> out;
  sql::Stmt s(m.db(), "SELECT m.id, m.path, m.file_sha256, m.digest, m.linked_by, m.registered FROM model_images mi "
                      "JOIN models m ON m.id=mi.model_id WHERE mi.image_id=? ORDER BY m.id");
  s.bind(1, image_id);
  while (s.step()) out.push_back({s.i64(0), s.text(1), s.text(2), s.text(3), s.text(4), s.i64(5)});
  return out;
}

RemoveReport remove_image(Manifest& m, const std::string& hash, const std::string& reason) {
  RemoveReport rep;
  if (trim_copy(reason).empty()) fail("data remove: --reason must say why (e.g. \"rights holder request 2024-05-01\")");
  rep.rows = m.images_by_hash(hash);
  if (rep.rows.empty())
    fail("--hash ", hash, ": no image with that sha256 in ", m.path(), ": `oboro data list --manifest ", m.path(),
         " --long` shows the hashes");
  sql::Db& db = m.db();
  sql::Transaction tx(db);
  sql::Stmt up(db, "UPDATE images SET status='removed', reason=?, reason_kind='manual', updated_at=? WHERE id=?");
  sql::Stmt when(db, "SELECT updated_at FROM images WHERE id=?");
  std::set<int64_t> model_ids, export_ids;
  for (const auto& r : rep.rows) {
    // The audit trail: a manual removal is recorded once; removing it again keeps the first reason and date and
    // reports them. An image removed automatically (duplicate, licence, score, ...) becomes a manual removal — so it
    // stays removed when that rule changes — with the earlier reason kept in the text.
    if (r.status == "removed" && r.reason_kind == "manual") {
      when.bind(1, r.id);
      rep.already.push_back({r, when.step() ? when.i64(0) : 0});
      when.reset();
    } else {
      std::string text = trim_copy(reason);
      if (r.status == "removed") text += str(" (earlier removed: ", r.reason_kind, ": ", r.reason, ")");
      up.bind(1, text).bind(2, now_unix()).bind(3, r.id).run();
      rep.removed.push_back(r);
    }
    for (const auto& mr : models_using(m, r.id))
      if (model_ids.insert(mr.id).second) rep.models.push_back(mr);
    sql::Stmt e(db, "SELECT e.id, e.dir FROM export_images ei JOIN exports e ON e.id=ei.export_id WHERE ei.image_id=?");
    e.bind(1, r.id);
    while (e.step())
      if (export_ids.insert(e.i64(0)).second) rep.exports.push_back({e.i64(0), e.text(1)});
  }
  tx.commit();
  return rep;
}

}  // namespace oboro
