#!/usr/bin/env bash
# Ingest + dedup throughput and manifest size, SQLite (1 process) vs PostgreSQL (1, 2, 4 processes):
#   tests/pg/bench_ingest.sh BUILD/oboro N WORKDIR       (docs/data.md "Measured"; N = 100000 for the full figure)
# Writes N synthetic 64x64 images once (oboro data synth), then for each configuration ingests them into a fresh
# manifest (--shard i/n, n processes at once, wall time from the first start to the last exit) and runs
# `oboro data dedup` (one process: DBSCAN is global). The PostgreSQL server is a throwaway one
# (tests/pg/with_server.sh) with fsync on. Run it under `flock /work/bench.lock` on a shared machine.
set -euo pipefail
oboro=$(realpath "$1"); n=$2; work=$3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"
if [ ! -f "$work/data/manifest.jsonl" ] || [ "$(wc -l <"$work/data/manifest.jsonl")" != "$n" ]; then
  "$oboro" data synth -o "$work/data" -n "$n" --size 64 --seed 1 --force >/dev/null
fi
export OBORO_BENCH_OBORO=$oboro OBORO_BENCH_WORK=$work OBORO_BENCH_N=$n
OBORO_PG_FSYNC=on "$here/with_server.sh" bash -c '
set -euo pipefail
oboro=$OBORO_BENCH_OBORO; work=$OBORO_BENCH_WORK; n=$OBORO_BENCH_N
now() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" "BEGIN { printf \"%.1f s, %.0f images/s\", b - a, n / (b - a) }"; }
run_ingest() {  # manifest procs
  local m=$1 p=$2 pids=() t0 t1
  t0=$(now)
  for ((i = 0; i < p; i++)); do "$oboro" data ingest "$work/data" --manifest "$m" --shard "$i/$p" -q >/dev/null 2>&1 & pids+=($!); done
  for pid in "${pids[@]}"; do wait "$pid"; done
  t1=$(now); echo "ingest $(rate "$n" "$t0" "$t1")"
}
run_dedup() {
  local t0 t1; t0=$(now); "$oboro" data dedup --manifest "$1" -q >/dev/null 2>&1; t1=$(now); echo "dedup $(rate "$n" "$t0" "$t1")"
}
echo "== $n images, $(nproc) cores, load $(cut -d" " -f1-3 /proc/loadavg) =="
rm -f "$work/bench.db" "$work/bench.db-wal" "$work/bench.db-shm"
echo "sqlite 1 process: $(run_ingest "$work/bench.db" 1); $(run_dedup "$work/bench.db"); size $(du -cb "$work"/bench.db* | tail -1 | cut -f1) bytes"
for p in 1 2 4; do
  psql "$OBORO_TEST_PG" -qAtX -c "DROP SCHEMA IF EXISTS b$p CASCADE; CREATE SCHEMA b$p"
  m="$OBORO_TEST_PG options=-csearch_path=b$p"
  line="postgresql $p process(es): $(run_ingest "$m" $p); $(run_dedup "$m")"
  size=$(psql "$OBORO_TEST_PG" -qAtX -c "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = '"'"'b$p'"'"' AND c.relkind = '"'"'r'"'"'")
  rows=$(psql "$OBORO_TEST_PG" -qAtX -c "SELECT count(*) FROM b$p.images")
  echo "$line; size $size bytes (tables + indexes + TOAST); $rows rows"
done
'
