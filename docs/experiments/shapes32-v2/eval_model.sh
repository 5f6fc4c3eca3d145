#!/bin/bash
# usage: eval_model.sh NAME MODEL_FILE  -> gen_NAME/{seen,heldout}/*.png and eval JSON
set -e
name=$1; model=$2
rm -rf gen_$name; mkdir -p gen_$name/seen gen_$name/heldout
for split in seen heldout; do
  i=0
  while IFS= read -r p; do
    ${OBORO:-oboro} generate "$p" --model "$model" --steps 20 --cfg-scale 4 --seed $((1000 + i*10)) \
      --batch-size 2 -o gen_$name/$split --threads 1 >/dev/null 2>&1
    i=$((i+1))
  done < shapes32/prompts_$split.txt
done
${OBORO:-oboro} eval shapes --images gen_$name --manifest shapes32/manifest.json
${OBORO:-oboro} eval shapes --images gen_$name --manifest shapes32/manifest.json --json > eval_$name.json
