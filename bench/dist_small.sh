#!/usr/bin/env bash
# Data-parallel throughput of the `small` preset (docs/distributed.md, "Cost"): a fixed global batch of 8
# (4 micro-batches of 2), 3 steps, at 1 rank × 2 threads, 2 ranks × 1 thread, 4 ranks × 1 thread.
# Usage: bench/dist_small.sh [OBORO_BINARY] [WORKDIR]   (wrap in `flock /work/bench.lock` on a shared machine)
set -e
BIN=$(realpath "${1:-build/oboro}")
mkdir -p "${2:-/tmp/oboro_dist_bench}"; cd "${2:-/tmp/oboro_dist_bench}"
[ -d shapes ] || "$BIN" data shapes -o shapes -n 64 --size 128 >/dev/null
MPI="mpirun --oversubscribe --allow-run-as-root --bind-to none"
mk() {  # name accumulation threads
cat > $1.toml <<T
train_data_dir = "shapes"
model_preset = "small"
resolution = 128
pixels_stride = 2
vocab_size = 64
output_dir = "$1"
output_name = "m"
train_batch_size = 2
gradient_accumulation_steps = $2
max_train_steps = 3
learning_rate = 1e-4
threads = $3

T
}
mk r1 4 2; mk r2 2 1; mk r4 1 1
uptime
rm -rf r1 r2 r4
/usr/bin/time -f "r1 wall %e s" $BIN train --config r1.toml > r1.log 2>&1
/usr/bin/time -f "r2 wall %e s" $MPI -np 2 $BIN train --config r2.toml > r2.log 2>&1
/usr/bin/time -f "r4 wall %e s" $MPI -np 4 $BIN train --config r4.toml > r4.log 2>&1
uptime
for r in r1 r2 r4; do echo "== $r"; python3 -c "
import json,sys
l=[json.loads(x) for x in open('$r/log.jsonl')]
print('samples/s per step', [round(x['samples_per_s'],3) for x in l])
s=[x['samples_per_s'] for x in l[1:]]; print('mean of steps 2-3', round(sum(s)/len(s),3))"; grep "data parallel\|wall" $r.log || true; done
