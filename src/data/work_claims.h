// Shard hand-out for the sharded data commands (ingest, cache: --shard i/n | mpi), done the
// database's way on PostgreSQL: a worker registers its start in work_claims (committed at once),
// then holds that row locked (SELECT ... FOR UPDATE on a second connection) while it works and
// marks it done when finished. A worker that dies loses its connection, so the server drops its
// lock and rolls back its batch in flight; the shard is then "abandoned" (started after it was last
// finished, and unlocked) and the next worker that finishes its own shard claims it with
// FOR UPDATE SKIP LOCKED and does it again. Rows are idempotent (UNIQUE path, upserts), so doing a
// shard twice never duplicates anything; a restarted worker waits for whoever holds its shard and
// skips it when that worker finished it after the restart registered.
//
// SQLite has no row locks (one writer at a time, one machine): there a process does its own shard
// only, as before.
#pragma once
#include "data/manifest.h"

#include <memory>
#include <optional>
#include <set>
#include <string>

namespace oboro {

class WorkClaims {
 public:
  // `job`: the command and its input, e.g. "ingest /abs/data"; `own`: this process's --shard.
  WorkClaims(Manifest& m, std::string job, ShardSpec own);
  ~WorkClaims();
  WorkClaims(const WorkClaims&) = delete;
  WorkClaims& operator=(const WorkClaims&) = delete;

  // The next shard to work on: first this process's own, then (PostgreSQL) abandoned ones;
  // std::nullopt when there is nothing left. The shard stays locked until done().
  std::optional<ShardSpec> next();
  void done();  // the shard returned by next() is finished: recorded and unlocked
  int taken_over() const { return taken_over_; }  // abandoned shards this process did

 private:
  Manifest& m_;
  std::string job_, worker_;
  ShardSpec own_;
  std::unique_ptr<sql::Db> lock_db_;  // PostgreSQL: the connection that holds the shard's row lock
  bool own_done_ = false, holding_ = false;
  int current_ = -1, taken_over_ = 0;
  std::set<int> finished_;
};

}  // namespace oboro
