// Atomic file writing, the one helper every writer of a finished file uses (safetensors, PNG, JSON, SVG,
// vocabularies): the bytes go to `path.tmp.PID` in the same folder, are fsynced, renamed over `path`, and the
// folder is fsynced. A reader sees the old file or the whole new one, never a part; a failure (disk full, I/O
// error) is one oboro::Error naming `path` and the cause, leaves the old file intact and removes the temp file.
// A process killed mid-save leaves its temp file behind: remove_stale_temps() removes those of dead processes.
#pragma once
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace oboro {

// Receives the file's bytes in order (any number of calls).
using AtomicPut = std::function<void(const void* data, size_t n)>;
// Writes what `body` puts into `path` atomically.
void write_atomic(const std::string& path, const std::function<void(const AtomicPut&)>& body);
// Write `bytes` to `path` atomically.
void write_file_atomic(const std::string& path, const std::string& bytes);

// Files that belong together (a model and its text encoder), replaced together: each is first written in full
// (by any writer, e.g. write_atomic or SafetensorsWriter) to the temp name stage() returns, then commit() renames
// them over their paths in order and fsyncs their folders. A failure while writing leaves every old file as it
// was; the destructor removes the temps of an uncommitted set.
class StagedFiles {
 public:
  StagedFiles() = default;
  StagedFiles(const StagedFiles&) = delete;
  StagedFiles& operator=(const StagedFiles&) = delete;
  ~StagedFiles();
  std::string stage(const std::string& path);  // atomic_temp_path(path, this process)
  void commit();

 private:
  std::vector<std::string> paths_;
  bool committed_ = false;
};

// The temp file of `path` for process `pid`: "<path>.tmp.<pid>".
std::string atomic_temp_path(const std::string& path, long pid);
// If `file_name` is a temp file of the shape atomic_temp_path() makes ("<name>.tmp.<digits>", a non-empty
// name), its PID; else -1.
long atomic_temp_owner(const std::string& file_name);
// Removes the temp files in `dir` (not recursive) whose owner process no longer exists. Files of live
// processes (a concurrent save, or an unrelated process that reuses the PID) are left alone. Returns how many
// were removed; errors are ignored (the files are only litter).
int remove_stale_temps(const std::string& dir);

}  // namespace oboro
