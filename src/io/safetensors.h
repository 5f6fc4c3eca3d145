// safetensors: reader (mmap, fully validated), atomic writer, sharded checkpoints.
// Format: u64 little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}
// then the data section; offsets are relative to the start of the data section.
#pragma once
#include "core/tensor.h"
#include "io/atomic_file.h"  // write_file_atomic (callers include it through this header)
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace oboro {

struct TensorInfo {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte offsets inside the data section
};

// One memory-mapped .safetensors file. Every problem is an oboro::Error whose message
// starts with the file path and names the tensor and the problem.
class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  // Parse and validate an in-memory image (used by open() and by the corruption fuzz test).
  static std::shared_ptr<SafetensorsFile> from_bytes(std::string bytes, const std::string& label);
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<TensorInfo>& tensors() const { return infos_; }  // in data-offset order
  bool has(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;  // throws naming file + tensor if missing
  // Zero-copy view, stored dtype. The view keeps this file (and its mapping) alive. The
  // mapping is read-only: never write through a view (clone() it first). If the data is not
  // aligned to its element size (the format allows any offset), an aligned owned copy is
  // returned instead, so typed access is always well-defined.
  Tensor tensor(const std::string& name) const;
  Tensor tensor_f32(const std::string& name) const;        // converted contiguous F32 copy (always owned)

 private:
  SafetensorsFile() = default;
  void parse();
  std::string path_;
  const uint8_t* base_ = nullptr;  // whole file
  size_t size_ = 0;
  size_t data_start_ = 0;
  void* map_ = nullptr;            // mmap'd region (or null when from_bytes)
  std::string bytes_;              // owned image when from_bytes
  std::map<std::string, std::string> metadata_;
  std::vector<TensorInfo> infos_;
  std::map<std::string, size_t> index_;
  std::weak_ptr<SafetensorsFile> self_;
};

// A checkpoint that may be one file or shards listed by `*.safetensors.index.json`
// ({"metadata": {...}, "weight_map": {tensor: shard file}}). `path` may be a .safetensors
// file, an .index.json file, or a directory holding exactly one of those.
class TensorSource {
 public:
  static TensorSource open(const std::string& path);
  const std::string& path() const { return path_; }
  std::vector<std::string> names() const;  // sorted
  bool has(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;
  Tensor tensor(const std::string& name) const;
  Tensor tensor_f32(const std::string& name) const;
  // Metadata of the (first) file: for sharded checkpoints the single-file `__metadata__` of shard 0
  // merged with the index's "metadata" string values.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::string path_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor -> index into files_
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (any dtype; data copied at add() time is NOT done — tensors must stay alive
// until write()) atomically: temp file in the same directory, fsync, rename, fsync dir.
class SafetensorsWriter {
 public:
  void add(const std::string& name, const Tensor& t);
  // A tensor computed when write() reaches it (in name order) and dropped once written, so a file can be streamed
  // with about one tensor in memory (oboro merge). Its dtype and shape are declared now (the header is written
  // first); the produced tensor must match them (an internal error otherwise).
  void add_lazy(const std::string& name, DType dtype, const Shape& shape, std::function<Tensor()> produce);
  void set_metadata(const std::string& key, const std::string& value);
  void write(const std::string& path) const;

 private:
  struct Lazy {
    DType dtype;
    Shape shape;
    std::function<Tensor()> produce;
  };
  void check_name(const std::string& name) const;
  std::vector<std::pair<std::string, Tensor>> tensors_;
  std::map<std::string, Lazy> lazy_;
  std::map<std::string, std::string> metadata_;
};


}  // namespace oboro
