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
// Synced: the file and its folder are fsynced before write_atomic returns (one file that must survive a power
// loss once written). Deferred: temp + rename only, no fsync — for the many files of one batch (an export's
// images and captions, a synthetic dataset), made durable together by sync_filesystem() before the batch's own
// index file is written Synced. Either way a reader (and a process killed mid-write) never leaves a part file
// under the final name.
enum class Durability { Synced, Deferred };
// Writes what `body` puts into `path` atomically.
void write_atomic(const std::string& path, const std::function<void(const AtomicPut&)>& body,
                  Durability durability = Durability::Synced);
// Write `bytes` to `path` atomically.
void write_file_atomic(const std::string& path, const std::string& bytes, Durability durability = Durability::Synced);
// Places `path` as a hard link to (or a symbolic link at) `source`, or a copy of it, atomically: made under the temp
// name, renamed over `path` (Deferred durability). `how`: "link" (falls back to a copy across file systems),
// "symlink" or "copy".
void place_file_atomic(const std::string& source, const std::string& path, const std::string& how);
// syncfs() of the file system holding `dir`: every file written there so far reaches the disk. Fails naming `dir`.
void sync_filesystem(const std::string& dir);

// Files that belong together (a model and its text encoder), replaced together: each is first written in full
// (by any writer, e.g. write_atomic or SafetensorsWriter) to the temp name stage() returns, then commit() renames
// them over their paths in order and fsyncs their folders. A failure while writing leaves every old file as it
// was; the destructor removes the temps of an uncommitted set. A rename that fails in commit() puts back the files
// renamed before it (their old versions are kept as hard links until the set is in place), so the set is replaced
// whole or not at all; only a crash between two renames can leave it mixed.
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
// The same for `dir` and every folder below it.
int remove_stale_temps_below(const std::string& dir);
// The temps of one file only: "<path>.tmp.<pid>" of dead processes, with the SQLite companions of a database
// written under that name ("-wal", "-shm", "-journal"). For folders that are the user's, not oboro's.
int remove_stale_temps_of(const std::string& path);

}  // namespace oboro
