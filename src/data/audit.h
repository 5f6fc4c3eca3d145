// Provenance in the manifest: which images went into which model, exactly.
//
// A model trained from a folder with manifest.jsonl records `oboro.dataset` in its metadata:
// {"digest": "sha256:<hex>", "images": N, "licenses": {...}, "sources": {...}, "attribution": [...]}
// with digest = sha256 of the sorted lines "<image sha256> <licence>\n" of the images used.
//
// The link from a model back to manifest rows is made by digest equality, never by guessing:
//   export   — `oboro data export` writes the active images (one file per distinct content) plus a
//              manifest.jsonl into a training folder and records the export and its image set;
//              a model whose digest equals an export's digest was trained on exactly that set;
//   --data   — or the training folder's own manifest.jsonl is read and its digest checked against
//              the model's; its sha256 values are then matched to manifest rows;
//   active   — or the digest of the manifest's current active set equals the model's.
// `oboro data register-model` stores the model (file sha256, digest) and links its images;
// `oboro data remove` marks an image removed and lists every registered model that used it.
#pragma once
#include "data/manifest.h"

#include <map>
#include <string>
#include <vector>

namespace oboro {

struct ModelDataset {
  std::string digest;
  int64_t images = 0;
  std::map<std::string, int64_t> licenses, sources;
  std::vector<std::string> attribution;
  std::string raw;  // the metadata JSON
};
// Reads `oboro.dataset` from a model file (or sharded checkpoint). Errors name the file and the fix.
ModelDataset read_model_dataset(const std::string& model);
// Every dataset behind a model: a merged model or LoRA (`oboro merge`, merge/merge_metadata.h) records
// `oboro.datasets`, one entry per dataset of its inputs ({"model", "sha256", "dataset"}); `from` is "name (sha256
// prefix)" of the input that brought it. A model with only `oboro.dataset` gives that one (from = ""). Errors as
// read_model_dataset.
struct SourcedDataset {
  std::string from;
  ModelDataset dataset;
};
std::vector<SourcedDataset> read_model_datasets(const std::string& model);

// The file `oboro data export` writes into every export folder; `--force` replaces only a folder that has it (or
// that the manifest recorded as an export).
inline constexpr const char* kExportMarker = ".oboro-export";

struct ExportOptions {
  std::string out_dir;
  std::string mode = "link";  // link (hard link, copy across file systems) | copy | symlink
  bool force = false;         // replace a previous export in out_dir (never a folder oboro did not export to)
  bool progress = true;
};
struct ExportReport {
  int64_t export_id = 0, images = 0, skipped_same_content = 0;
  std::string digest;
};
ExportReport export_dataset(Manifest& m, const ExportOptions& opt);  // data/export.cpp
// The dataset digest: "sha256:" + SHA-256 over the rows "SHA256 LICENSE\n" of a query returning (sha256, license)
// ordered by sha256, license.
std::string digest_of(sql::Stmt& rows);

struct RegisterReport {
  int64_t model_id = 0, images = 0;
  std::string digest, linked_by;
  bool already = false;
};
RegisterReport register_model(Manifest& m, const std::string& model, const std::string& data_dir = "");

struct ModelRef {
  int64_t id = 0;
  std::string path, file_sha256, digest, linked_by;
  int64_t registered = 0;
};
std::vector<ModelRef> models_using(Manifest& m, int64_t image_id);

struct AlreadyRemoved {
  ImageRow row;          // its status, reason as first recorded
  int64_t removed_at = 0;  // unix seconds of that removal
};
struct RemoveReport {
  std::vector<ImageRow> rows;    // the rows with that content (same content at several paths: all)
  std::vector<ImageRow> removed;          // the rows this call marked removed
  std::vector<AlreadyRemoved> already;    // rows removed by hand before: their first reason is kept
  std::vector<ModelRef> models;  // registered models trained with the image
  std::vector<std::pair<int64_t, std::string>> exports;  // (export id, folder) that contain it
};
RemoveReport remove_image(Manifest& m, const std::string& hash, const std::string& reason);

}  // namespace oboro
