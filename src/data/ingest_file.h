// Ingest, one candidate file at a time and without the database: read, hash, decode and embed the image,
// gather its captions and licence (ingest.cpp decides and writes the rows).
#pragma once
#include "data/features.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace oboro::ingest_file {

// One image to look at.
struct Candidate {
  std::string path, root, relpath, caption_ext = ".txt", fallback_caption;
};

// A changed candidate on its way to the manifest.
struct Work {
  Candidate c;
  std::string sig, jsonl_record;
  int64_t existing_id = -1;
  std::string existing_sha, existing_status, existing_kind;
  // Filled by the worker:
  std::string sha256, error, license, license_from, attribution, source, original;
  std::vector<std::pair<std::string, std::string>> captions;  // (origin, text)
  int64_t size = 0;
  int width = 0, height = 0;
  std::string features;  // packed f16
};

// The caption sidecar of an image: the image path with extension `ext` (".txt").
std::string caption_path(const std::string& image, const std::string& ext);
// Sidecar licence files: REUSE style `img.png.license`, or `img.license`; "" when neither exists.
std::string licence_path(const std::string& image);

// 2. Reads, hashes, decodes and embeds the batch in parallel (no DB access); fills the worker's fields of each
// Work (a file that cannot be read or decoded gets `error`).
void decode_batch(std::vector<Work>& batch, const FeatureExtractor& extractor, const std::string& default_license);

}  // namespace oboro::ingest_file
