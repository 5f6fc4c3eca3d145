// The server's outputs folder and history. Images are written as the CLI writes them
// (`<outputs>/YYYY-MM-DD/NNNNN-<seed>.png`, atomically, with the A1111 `parameters` infotext and the
// `oboro_request` JSON chunk), then one line per image is appended to `<outputs>/history.jsonl` (a single write,
// then fsync). On start the history is rebuilt from that index, and any PNG in the date folders that the index does
// not list (written by `oboro generate`, or by a server stopped between the two writes) is added from its own
// text chunks, so the history survives restarts and crashes.
#pragma once
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
  void load();
  nlohmann::json record_from_png(const std::string& rel) const;

  std::string root_;
  mutable std::mutex mu_;
  std::vector<nlohmann::json> items_;  // oldest first
  std::string day_;                    // the folder the next index belongs to
  int next_ = 0;
};

// True for names of the form YYYY-MM-DD/NNNNN-SEED.png (digits only, one '/').
bool valid_output_name(const std::string& rel);

}  // namespace oboro::serve
