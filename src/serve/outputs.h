// The server's outputs folder and history. Images are written as the CLI writes them
// (`<outputs>/YYYY-MM-DD/NNNNN-<seed>.png`, atomically, with the A1111 `parameters` infotext and the
// `oboro_request` JSON chunk), then one line per image is appended to `<outputs>/history.jsonl` (a single write,
// then fsync). On start the history is rebuilt from that index, and any PNG in the date folders that the index does
// not list (written by `oboro generate`, or by a server stopped between the two writes) is added from its own
// text chunks, so the history survives restarts and crashes.
// Memory: the history is not held in memory. Each image has a 24-byte entry (its order and where its record is:
// a line of history.jsonl, read back with pread when a page is asked for), so a server that has written a million
// images holds ~24 MB for them, not the ~2 KiB per image a parsed record costs. Only records rebuilt from PNGs the
// index does not list are kept as text.
#pragma once
#include <cstdint>
#include "flow/generate.h"
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace oboro::serve {

class OutputStore {
 public:
  explicit OutputStore(std::string root);
  // Writes one image and its history line; returns its file relative to the root ("2025-01-31/00012-42.png").
  // `extra` (job id, kind) is added to the history record.
  std::string save(const GeneratedImage& g, const nlohmann::json& extra);
  // Newest first: {total, offset, items: [{file, url, prompt, negative_prompt, seed, width, height, steps,
  // cfg_scale, sampler_name, model, infotext, created, ...}]}.
  nlohmann::json history(size_t offset, size_t limit) const;
  // The absolute path of a file named by a client ("YYYY-MM-DD/NNNNN-SEED.png" only: nothing else, no "..");
  // "" when the name is not of that form or the file does not exist.
  std::string path_of(const std::string& rel) const;
  size_t size() const;
  const std::string& root() const { return root_; }

 private:
  struct Entry {             // one image of the history
    int32_t day = 0;          // YYYYMMDD of its folder
    int32_t index = 0;        // NNNNN of its name
    uint64_t offset = 0;      // its line's byte offset in history.jsonl, or its index in recovered_
    uint32_t length = 0;      // its line's bytes (no newline); 0 for a recovered record
    bool recovered = false;   // rebuilt from the PNG's own text chunks (the index does not list it)
  };
  void load();
  nlohmann::json record_from_png(const std::string& rel) const;
  nlohmann::json record_of(const Entry& e, int fd) const;
  std::string index_path() const;

  std::string root_;
  mutable std::mutex mu_;
  std::vector<Entry> items_;              // oldest first
  std::vector<std::string> recovered_;    // records of PNGs the index does not list (JSON text)
  std::string day_;                    // the folder the next index belongs to
  int next_ = 0;
};

// True for names of the form YYYY-MM-DD/NNNNN-SEED.png (digits only, one '/').
bool valid_output_name(const std::string& rel);

}  // namespace oboro::serve
