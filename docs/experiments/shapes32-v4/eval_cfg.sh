#!/bin/bash
# usage: eval_cfg.sh NAME MODEL_FILE CFG STEPS -> gen_NAME/{seen,heldout}/*.png and eval JSON
set -e
name=$1; model=$2; cfg=${3:-4}; steps=${4:-20}
rm -rf gen_$name; mkdir -p gen_$name/seen gen_$name/heldout
for split in seen heldout; do
  i=0
  while IFS= read -r p; do
    ${OBORO:-/work/main/build/oboro} generate "$p" --model "$model" --steps $steps --cfg-scale $cfg --seed $((1000 + i*10)) \
      --batch-size 2 -o gen_$name/$split --threads ${THREADS:-1} >/dev/null 2>&1
    i=$((i+1))
  done < shapes32/prompts_$split.txt
done
${OBORO:-/work/main/build/oboro} eval shapes --images gen_$name --manifest shapes32/manifest.json
${OBORO:-/work/main/build/oboro} eval shapes --images gen_$name --manifest shapes32/manifest.json --json --per-image > eval_$name.json
