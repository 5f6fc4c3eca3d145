// faultfs: an LD_PRELOAD shim that makes file writes fail, for the disk-error tests (tests/crash/disk_errors.py).
// It interposes write, pwrite, pwrite64, writev, fsync, fdatasync, rename and renameat. An operation is "matched"
// when the path of its file (for an fd: /proc/self/fd/N) contains FAULTFS_MATCH; a matched operation of a kind in
// FAULTFS_OPS fails with FAULTFS_ERRNO once FAULTFS_AFTER bytes have been written to matched files (by this
// process). Everything else passes through to libc.
//   FAULTFS_MATCH   substring of the path (required; unset = the shim does nothing)
//   FAULTFS_OPS     comma-separated: write (write/pwrite/writev), fsync (fsync/fdatasync), rename (default: write)
//   FAULTFS_ERRNO   ENOSPC (default), EIO or EDQUOT
//   FAULTFS_AFTER   bytes that still succeed before writes fail (default 0); a write crossing it is short
// A full disk looks like this: the first writes succeed, then one is short, then every one fails with ENOSPC.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static const char* match_;
static int err_ = ENOSPC, on_write_ = 1, on_fsync_ = 0, on_rename_ = 0, ready_ = 0;
static long long after_ = 0, written_ = 0;

static void setup(void) {
  if (ready_) return;
  ready_ = 1;
  match_ = getenv("FAULTFS_MATCH");
  if (match_ && !*match_) match_ = NULL;
  const char* e = getenv("FAULTFS_ERRNO");
  if (e && !strcmp(e, "EIO")) err_ = EIO;
  else if (e && !strcmp(e, "EDQUOT")) err_ = EDQUOT;
  const char* ops = getenv("FAULTFS_OPS");
  if (ops) {
    on_write_ = strstr(ops, "write") != NULL;
    on_fsync_ = strstr(ops, "fsync") != NULL;
    on_rename_ = strstr(ops, "rename") != NULL;
  }
  const char* a = getenv("FAULTFS_AFTER");
  if (a) after_ = atoll(a);
}

static int fd_matches(int fd) {
  if (!match_ || fd < 0) return 0;
  char link[64], path[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0) return 0;
  path[n] = 0;
  return strstr(path, match_) != NULL;
}

static int path_matches(const char* p) { return match_ && p && strstr(p, match_) != NULL; }

#define REAL(ret, name, ...)                                  \
  static ret (*real_##name)(__VA_ARGS__);                     \
  if (!real_##name) real_##name = (ret(*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name)

// How many of n bytes a matched write may still write (n when not matched); -1 with errno set = fail.
static ssize_t allowed(int fd, size_t n) {
  setup();
  if (!on_write_ || !fd_matches(fd)) return (ssize_t)n;
  if (written_ >= after_) {
    errno = err_;
    return -1;
  }
  long long left = after_ - written_;
  size_t k = (long long)n < left ? n : (size_t)left;
  written_ += (long long)k;
  return (ssize_t)k;
}

ssize_t write(int fd, const void* buf, size_t n) {
  REAL(ssize_t, write, int, const void*, size_t);
  ssize_t k = allowed(fd, n);
  if (k < 0) return -1;
  return real_write(fd, buf, (size_t)k);
}

ssize_t pwrite(int fd, const void* buf, size_t n, off_t off) {
  REAL(ssize_t, pwrite, int, const void*, size_t, off_t);
  ssize_t k = allowed(fd, n);
  if (k < 0) return -1;
  return real_pwrite(fd, buf, (size_t)k, off);
}

ssize_t pwrite64(int fd, const void* buf, size_t n, off64_t off) {
  REAL(ssize_t, pwrite64, int, const void*, size_t, off64_t);
  ssize_t k = allowed(fd, n);
  if (k < 0) return -1;
  return real_pwrite64(fd, buf, (size_t)k, off);
}

ssize_t writev(int fd, const struct iovec* iov, int cnt) {
  REAL(ssize_t, writev, int, const struct iovec*, int);
  size_t n = 0;
  for (int i = 0; i < cnt; ++i) n += iov[i].iov_len;
  ssize_t k = allowed(fd, n);
  if (k < 0) return -1;
  if ((size_t)k == n) return real_writev(fd, iov, cnt);
  errno = err_;  // a gathered write crossing the limit fails whole
  return -1;
}

static int sync_fails(int fd) {
  setup();
  if (on_fsync_ && fd_matches(fd)) {
    errno = err_;
    return 1;
  }
  return 0;
}

int fsync(int fd) {
  REAL(int, fsync, int);
  return sync_fails(fd) ? -1 : real_fsync(fd);
}

int fdatasync(int fd) {
  REAL(int, fdatasync, int);
  return sync_fails(fd) ? -1 : real_fdatasync(fd);
}

int rename(const char* from, const char* to) {
  REAL(int, rename, const char*, const char*);
  setup();
  if (on_rename_ && (path_matches(from) || path_matches(to))) {
    errno = err_;
    return -1;
  }
  return real_rename(from, to);
}

int renameat(int dfrom, const char* from, int dto, const char* to) {
  REAL(int, renameat, int, const char*, int, const char*);
  setup();
  if (on_rename_ && (path_matches(from) || path_matches(to))) {
    errno = err_;
    return -1;
  }
  return real_renameat(dfrom, from, dto, to);
}
