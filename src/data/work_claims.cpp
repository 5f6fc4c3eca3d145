#include "data/work_claims.h"

#include "core/error.h"

#include <unistd.h>

namespace oboro {

namespace {
// Microseconds on the server's clock (one clock for every machine of a cluster).
const char* const kNowUs = "(extract(epoch from clock_timestamp()) * 1000000)::bigint";
}  // namespace

WorkClaims::WorkClaims(Manifest& m, std::string job, ShardSpec own) : m_(m), job_(std::move(job)), own_(own) {
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  worker_ = std::string(host) + ":" + std::to_string(::getpid());
  if (m_.backend() == sql::Backend::postgresql) lock_db_ = m_.connect_again();
}

WorkClaims::~WorkClaims() {
  if (holding_ && lock_db_) lock_db_->rollback();  // an error: the shard stays unfinished for another worker
}

std::optional<ShardSpec> WorkClaims::next() {
  if (holding_) fail("internal: WorkClaims::next() before done()");
  if (!lock_db_) {  // SQLite: this process's own shard, once
    if (own_done_) return std::nullopt;
    own_done_ = true;
    current_ = own_.index;
    return own_;
  }
  sql::Db& db = *lock_db_;
  if (!own_done_) {
    own_done_ = true;
    // Register the start (committed now, so that it outlives this process), then wait for the row lock.
    sql::Stmt reg(db, std::string("INSERT INTO work_claims(job, parts, part, worker, started_at) VALUES (?, ?, ?, ?, ") +
                          kNowUs + ") ON CONFLICT(job, parts, part) DO UPDATE SET started_at = excluded.started_at "
                                   "RETURNING started_at");
    reg.bind(1, job_).bind(2, own_.count).bind(3, own_.index).bind(4, worker_);
    if (!reg.step()) db.fail_sql("work claim returned no row");
    const int64_t started = reg.i64(0);
    reg.reset();
    db.begin();
    holding_ = true;
    sql::Stmt lock(db, "SELECT done_at FROM work_claims WHERE job=? AND parts=? AND part=? FOR UPDATE");
    lock.bind(1, job_).bind(2, own_.count).bind(3, own_.index);
    if (!lock.step()) db.fail_sql("work claim row vanished");
    const bool done_meanwhile = !lock.is_null(0) && lock.i64(0) > started;  // another worker took it over and finished
    lock.reset();
    if (!done_meanwhile) {
      current_ = own_.index;
      return own_;
    }
    db.commit();
    holding_ = false;
    finished_.insert(own_.index);
  }
  // Abandoned shards: started after they were last finished, and nobody holds them.
  db.begin();
  holding_ = true;
  std::string not_mine;  // never twice in one run
  for (int p : finished_) not_mine += " AND part <> " + std::to_string(p);
  sql::Stmt q(db, "SELECT part FROM work_claims WHERE job=? AND parts=? AND started_at > coalesce(done_at, -1)" + not_mine +
                      " ORDER BY part LIMIT 1 FOR UPDATE SKIP LOCKED");
  q.bind(1, job_).bind(2, own_.count);
  const int part = q.step() ? (int)q.i64(0) : -1;
  q.reset();
  if (part < 0) {
    db.commit();
    holding_ = false;
    return std::nullopt;
  }
  ++taken_over_;
  current_ = part;
  return ShardSpec{part, own_.count};
}

void WorkClaims::done() {
  finished_.insert(current_);
  if (!lock_db_) return;
  sql::Db& db = *lock_db_;
  sql::Stmt up(db, std::string("UPDATE work_claims SET done_at = ") + kNowUs + ", worker = ? WHERE job=? AND parts=? AND part=?");
  up.bind(1, worker_).bind(2, job_).bind(3, own_.count).bind(4, current_).run();
  db.commit();
  holding_ = false;
}

}  // namespace oboro
