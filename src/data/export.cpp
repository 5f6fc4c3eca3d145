// `oboro data export`: the active images of a manifest as a training folder — one file per distinct content,
// named by its SHA-256 (`ab/abcd….png`), its captions beside it (`.txt`, the training caption first) and a
// `manifest.jsonl` listing every file with its licence and provenance; recorded in the manifest's `exports` table
// with the dataset digest.
//
// Interruption and errors (docs/reliability.md): every image and caption is placed atomically (temp + rename, so no
// part file under a final name), all of them are flushed to disk (syncfs) before `manifest.jsonl` is written
// atomically, and only then is the export recorded and the previous export's files that are not in the new one
// removed. A failed or killed re-export (`--force`) therefore leaves the previous manifest.jsonl and every file it
// lists in place (a content-named file may have been replaced by the same bytes; a caption by the new caption).
#include "core/error.h"
#include "core/sha256.h"
#include "data/audit.h"
#include "data/progress.h"
#include "io/atomic_file.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>

namespace oboro {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

bool recorded_export(Manifest& m, const fs::path& dir) {
  sql::Stmt s(m.db(), "SELECT 1 FROM exports WHERE dir=? LIMIT 1");
  s.bind(1, dir.string());
  return s.step();
}

// Refuses an output folder that holds anything oboro did not export (the user's own images, the ingested source
// folder): --force replaces only a folder with the export marker, or one this manifest recorded as an export (exports
// made before the marker existed).
void check_output_folder(Manifest& m, const ExportOptions& opt, const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec) || fs::is_empty(dir, ec)) return;
  if (!opt.force) fail(opt.out_dir, ": is not empty: pass --force to replace a previous export there, or choose another -o");
  if (!fs::exists(dir / kExportMarker, ec) && !recorded_export(m, dir))
    fail(opt.out_dir, ": is not empty and is not a previous oboro export (no ", kExportMarker,
         " file): --force replaces only an export; choose an empty or new folder for -o");
}

// Two lowercase hex digits: the subfolders an export writes its files into.
bool is_content_folder(const std::string& name) {
  return name.size() == 2 && std::all_of(name.begin(), name.end(), [](char c) { return std::isxdigit((unsigned char)c) && !std::isupper((unsigned char)c); });
}

// Removes what an earlier export (finished or interrupted) left in the content folders and the new export does not
// list; temp files of live processes are left alone. Empty content folders go too.
void remove_unlisted(const fs::path& dir, const std::set<std::string>& listed) {
  std::error_code ec;
  for (fs::directory_iterator sub(dir, ec), end; !ec && sub != end; sub.increment(ec)) {
    const std::string name = sub->path().filename().string();
    if (!is_content_folder(name) || !sub->is_directory(ec) || sub->is_symlink(ec)) continue;
    for (fs::directory_iterator f(sub->path(), ec), fend; !ec && f != fend; f.increment(ec)) {
      const std::string rel = name + "/" + f->path().filename().string();
      if (listed.count(rel) || atomic_temp_owner(f->path().filename().string()) >= 0) continue;
      std::error_code rm;
      fs::remove(f->path(), rm);
    }
    ec.clear();
    std::error_code rm;
    if (fs::is_empty(sub->path(), rm)) fs::remove(sub->path(), rm);
  }
}

// The captions file: the training caption (with the quality tag as configured) first, then the others.
std::vector<std::string> export_captions(Manifest& m, int64_t id) {
  const std::string train_cap = m.training_caption(id);
  std::vector<std::string> all{train_cap};
  for (const auto& c : m.captions(id))
    if (c != train_cap) all.push_back(c);
  return all;
}

}  // namespace

ExportReport export_dataset(Manifest& m, const ExportOptions& opt) {
  ExportReport rep;
  if (opt.out_dir.empty()) fail("data export: pass -o DIR (the training folder to write)");
  if (opt.mode != "link" && opt.mode != "copy" && opt.mode != "symlink") fail("--mode ", opt.mode, ": use link, copy or symlink");
  const fs::path dir = fs::absolute(opt.out_dir).lexically_normal();
  check_output_folder(m, opt, dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(opt.out_dir, ": cannot create the folder: ", ec.message());
  remove_stale_temps_below(dir.string());
  // The marker first: a folder this export has begun writing into is recognised as one.
  if (!fs::exists(dir / kExportMarker, ec))
    write_file_atomic((dir / kExportMarker).string(),
                      "written by `oboro data export`; `--force` may replace this folder's export\n");

  sql::Db& db = m.db();
  sql::Transaction tx(db);
  sql::Stmt ins_exp(db, "INSERT INTO exports(dir, digest, images, created) VALUES (?, '', 0, ?) RETURNING id");
  ins_exp.bind(1, dir.string()).bind(2, now_unix());
  if (!ins_exp.step()) db.fail_sql("export insert returned no id");
  rep.export_id = ins_exp.i64(0);
  ins_exp.reset();
  sql::Stmt link(db, "INSERT INTO export_images(export_id, image_id) VALUES (?, ?)");
  std::set<std::string> seen, listed;  // content hashes exported; files written (relative)
  write_atomic((dir / "manifest.jsonl").string(), [&](const AtomicPut& put) {
    Progress prog("export " + opt.out_dir, m.count("status='active'"), opt.progress);
    sql::Stmt q(db, "SELECT id, path, sha256, source, original, license, attribution FROM images WHERE status='active' ORDER BY id");
    while (q.step()) {
      const int64_t id = q.i64(0);
      const std::string path = q.text(1), sha = q.text(2);
      prog.add();
      if (!seen.insert(sha).second) {
        ++rep.skipped_same_content;
        continue;
      }
      std::string ext = fs::path(path).extension().string();
      for (auto& c : ext) c = (char)std::tolower((unsigned char)c);
      const std::string rel = sha.substr(0, 2) + "/" + sha + ext, rel_txt = sha.substr(0, 2) + "/" + sha + ".txt";
      fs::create_directories(dir / sha.substr(0, 2), ec);
      if (ec) fail((dir / sha.substr(0, 2)).string(), ": cannot create the folder: ", ec.message());
      place_file_atomic(path, (dir / rel).string(), opt.mode);
      const std::vector<std::string> caps = export_captions(m, id);
      std::string text;
      for (const auto& c : caps) text += c + "\n";
      write_file_atomic((dir / rel_txt).string(), text, Durability::Deferred);
      listed.insert(rel);
      listed.insert(rel_txt);
      json rec = {{"file", rel},          {"sha256", sha},            {"source", q.text(3)}, {"original", q.text(4)},
                  {"license", q.text(5)}, {"attribution", q.text(6)}, {"captions", caps}};
      const std::string line = rec.dump() + "\n";
      put(line.data(), line.size());
      link.bind(1, rep.export_id).bind(2, id).run();
      ++rep.images;
    }
    prog.finish();
    sync_filesystem(dir.string());  // every image and caption is on disk before the manifest that lists them
  });
  {
    sql::Stmt d(db, "SELECT i.sha256, i.license FROM export_images e JOIN images i ON i.id=e.image_id WHERE e.export_id=? "
                    "ORDER BY i.sha256, i.license");
    d.bind(1, rep.export_id);
    rep.digest = digest_of(d);
  }
  sql::Stmt up(db, "UPDATE exports SET digest=?, images=? WHERE id=?");
  up.bind(1, rep.digest).bind(2, rep.images).bind(3, rep.export_id).run();
  tx.commit();
  remove_unlisted(dir, listed);
  return rep;
}

}  // namespace oboro
