#!/bin/sh
# The issue-6 benchmark set, run one after another (never in parallel: the machine has 2 cores), each
# result as JSON in OUT with the load average before it. Usage: bench/issue6_benchmarks.sh [OBORO] [OUT]
set -u
OBORO=${1:-build/oboro}
OUT=${2:-bench-results}
PY=/usr/bin/python3
HERE=$(dirname "$0")
mkdir -p "$OUT"
. "$HERE/run_lib.sh"
lscpu > "$OUT/lscpu.txt"
run gemm_peak_torch $PY "$HERE/torch_gemm_peak.py" --n 2048 --threads 2 --repeats 5
run step "$OBORO" bench step --config oboro-1b --size 416x736 --compare-torch --json --profile --repeats 2
run t5 "$OBORO" bench t5 --config xxl --tokens 77 --layers 2 --repeats 3 --compare-torch --json --profile
run vae "$OBORO" bench vae --height 416 --width 736 --repeats 2 --compare-torch --json
run train "$OBORO" bench train --config small --twin --json --repeats 3
run attention "$OBORO" bench attention --tokens 256,1024,4096 --heads 24 --head-dim 64 --batch 1 --backward --compare-torch --json
