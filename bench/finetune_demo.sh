#!/usr/bin/env bash
# "Show it works" (docs/finetune.md, issue 19), end to end: fetch DiceBear "thumbs" (CC0-1.0, a style the
# bundled default model never saw) with scripts/get-data, specialise models/default to it by a rank-8 LoRA
# and by a full fine-tune on the same budget (bench/finetune/{lora,full}.toml: 200 steps of batch 32),
# generate base / LoRA / full images for the same prompts and seeds, sweep the LoRA weight on old-style
# prompts, and measure style adherence with the dedup embedding (bench/finetune/adherence.py).
#
#   bench/finetune_demo.sh [OBORO]      OBORO: the oboro binary (default build/oboro)
#
# Writes data/finetune*/ and outputs/finetune*/ (git-ignored) and the grids docs/finetune/*.png.
# Training steps are skipped when their output model exists (delete outputs/finetune-* to retrain).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OBORO=${1:-build/oboro}
[ -x "$OBORO" ] || { echo "finetune_demo: $OBORO is not built: run scripts/build.sh (or pass the oboro binary)" >&2; exit 1; }
OBORO=$(realpath "$OBORO")
TIME=()
[ -x /usr/bin/time ] && TIME=(/usr/bin/time -f "%C: %U s user + %S s sys CPU, %e s wall, max RSS %M KiB")

# 1. Data: 300 thumbs (training) + three old DiceBear styles; held-out set with another seed (never trained on).
scripts/get-data data/finetune --styles thumbs,adventurer,pixel-art,lorelei --per-style 300 --no-skin-tones
scripts/get-data data/finetune-heldout --styles thumbs,adventurer,pixel-art,lorelei --per-style 50 --seed 2 --no-skin-tones

# 2. Train (the frozen T5 and the base DiT are models/default's).
for kind in lora full; do
  if [ -f "outputs/finetune-$kind/thumbs-$kind.safetensors" ]; then
    echo "finetune_demo: outputs/finetune-$kind/thumbs-$kind.safetensors exists, not retraining"
  else
    "${TIME[@]}" "$OBORO" train --config "bench/finetune/$kind.toml"
  fi
done

# 3. Images: the same prompts and seeds for base / LoRA / full; 8 prompts x 4 images (seed, seed+1, ...).
G=outputs/finetune-demo
rm -rf "$G" && mkdir -p "$G" docs/finetune
gen() {  # gen NAME PROMPTS [extra generate args]: images into $G/gen/NAME, grid docs/finetune/NAME.png
  local name=$1 prompts=$2; shift 2
  "$OBORO" generate --from-file "$prompts" --batch-size 4 --steps 20 --cfg-scale 4 --threads 1 \
    -o "$G/gen/$name" --grid "docs/finetune/$name.png" --grid-columns 4 --force "$@" >/dev/null
}
gen base bench/finetune/prompts.txt
gen lora bench/finetune/prompts.txt --lora outputs/finetune-lora/thumbs-lora.safetensors:1
gen full bench/finetune/prompts.txt --model outputs/finetune-full/thumbs-full.safetensors \
  --t5 models/default/oboro-default.t5.safetensors
# Old-style prompts with the LoRA at weight 0, 0.5, 1, 1.5 (one run: <lora:> tags, rows = weight x prompt).
gen sweep bench/finetune/sweep_prompts.txt --lora-dir outputs/finetune-lora
gen full-oldstyle bench/finetune/sweep_old_only.txt --model outputs/finetune-full/thumbs-full.safetensors \
  --t5 models/default/oboro-default.t5.safetensors
# Split the sweep run by weight (files are numbered in prompt order: 2 prompts x 4 images per weight).
for i in 0 1 2 3; do
  w=$(sed -n "$((i * 2 + 1))p" bench/finetune/sweep_prompts.txt | sed 's/.*<lora:thumbs-lora:\([0-9.]*\)>.*/\1/')
  mkdir -p "$G/gen/sweep-w$w"
  ls "$G/gen/sweep"/*.png | sort | sed -n 1,8p | xargs -I{} mv {} "$G/gen/sweep-w$w/"   # the next 8 left
done
rmdir "$G/gen/sweep"

# 4. Adherence: reference styles, 50 images each, none of them trained on by these runs.
for s in thumbs adventurer lorelei pixel-art; do
  mkdir -p "$G/ref/$s" && cp data/finetune-heldout/dicebear-$s/*.png "$G/ref/$s/"
done
mkdir -p "$G/ref/twemoji" "$G/ref/noto-emoji"
ls data/finetune-heldout/emoji-twitter/*.png | sort | awk 'NR % 37 == 1' | sed -n 1,50p | xargs -I{} cp {} "$G/ref/twemoji/"
ls data/finetune-heldout/emoji-google/*.png | sort | awk 'NR % 37 == 1' | sed -n 1,50p | xargs -I{} cp {} "$G/ref/noto-emoji/"
# A ceiling: 50 of the real training thumbs, scored like the generated sets.
mkdir -p "$G/gen/real-train-thumbs"
ls data/finetune/dicebear-thumbs/*.png | sort | sed -n 1,50p | xargs -I{} cp {} "$G/gen/real-train-thumbs/"
"$OBORO" data ingest "$G" --manifest "$G/eval.db" --license CC0-1.0 --threads 1 -q
python3 bench/finetune/adherence.py "$G/eval.db" "$(realpath "$G")" thumbs | tee "$G/adherence.txt"
ls -l outputs/finetune-lora/thumbs-lora.safetensors outputs/finetune-full/thumbs-full.safetensors docs/finetune/*.png
