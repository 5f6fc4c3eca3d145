#!/usr/bin/env bash
# The device seam end to end: the same short train (stopped and resumed), export, txt2img, img2img, refine pass,
# default-model generation, data cache and benchmarks run under `--backend cpu` and `--backend checked`; every
# output file must be byte-identical, and the checked runs must finish (the checked backend exits non-zero, naming
# the op and argument or the buffer, on any crossing that is not an upload or a download).
# Usage: checked_matches_cpu.sh OBORO_BINARY WORKDIR
set -euo pipefail
BIN=$1; WORK=$2
rm -rf "$WORK"; mkdir -p "$WORK"
run_all() {  # $1 = backend; everything lands in $WORK/$1
  local be=$1 d="$WORK/$1"
  mkdir -p "$d"; cd "$d"
  "$BIN" data shapes -o shapes -n 48 >/dev/null 2>&1
  printf 'a large red circle\na small blue square --n a circle --s 4 --l 3 --d 5\n' > prompts.txt
  cat > run.toml <<'TOML'
train_data_dir = "shapes"
resolution = 32
pixels_stride = 2
vocab_size = 64
output_dir = "out"
output_name = "shapes"
train_batch_size = 4
gradient_accumulation_steps = 2
max_train_steps = 6
learning_rate = 5e-4
lr_warmup_steps = 2
ema_decay = 0.99
max_grad_norm = 0.05
save_every_n_steps = 3
sample_prompts = "prompts.txt"
sample_every_n_steps = 3
sample_steps = 4
threads = 2
TOML
  "$BIN" train --config run.toml --stop-after 4 --backend "$be" >train1.log 2>&1
  "$BIN" train --config run.toml --resume latest --backend "$be" >train2.log 2>&1
  "$BIN" convert --from-state out/state/step-00000006.safetensors --weights raw -o exported/raw.safetensors --backend "$be" >convert.log 2>&1
  "$BIN" generate "a large red circle" --model out/shapes.safetensors --size 32x32 --cfg-scale 4 --steps 6 --seed 5 \
      --threads 2 -o txt2img --backend "$be" >txt2img.log 2>&1
  "$BIN" generate "a small blue square" --model out/shapes.safetensors --size 32x32 --steps 5 --seed 7 --threads 2 \
      --init-img txt2img/00000-5.png --strength 0.6 -o img2img --backend "$be" >img2img.log 2>&1
  "$BIN" generate "a red circle" --model out/shapes.safetensors --size 32x32 --steps 4 --seed 3 --threads 2 \
      --hr-scale 2 --hr-strength 0.5 -o refine --backend "$be" >refine.log 2>&1
  "$BIN" generate "pixel art style, short hair, smile" --seed 9 --threads 2 -o default --backend "$be" >default.log 2>&1
  "$BIN" data ingest shapes --manifest m.db --license CC0-1.0 >/dev/null 2>&1
  "$BIN" data bucket --manifest m.db --stage 1 --upscale >/dev/null 2>&1
  "$BIN" data cache --manifest m.db --out cache --stage 1 --text-encoder out/shapes.t5.safetensors -q --threads 2 \
      --backend "$be" >cache.log 2>&1
  "$BIN" bench train --config tiny --repeats 1 --warmup 0 --backend "$be" >bench_train.log 2>&1
  "$BIN" bench dit --config tiny --repeats 1 --warmup 0 --backend "$be" >bench_dit.log 2>&1
  cut -d, -f1-5 out/log.jsonl > out/log.trimmed  # log.jsonl without its timing fields
  find out exported txt2img img2img refine default cache -type f ! -name log.jsonl ! -name '*.svg' | sort | xargs sha256sum
}
for be in cpu checked; do
  set +e
  (set -e; run_all "$be") > "$WORK/$be.sha256"
  rc=$?
  set -e
  if [ $rc -ne 0 ]; then
    echo "FAIL: a step failed under --backend $be; its log:" >&2
    for f in "$WORK/$be"/*.log; do echo "--- $f" >&2; tail -5 "$f" >&2; done
    exit 1
  fi
done
n=$(wc -l < "$WORK/cpu.sha256")
[ "$n" -ge 18 ] || { echo "FAIL: only $n output files" >&2; exit 1; }
if ! diff "$WORK/cpu.sha256" "$WORK/checked.sha256"; then
  echo "FAIL: outputs under --backend checked differ from --backend cpu" >&2
  exit 1
fi
echo "PASS: $n output files byte-identical under --backend cpu and --backend checked"
