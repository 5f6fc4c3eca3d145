#!/usr/bin/env bash
# Data-parallel training (issue 20, docs/distributed.md) on localhost with Open MPI, a tiny config, 1 thread per rank:
#   1. 1 rank × accumulation 4 = 2 ranks × accumulation 2 = 4 ranks × 1: final weights, optimizer state, EMA and
#      counters bitwise equal (tests/dist/compare_states.py), log.jsonl losses equal;
#   2. saved at 4 ranks, resumed at 2 then at 1: identical to the uninterrupted run (and a resume that would change
#      the global batch is refused with the fix);
#   3. a hung rank: every rank exits != 0 within the timeout, one message naming the rank and the step, no partial
#      checkpoint; a killed rank: the job exits != 0.
# Usage: dist_train.sh OBORO_BINARY WORKDIR [PYTHON]   (exit 77 = skipped: no mpirun or an oboro without MPI)
set -euo pipefail
BIN=$1; WORK=$2; PY=${3:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
command -v mpirun >/dev/null || { echo "SKIP: no mpirun (apt-get install openmpi-bin)"; exit 77; }
MPI=(mpirun --oversubscribe --allow-run-as-root --bind-to none)
export OMPI_MCA_rmaps_base_oversubscribe=1
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"
"$BIN" data shapes -o shapes -n 32 >/dev/null 2>&1
cat > base.toml <<'TOML'
train_data_dir = "shapes"
resolution = 16
pixels_stride = 2
vocab_size = 48
hidden_size = 64
num_layers = 2
head_schedule = "uniform"
t5_layers = 1
output_name = "m"
train_batch_size = 2
max_train_steps = 4
learning_rate = 5e-4
lr_warmup_steps = 2
ema_decay = 0.99
save_every_n_steps = 1
threads = 1
collective_timeout = 4
TOML
cfg() {  # cfg NAME OUTPUT_DIR ACCUMULATION
  { cat base.toml; echo "output_dir = \"$2\""; echo "gradient_accumulation_steps = $3"; } > "$1.toml"
}
fail() { echo "FAIL: $*" >&2; exit 1; }
same() { "$PY" "$HERE/compare_states.py" "$1" "$2" || fail "$1 and $2 differ"; }
losses() { "$PY" -c 'import json,sys; print([json.loads(l)["loss"] for l in open(sys.argv[1])])' "$1"; }

# 1. world size does not change the arithmetic
cfg r1 r1 4; cfg r2 r2 2; cfg r4 r4 1
"$BIN" train --config r1.toml > r1.log 2>&1 || { tail -5 r1.log; fail "1 rank run"; }
grep -q "data parallel" r1.log && fail "a single process must not report data parallel ranks"
"${MPI[@]}" -np 2 "$BIN" train --config r2.toml > r2.log 2>&1 || { tail -20 r2.log; fail "2 rank run"; }
"${MPI[@]}" -np 4 "$BIN" train --config r4.toml > r4.log 2>&1 || { tail -20 r4.log; fail "4 rank run"; }
grep -q "data parallel: 4 ranks (mpi)" r4.log || fail "the 4-rank run did not run 4 MPI ranks"
for s in 1 2 3 4; do
  f=state/step-0000000$s.safetensors
  same r1/$f r2/$f; same r1/$f r4/$f
done
[ "$(losses r1/log.jsonl)" = "$(losses r2/log.jsonl)" ] || fail "logged losses differ (1 vs 2 ranks)"
[ "$(losses r1/log.jsonl)" = "$(losses r4/log.jsonl)" ] || fail "logged losses differ (1 vs 4 ranks)"
[ "$(wc -l < r4/log.jsonl)" = 4 ] || fail "rank 0 alone must write log.jsonl (4 lines), got $(wc -l < r4/log.jsonl)"
echo "ok: 1x4 = 2x2 = 4x1 bitwise (weights, AdamW moments, EMA, counters) and losses equal"
# the same with BF16 GEMMs (mixed_precision = "bf16"): the rounding is inside each micro-batch's GEMMs
cfg b1 b1 2; cfg b2 b2 1
echo 'mixed_precision = "bf16"' | tee -a b1.toml >> b2.toml
sed -i 's/max_train_steps = 4/max_train_steps = 2/' b1.toml b2.toml
"$BIN" train --config b1.toml > b1.log 2>&1 || { tail -5 b1.log; fail "bf16 1 rank run"; }
"${MPI[@]}" -np 2 "$BIN" train --config b2.toml > b2.log 2>&1 || { tail -20 b2.log; fail "bf16 2 rank run"; }
same b1/state/step-00000002.safetensors b2/state/step-00000002.safetensors
echo "ok: bf16: 1x2 = 2x1 bitwise"

# 2. save at 4 ranks, resume at 2, then at 1
cfg w4 w 1; cfg w2 w 2; cfg w1 w 4
"${MPI[@]}" -np 4 "$BIN" train --config w4.toml --stop-after 2 > w4.log 2>&1 || { tail -20 w4.log; fail "w4"; }
if "${MPI[@]}" -np 2 "$BIN" train --config w4.toml --resume latest > bad.log 2>&1; then fail "a changed global batch was accepted"; fi
grep -q "set gradient_accumulation_steps = 2" bad.log || { cat bad.log; fail "no fix named for the global batch"; }
"${MPI[@]}" -np 2 "$BIN" train --config w2.toml --resume latest --stop-after 1 > w2.log 2>&1 || { tail -20 w2.log; fail "w2"; }
"$BIN" train --config w1.toml --resume latest > w1.log 2>&1 || { tail -5 w1.log; fail "w1"; }
for s in 2 3 4; do same r1/state/step-0000000$s.safetensors w/state/step-0000000$s.safetensors; done
[ "$(losses r1/log.jsonl)" = "$(losses w/log.jsonl)" ] || fail "losses of the resumed run differ"
echo "ok: saved at 4 ranks, resumed at 2 and 1: identical to the uninterrupted run"

# 3. faults: a hung rank is named within the timeout; a killed rank stops the job
cfg h h 1
t0=$(date +%s)
set +e
OBORO_TEST_FAULT=hang:2:2 timeout 60 "${MPI[@]}" -np 4 "$BIN" train --config h.toml > hang.log 2>&1
rc=$?
set -e
dt=$(( $(date +%s) - t0 ))
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "a hung rank: exit $rc (124 = not detected)"
[ $dt -le 30 ] || fail "a hung rank took ${dt}s to detect (timeout 4 s)"
[ "$(grep -c 'did not reach' hang.log)" = 1 ] || { cat hang.log; fail "expected one message naming the hung rank"; }
grep -q "rank 2 did not reach the gradient sum of step 3" hang.log || { cat hang.log; fail "message does not name rank 2, step 3"; }
ls h/state | grep -v '^step-0000000[12]\.safetensors$' && fail "a partial or extra checkpoint was left"
set +e
OBORO_TEST_FAULT=kill:1:3 timeout 60 "${MPI[@]}" -np 4 "$BIN" train --config h.toml --resume latest > kill.log 2>&1
rc=$?
set -e
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "a killed rank: exit $rc"
grep -q "rank 1 .*signal 9" kill.log || { cat kill.log; fail "mpirun did not report the killed rank"; }
echo "ok: hung rank named in ${dt}s, killed rank stops the job (exit $rc)"

# 4. the supervisor: a rank killed mid-run (once: the marker file), the run restarted from the last checkpoint;
#    the final weights equal the uninterrupted run's; then a hang (no log.jsonl growth) is stopped and restarted
cfg k k 1
OBORO_TEST_FAULT=kill:1:2:$PWD/kill.marker "$BIN" supervise --backoff 0 --hang-timeout 60 -- \
  "${MPI[@]}" -np 4 "$BIN" train --config k.toml > sup.log 2>&1 || { tail -30 sup.log; fail "supervised run"; }
[ -f kill.marker ] || fail "the kill fault did not fire"
grep -q '"event":"restart"' k/supervise.jsonl || { cat k/supervise.jsonl; fail "no restart logged"; }
grep -q -- "--resume latest" k/supervise.jsonl || fail "the restart did not resume from the latest checkpoint"
same r1/state/step-00000004.safetensors k/state/step-00000004.safetensors
cfg g g 4
sed -i 's/collective_timeout = 4/collective_timeout = 600/' g.toml
OBORO_TEST_FAULT=hang:0:2:$PWD/hang.marker "$BIN" supervise --backoff 0 --hang-timeout 3 -- \
  "$BIN" train --config g.toml > suph.log 2>&1 || { tail -30 suph.log; fail "supervised hang"; }
grep -q '"detail":"hang: ' g/supervise.jsonl || { cat g/supervise.jsonl; fail "the hang was not detected"; }
same r1/state/step-00000004.safetensors g/state/step-00000004.safetensors
# oboro train --supervise (one process; the supervisor's default 10 s back-off)
cfg t t 4
OBORO_TEST_FAULT=kill:0:3:$PWD/kill1.marker "$BIN" train --config t.toml --supervise > supt.log 2>&1 || \
  { tail -30 supt.log; fail "train --supervise"; }
[ -f kill1.marker ] && grep -q '"event":"restart"' t/supervise.jsonl || { cat supt.log; fail "train --supervise: no restart"; }
same r1/state/step-00000004.safetensors t/state/step-00000004.safetensors
# killed before its first checkpoint: the restart starts the run again (--overwrite of its own files), never
# refused as "an earlier run"; a folder that held another run before supervision is never overwritten
cfg e e 4
sed -i 's/save_every_n_steps = 1/save_every_n_steps = 0/' e.toml
OBORO_TEST_FAULT=kill:0:2:$PWD/kill2.marker "$BIN" supervise --backoff 0 --hang-timeout 60 -- \
  "$BIN" train --config e.toml > supe.log 2>&1 || { tail -30 supe.log; fail "supervised run killed before its first checkpoint"; }
[ -f kill2.marker ] && grep -q -- '--overwrite' e/supervise.jsonl || { cat e/supervise.jsonl; fail "no --overwrite restart"; }
same r1/state/step-00000004.safetensors e/state/step-00000004.safetensors
"$BIN" supervise --backoff 0 --max-restarts 1 --hang-timeout 60 -- "$BIN" train --config e.toml > supo.log 2>&1 && \
  fail "a supervised new run into a finished run's folder succeeded"
grep -q "holds an earlier run" supo.log || { cat supo.log; fail "no clear refusal of a new run into an earlier run's folder"; }
same r1/state/step-00000004.safetensors e/state/step-00000004.safetensors
echo "ok: supervisor restarted after a killed rank and after a hang (and train --supervise after a kill); final weights equal the uninterrupted run's"
echo "PASS"
