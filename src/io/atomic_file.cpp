#include "io/atomic_file.h"
#include "core/crash_point.h"
#include "core/error.h"
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>
#include <fcntl.h>
#include <unistd.h>

namespace oboro {

namespace fs = std::filesystem;

namespace {

constexpr size_t kWriteChunk = size_t(64) << 20;

std::string errno_text(int e) {
  std::string s = std::system_category().message(e);
  if (e == ENOSPC || e == EDQUOT) s += " (the disk is full: free some space and run again)";
  return s;
}

std::string dir_of(const std::string& path) {
  auto p = fs::path(path).parent_path();
  return p.empty() ? std::string(".") : p.string();
}

}  // namespace

std::string atomic_temp_path(const std::string& path, long pid) { return path + ".tmp." + std::to_string(pid); }

long atomic_temp_owner(const std::string& name) {
  const auto at = name.rfind(".tmp.");
  if (at == std::string::npos || at == 0) return -1;
  const std::string digits = name.substr(at + 5);
  if (digits.empty() || digits.size() > 9 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  const long pid = std::stol(digits);
  return pid > 0 ? pid : -1;
}

int remove_stale_temps(const std::string& dir) {
  int removed = 0;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const long pid = atomic_temp_owner(it->path().filename().string());
    if (pid < 0 || pid == (long)::getpid() || !it->is_regular_file(ec)) continue;
    if (::kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to probe): keep
    std::error_code rm;
    if (fs::remove(it->path(), rm)) ++removed;
  }
  return removed;
}

int remove_stale_temps_below(const std::string& dir) {
  int removed = remove_stale_temps(dir);
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory(ec) && !it->is_symlink(ec)) removed += remove_stale_temps(it->path().string());
  return removed;
}

int remove_stale_temps_of(const std::string& path) {
  const std::string prefix = fs::path(path).filename().string() + ".tmp.";
  int removed = 0;
  std::error_code ec;
  for (fs::directory_iterator it(dir_of(path), ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    for (const char* companion : {"-wal", "-shm", "-journal"})
      if (name.size() > std::strlen(companion) && name.ends_with(companion)) name.resize(name.size() - std::strlen(companion));
    const long pid = name.size() > prefix.size() ? atomic_temp_owner(name) : -1;
    if (pid < 0 || pid == (long)::getpid() || !it->is_regular_file(ec)) continue;
    if (::kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
    std::error_code rm;
    if (fs::remove(it->path(), rm)) ++removed;
  }
  return removed;
}

void write_atomic(const std::string& target, const std::function<void(const AtomicPut&)>& body, Durability durability) {
  // A StagedFiles temp ("x.safetensors.tmp.PID") is already a temp: it is written in place (StagedFiles::commit
  // renames it and fsyncs its folder), and errors name it by its final name, the file the user knows.
  const std::string staged_suffix = ".tmp." + std::to_string((long)::getpid());
  const bool staged = target.size() > staged_suffix.size() &&
                      target.compare(target.size() - staged_suffix.size(), staged_suffix.size(), staged_suffix) == 0;
  const std::string path = staged ? target.substr(0, target.size() - staged_suffix.size()) : target;
  const std::string tmp = staged ? target : atomic_temp_path(target, (long)::getpid());
  // A staged temp written again is a new file (unlinked first), so a reader that mapped the earlier one keeps it.
  if (staged) ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) {
    int e = errno;
    fail(path, ": cannot write: creating temporary file ", tmp, " failed: ", errno_text(e),
         e == ENOENT ? " (does the directory exist?)" : "");
  }
  crash_point("atomic.open");
  try {
    bool first = true;
    AtomicPut put = [&](const void* data, size_t n) {
      const char* p = static_cast<const char*>(data);
      while (n > 0) {
        size_t chunk = std::min(n, kWriteChunk);
        ssize_t w = ::write(fd, p, chunk);
        if (w < 0) {
          if (errno == EINTR) continue;
          int e = errno;
          fail(path, ": cannot write: writing ", tmp, " failed: ", errno_text(e));
        }
        if (w == 0) fail(path, ": cannot write: writing ", tmp, " made no progress");
        p += w;
        n -= (size_t)w;
        if (first) first = false, crash_point("atomic.write");
      }
    };
    body(put);
    crash_point("atomic.fsync");
    if (durability == Durability::Synced && ::fsync(fd) != 0) {
      int e = errno;
      fail(path, ": cannot write: fsync of ", tmp, " failed: ", errno_text(e));
    }
    int c = ::close(fd);
    fd = -1;
    if (c != 0) {
      int e = errno;
      fail(path, ": cannot write: closing ", tmp, " failed: ", errno_text(e));
    }
    if (staged) return;
    crash_point("atomic.rename");
    if (::rename(tmp.c_str(), target.c_str()) != 0) {
      int e = errno;
      fail(path, ": cannot write: renaming ", tmp, " over it failed: ", errno_text(e));
    }
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  crash_point("atomic.renamed");
  if (durability == Durability::Deferred) return;
  // Make the rename durable. The new file is already in place; a failure here is still
  // reported because the caller asked for durability.
  const std::string dir = dir_of(target);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    int e = errno;
    fail(path, ": written, but opening directory ", dir, " to fsync it failed: ", errno_text(e));
  }
  if (::fsync(dfd) != 0 && errno != EINVAL && errno != ENOTSUP) {
    int e = errno;
    ::close(dfd);
    fail(path, ": written, but fsync of directory ", dir, " failed: ", errno_text(e));
  }
  ::close(dfd);
}

StagedFiles::~StagedFiles() {
  if (committed_) return;
  for (const std::string& p : paths_) ::unlink(atomic_temp_path(p, (long)::getpid()).c_str());
}

std::string StagedFiles::stage(const std::string& path) {
  paths_.push_back(path);
  return atomic_temp_path(path, (long)::getpid());
}

void StagedFiles::commit() {
  const long pid = (long)::getpid();
  // Each old file is first kept under a second name (a hard link, "<path>.previous.tmp.PID"), so that when a later
  // rename fails the files renamed before it are put back: the set is replaced whole or not at all (a crash
  // between two renames is not covered; the trainer's resume writes the set again).
  std::vector<std::string> kept(paths_.size());
  std::vector<char> existed(paths_.size(), 0);
  auto drop_kept = [&] {
    for (const std::string& k : kept)
      if (!k.empty()) ::unlink(k.c_str());
  };
  for (size_t i = 0; i < paths_.size(); ++i) {
    const std::string keep = atomic_temp_path(paths_[i] + ".previous", pid);
    ::unlink(keep.c_str());
    existed[i] = ::access(paths_[i].c_str(), F_OK) == 0;
    if (existed[i] && ::link(paths_[i].c_str(), keep.c_str()) == 0) kept[i] = keep;  // (no hard links here: not kept)
  }
  for (size_t i = 0; i < paths_.size(); ++i) {
    const std::string& p = paths_[i];
    const std::string tmp = atomic_temp_path(p, pid);
    crash_point("atomic.rename");
    if (::rename(tmp.c_str(), p.c_str()) != 0) {
      const int e = errno;
      for (size_t j = 0; j < i; ++j) {  // put back what this commit replaced, remove what it added
        if (!existed[j]) ::unlink(paths_[j].c_str());
        else if (!kept[j].empty() && ::rename(kept[j].c_str(), paths_[j].c_str()) == 0) kept[j].clear();
      }
      drop_kept();
      fail(p, ": cannot write: renaming ", tmp, " over it failed: ", errno_text(e));
    }
  }
  drop_kept();
  committed_ = true;
  crash_point("atomic.renamed");
  for (const std::string& p : paths_) {
    const std::string dir = dir_of(p);
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || (::fsync(dfd) != 0 && errno != EINVAL && errno != ENOTSUP)) {
      int e = errno;
      if (dfd >= 0) ::close(dfd);
      fail(p, ": written, but fsync of directory ", dir, " failed: ", errno_text(e));
    }
    ::close(dfd);
  }
}

void write_file_atomic(const std::string& path, const std::string& bytes, Durability durability) {
  write_atomic(path, [&](const AtomicPut& put) { put(bytes.data(), bytes.size()); }, durability);
}

void place_file_atomic(const std::string& source, const std::string& path, const std::string& how) {
  if (how == "copy" || how == "link") {
    if (how == "link") {
      const std::string tmp = atomic_temp_path(path, (long)::getpid());
      ::unlink(tmp.c_str());
      if (::link(source.c_str(), tmp.c_str()) == 0) {
        crash_point("atomic.rename");
        if (::rename(tmp.c_str(), path.c_str()) != 0) {
          int e = errno;
          ::unlink(tmp.c_str());
          fail(path, ": cannot write: renaming ", tmp, " over it failed: ", errno_text(e));
        }
        ::unlink(tmp.c_str());  // rename() of two links to one file does nothing and leaves the temp name
        return;
      }
      // another file system, or links not allowed: copy
    }
    int in = ::open(source.c_str(), O_RDONLY | O_CLOEXEC);
    if (in < 0) {
      int e = errno;
      fail(source, ": cannot read it to write ", path, ": ", errno_text(e));
    }
    try {
      write_atomic(path, [&](const AtomicPut& put) {
        std::vector<char> buf(size_t(1) << 20);
        for (;;) {
          ssize_t r = ::read(in, buf.data(), buf.size());
          if (r < 0 && errno == EINTR) continue;
          if (r < 0) {
            int e = errno;
            fail(source, ": reading it to write ", path, " failed: ", errno_text(e));
          }
          if (r == 0) break;
          put(buf.data(), (size_t)r);
        }
      }, Durability::Deferred);
    } catch (...) {
      ::close(in);
      throw;
    }
    ::close(in);
    return;
  }
  if (how != "symlink") fail("place_file_atomic: unknown mode ", how);
  const std::string tmp = atomic_temp_path(path, (long)::getpid());
  ::unlink(tmp.c_str());
  std::error_code ec;
  const std::string target = fs::absolute(source, ec).string();
  if (::symlink(target.c_str(), tmp.c_str()) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    fail(path, ": cannot write the link to ", source, ": ", errno_text(e));
  }
}

void sync_filesystem(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    fail(dir, ": cannot open the folder to flush it to disk: ", errno_text(e));
  }
  if (::syncfs(fd) != 0) {
    int e = errno;
    ::close(fd);
    fail(dir, ": flushing the folder's files to disk failed: ", errno_text(e));
  }
  ::close(fd);
}

}  // namespace oboro
