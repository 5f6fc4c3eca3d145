// `oboro data manifest copy SRC DST`: a manifest from one backend to the other (SQLite file ↔
// PostgreSQL URI / connection string), verified by row counts and digests before it commits
// (src/data/manifest_copy.h, docs/data.md).
#include "cli/commands.h"
#include "data/manifest_copy.h"
#include "data/sql_db.h"

#include <cstdio>
#include <memory>
#include <string>

namespace oboro::cli {

void register_data_manifest_copy(CLI::App& data) {
  auto* group = data.add_subcommand("manifest", "Manifest maintenance: copy between SQLite and PostgreSQL");
  group->require_subcommand(1);
  struct Opts {
    std::string src, dst;
    bool quiet = false;
  };
  auto o = std::make_shared<Opts>();
  auto* c = group->add_subcommand("copy", "Copy a manifest into a new SQLite file or an empty PostgreSQL database/schema, "
                                          "verified by row counts and digests before it commits");
  c->add_option("SRC", o->src, "the manifest to copy: an SQLite file or postgresql://user@host/db")->required();
  c->add_option("DST", o->dst, "a new SQLite file, or an empty PostgreSQL database (postgresql://user@host/db)")->required();
  c->add_flag("--quiet,-q", o->quiet, "no progress line");
  c->callback([o] {
    const CopyReport r = copy_manifest(o->src, o->dst, !o->quiet);
    std::printf("copied %s to %s in %.1f s, verified (row counts and content digests equal):\n",
                sql::display_name(o->src).c_str(), sql::display_name(o->dst).c_str(), r.seconds);
    for (const auto& t : r.tables) std::printf("  %-14s %10lld rows  sha256 %s\n", t.name.c_str(), (long long)t.rows, t.digest.c_str());
    std::printf("  active set: %lld images, dataset digest %s\n", (long long)r.active, r.dataset_digest.c_str());
  });
}

}  // namespace oboro::cli
