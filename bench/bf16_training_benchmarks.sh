#!/bin/sh
# BF16 mixed-precision training (mixed_precision = "bf16") against F32 and the PyTorch twin, plus the inference
# step after the fused norm ops; one after another on a quiet machine, each result as JSON in OUT with the load
# average before it. Usage: bench/bf16_training_benchmarks.sh [OBORO] [OUT]
set -u
OBORO=${1:-build/oboro}
OUT=${2:-bench-results-bf16-train}
PY=/usr/bin/python3
HERE=$(dirname "$0")
mkdir -p "$OUT"
. "$HERE/run_lib.sh"
SHAPES="--config tiny --schedule mmh --text-dim 64 --latent-channels 12 --latent-stride 2 --height 32 --width 32 --batch 32 --text-len 16 --threads 1 --repeats 5"
run gemm_peak_torch $PY "$HERE/torch_gemm_peak.py" --n 2048 --threads 2 --repeats 5
run train_tiny_f32 "$OBORO" bench train $SHAPES --json --profile
run train_tiny_bf16 "$OBORO" bench train $SHAPES --mixed-precision bf16 --twin --json --profile
run train_small_bf16 "$OBORO" bench train --config small --mixed-precision bf16 --twin --json --repeats 3 --profile
run step_bf16 "$OBORO" bench step --config oboro-1b --size 416x736 --type bf16 --compare-torch --json --profile --repeats 2
