#!/usr/bin/env bash
# Coverage-guided fuzzing of oboro's parsers (docs/reliability.md, "Fuzzing"):
#   scripts/fuzz.sh [SECONDS] [HARNESS...]
# Builds the libFuzzer harnesses with clang (fuzz/CMakeLists.txt → build-fuzz/, ASan + UBSan), makes the
# seed corpus from real files oboro writes (fuzz/make_corpus.sh, using build/oboro), then runs each
# harness (all of them, or those named: fuzz_image or image) for SECONDS (default 20), one at a time, one
# worker each. The corpus found so far is kept in build-fuzz/corpus/<harness>/ and grows run after run.
# Prints execs, exec/s, edge coverage (cov:) and features (ft:) per harness. Exits non-zero on any crash,
# leak, timeout or out-of-memory, leaving the reproducer in build-fuzz/artifacts/<harness>/ (rerun one
# with: build-fuzz/<harness> build-fuzz/artifacts/<harness>/crash-...).
# Environment: JOBS (build parallelism, default 2), OBORO_FUZZ_FLAGS (extra libFuzzer flags), OBORO_FUZZ_TMP
# (scratch folder; default a fresh one in /dev/shm, removed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER=${1:-20}
shift || true
JOBS=${JOBS:-2}
B=build-fuzz
command -v clang++ >/dev/null || { echo "fuzz: clang++ not found: run scripts/setup.sh (clang, libclang-rt-14-dev)" >&2; exit 1; }

t0=$(date +%s)
echo "== fuzz: building harnesses (clang, ASan + UBSan + libFuzzer) in $B/"
mkdir -p "$B"
cmake -S fuzz -B "$B" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$B" -j"$JOBS" >"$B/build.log" 2>&1 || { tail -40 "$B/build.log"; echo "fuzz: build failed ($B/build.log)" >&2; exit 1; }
if [ ! -x build/oboro ] || [ -n "$(find src -newer build/oboro -name '*.cpp' -print -quit)" ]; then
  echo "== fuzz: building build/oboro (for the seed corpus)"
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j"$JOBS" --target oboro >/dev/null
fi
t1=$(date +%s)
echo "== fuzz: making the seed corpus from files oboro writes"
fuzz/make_corpus.sh build/oboro "$B/seed_images" "$B"
t2=$(date +%s)

mapfile -t ALL < "$B/harnesses.txt"
HARNESSES=()
if [ $# -gt 0 ]; then
  for want in "$@"; do
    want=fuzz_${want#fuzz_}
    [[ " ${ALL[*]} " == *" $want "* ]] || { echo "fuzz: no harness $want (have: ${ALL[*]})" >&2; exit 2; }
    HARNESSES+=("$want")
  done
else
  for h in "${ALL[@]}"; do [ -n "$h" ] && HARNESSES+=("$h"); done
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OBORO_FUZZ_SPM=$PWD/$B/tokenizer.model
export OBORO_THREADS=1
# Per-harness scratch folders (each harness makes its own mkdtemp folder under TMPDIR and removes it): tmpfs
# when there is one, so SQLite's fsyncs in fuzz_ingest_jsonl cost nothing; removed after each harness.
if [ -z "${OBORO_FUZZ_TMP:-}" ]; then
  if [ -d /dev/shm ] && [ -w /dev/shm ]; then OBORO_FUZZ_TMP=/dev/shm/oboro-fuzz-$(id -u)-$$; else OBORO_FUZZ_TMP=$PWD/$B/tmp; fi
fi
trap 'rm -rf "$OBORO_FUZZ_TMP"' EXIT
failed=()
printf '\n%-26s %6s %10s %8s %7s %7s %7s %6s  %s\n' harness s execs exec/s cov ft corpus new result
for h in "${HARNESSES[@]}"; do
  name=${h#fuzz_}
  dict=fuzz/dict/$name.dict
  case $name in safetensors*) dict=fuzz/dict/safetensors.dict ;; esac
  corpus=$B/corpus/$h
  art=$B/artifacts/$h
  tmp=$OBORO_FUZZ_TMP/$h
  log=$B/logs/$h.log
  mkdir -p "$corpus" "$art" "$tmp" "$B/logs"
  args=(-max_total_time="$SECONDS_PER" -timeout=10 -rss_limit_mb=2048 -close_fd_mask=3 -print_final_stats=1
        -artifact_prefix="$art/")
  [ -f "$dict" ] && args+=(-dict="$dict")
  # shellcheck disable=SC2086
  set +e
  dirs=("$corpus" "$B/seeds/$h")
  [ -d "fuzz/regressions/$h" ] && dirs+=("fuzz/regressions/$h")  # past findings, replayed first
  TMPDIR=$tmp "$B/$h" "${args[@]}" ${OBORO_FUZZ_FLAGS:-} "${dirs[@]}" >"$log" 2>&1
  rc=$?
  set -e
  rm -rf "$tmp"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  newu=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  nc=$(find "$corpus" -type f | wc -l)
  if [ $rc = 0 ]; then result=ok; else result="FAILED (rc $rc)"; failed+=("$h"); fi
  printf '%-26s %6s %10s %8s %7s %7s %7s %6s  %s\n' "$h" "$SECONDS_PER" "${execs:--}" "${rate:--}" "${cov:--}" \
    "${ft:--}" "$nc" "${newu:--}" "$result"
  if [ $rc != 0 ]; then
    grep -E "ERROR: |SUMMARY: |runtime error|deadly signal|Test unit written|oboro fuzz:|terminate called|what\(\)" "$log" | head -12 | sed 's/^/    /'
    echo "    log: $log; reproducer(s): $(ls "$art" | tr '\n' ' ')"
  fi
done
t3=$(date +%s)
echo "fuzz: build $((t1 - t0)) s, seeds $((t2 - t1)) s, fuzzing $((t3 - t2)) s; corpus in $B/corpus/, logs in $B/logs/"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (reproducers in $B/artifacts/<harness>/)" >&2
  exit 1
fi
echo "fuzz: all ${#HARNESSES[@]} harnesses ran ${SECONDS_PER} s each with no crash, leak or timeout"
