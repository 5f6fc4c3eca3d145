#!/usr/bin/env bash
# Seed corpora for the fuzz harnesses, made from real files the project writes:
#   fuzz/make_corpus.sh OBORO_BINARY SEED_TOOL OUT_DIR
# OBORO_BINARY: a built `oboro` (build/oboro); SEED_TOOL: build-fuzz/seed_images; OUT_DIR gets
# seeds/<harness>/ (read-only seeds, regenerated each time), work/ (the files they came from) and
# tokenizer.model (the SentencePiece vocabulary fuzz_tokenizer loads through $OBORO_FUZZ_SPM).
set -euo pipefail
OBORO=$(realpath "$1")
SEED_TOOL=$(realpath "$2")
OUT=$3
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PY=/usr/bin/python3
W=$OUT/work
S=$OUT/seeds
rm -rf "$W" "$S"
mkdir -p "$W" "$S"
for h in safetensors safetensors_sharded image png_text infotext train_toml dataset_toml manifest_jsonl \
         ingest_jsonl tokenizer serve_request lora; do
  mkdir -p "$S/fuzz_$h"
done
export OBORO_THREADS=1
run() { "$OBORO" "$@" >>"$W/oboro.log" 2>&1 || { echo "make_corpus: oboro $* failed:" >&2; tail -5 "$W/oboro.log" >&2; exit 1; }; }

# ---- safetensors: a tiny DiT (spec init and all-random), its low-precision conversions, the default
# model's text encoder (with the embedded tokenizer); small slices of each keep real headers and bytes.
run init --preset tiny --text-dim 32 --latent-channels 4 --seed 1 -o "$W/tiny.safetensors"
run init --preset tiny --schedule uniform --text-dim 16 --latent-channels 4 --patch 1 --random-all --seed 2 \
    -o "$W/tiny-uniform.safetensors"
for t in q8_0 f8 bf16 f16; do run convert --type "$t" "$W/tiny.safetensors" "$W/tiny.$t.safetensors"; done
for f in "$W"/tiny*.safetensors; do
  b=$(basename "$f" .safetensors)
  $PY "$HERE/slice_safetensors.py" slice "$f" "$S/fuzz_safetensors/$b.safetensors" --max-bytes 8192
  $PY "$HERE/slice_safetensors.py" slice "$f" "$S/fuzz_safetensors/$b.small.safetensors" --max-bytes 1024 --max-tensors 3
  $PY "$HERE/slice_safetensors.py" shards "$f" "$S/fuzz_safetensors_sharded/$b.shards" --max-bytes 2048
done
# One quantised Linear weight with its companion (the smallest is 192x192: 36 KB as q8_0/f8, 72 KB as bf16/f16).
for t in q8_0 f8 bf16 f16; do
  $PY "$HERE/slice_safetensors.py" slice "$W/tiny.$t.safetensors" "$S/fuzz_safetensors/tiny.$t.weight.safetensors" \
      --max-bytes 80000 --max-tensors 1
done
T5="$ROOT/models/default/oboro-default.t5.safetensors"
if [ -f "$T5" ]; then
  $PY "$HERE/slice_safetensors.py" slice "$T5" "$S/fuzz_safetensors/default-t5.safetensors" --max-bytes 2048 \
      --drop-metadata oboro.tokenizer
  $PY "$HERE/slice_safetensors.py" shards "$T5" "$S/fuzz_safetensors_sharded/default-t5.shards" --max-bytes 2048 \
      --drop-metadata oboro.tokenizer
fi
# An empty-but-valid file and one with only metadata.
printf '\x08\x00\x00\x00\x00\x00\x00\x00{}      ' >"$S/fuzz_safetensors/empty.safetensors"

# ---- images: PNGs with A1111 infotext from `oboro generate` (the bundled default model), a PNG grid,
# JPEGs from `oboro data synth`, PNGs from `oboro data shapes`; WebP and the other encodings from
# seed_images.
run generate "a red circle, pixel art, smile" --size 32x32 --steps 2 --seed 3 -o "$W/gen1"
run generate "blue square: large, \"quoted\", two lines" --negative-prompt "blurry, low quality" --size 16x24 \
    --steps 2 --cfg-scale 6.5 --seed 4 -o "$W/gen2"
printf 'green triangle --n red --w 16 --h 16 --d 5 --s 2 --l 3.5\nyellow star --w 24 --h 16 --s 2\n' >"$W/prompts.txt"
run generate --from-file "$W/prompts.txt" --steps 2 -o "$W/gen3" --grid "$W/grid.png"
for f in "$W"/gen*/*.png "$W/grid.png"; do
  cp "$f" "$S/fuzz_image/$(basename "$(dirname "$f")")-$(basename "$f")"
  cp "$f" "$S/fuzz_png_text/$(basename "$(dirname "$f")")-$(basename "$f")"
done
run generate "no metadata" --size 16x16 --steps 1 --seed 5 --no-metadata -o "$W/gen4"
cp "$W"/gen4/*.png "$S/fuzz_png_text/no-metadata.png"
first_png=$(ls "$W"/gen1/*.png | head -1)
"$SEED_TOOL" "$first_png" "$S/fuzz_image/gen1"
run data synth -o "$W/synth" -n 24 --size 24 --dup-fraction 0.5 --seed 6
find "$W/synth" -name '*.jpg' | sort | head -4 | while read -r f; do cp "$f" "$S/fuzz_image/synth-$(basename "$f")"; done
run data shapes -o "$W/shapes" -n 24 --size 16 --seed 7
find "$W/shapes" -name '*.png' | sort | head -2 | while read -r f; do cp "$f" "$S/fuzz_image/shapes-$(basename "$f")"; done

# ---- infotext: the parameters chunks of the generated PNGs, as text (python reads the tEXt/iTXt chunks),
# and kohya prompt lines.
$PY - "$S/fuzz_infotext" "$W"/gen1/*.png "$W"/gen2/*.png "$W"/gen3/*.png <<'EOF'
import struct, sys, zlib
out = sys.argv[1]
for i, path in enumerate(sys.argv[2:]):
    b = open(path, "rb").read()
    pos = 8
    while pos + 8 <= len(b):
        n, t = struct.unpack(">I4s", b[pos:pos + 8])
        d = b[pos + 8:pos + 8 + n]
        pos += 12 + n
        if t == b"tEXt" and d.startswith(b"parameters\0"):
            open(f"{out}/infotext-{i}.txt", "wb").write(d[11:])
        elif t == b"iTXt" and d.startswith(b"parameters\0"):
            rest = d[11:]
            comp, rest = rest[0], rest[2:]
            rest = rest.split(b"\0", 2)[2]
            open(f"{out}/infotext-{i}.txt", "wb").write(zlib.decompress(rest) if comp else rest)
EOF
cp "$W/prompts.txt" "$S/fuzz_infotext/prompt-lines.txt"
cp "$ROOT/models/default/gallery_prompts.txt" "$S/fuzz_infotext/gallery-prompts.txt"

# ---- training TOML: the default model's two stage configs, the README's example, and every key.
cp "$ROOT/models/default/train-stage1.toml" "$ROOT/models/default/train-stage2.toml" "$S/fuzz_train_toml/"
cat >"$S/fuzz_train_toml/readme.toml" <<'EOF'
train_data_dir = "shapes"
resolution = 32
pixels_stride = 2
vocab_size = 64
output_dir = "out"
output_name = "shapes"
train_batch_size = 32
max_train_steps = 300
learning_rate = 5e-4
lr_warmup_steps = 50
ema_decay = 0.99
EOF
cat >"$S/fuzz_train_toml/all-keys.toml" <<'EOF'
[model]
pretrained_model = "base.safetensors"
model_preset = "small"
head_schedule = "uniform"
hidden_size = 256
num_layers = 3
ffn_hidden_size = 512
codec = "flux-vae"
vae = "ae.safetensors"
pixels_stride = 1
patch_size = 2
[text_encoder]
text_encoder = "t5"
train_text_encoder = false
vocab_size = 256
t5_d_model = 64
t5_layers = 2
t5_heads = 4
t5_d_kv = 16
t5_d_ff = 128
max_token_length = 64
[data]
train_data_dir = "data"
dataset_config = "dataset.toml"
manifest = "m.db"
cache_dir = "cache"
cache_stage = 2
resolution = "48,32"
license_allow = ["CC0-1.0", "CC-BY-4.0"]
require_license = true
[train]
output_dir = "out"
output_name = "run"
train_batch_size = 4
gradient_accumulation_steps = 2
max_train_steps = 10
learning_rate = 1e-4
lr_scheduler = "cosine"
lr_warmup_steps = 0.1
min_lr_ratio = 0.05
optimizer_type = "AdamW"
adam_beta1 = 0.9
adam_beta2 = 0.99
adam_epsilon = 1e-8
weight_decay = 0.0
max_grad_norm = 0
ema_decay = 0.999
seed = 1234
caption_dropout_rate = 0.05
timestep_sampling = "logit_normal"
mixed_precision = "bf16"
save_every_n_steps = 5
save_last_n_steps = 5
sample_prompts = "prompts.txt"
sample_every_n_steps = 5
sample_steps = 4
sample_cfg = 3.5
threads = 1
EOF

# ---- kohya dataset TOML (the harness's folder has img/ with two PNGs, a .txt and a .caption sidecar).
cat >"$S/fuzz_dataset_toml/basic.toml" <<'EOF'
[[datasets]]
[[datasets.subsets]]
image_dir = "img"
EOF
cat >"$S/fuzz_dataset_toml/all-keys.toml" <<'EOF'
[general]
shuffle_caption = true
caption_extension = ".txt"
keep_tokens = 1
flip_aug = true
resolution = 512
batch_size = 4
enable_bucket = true
min_bucket_reso = 256
max_bucket_reso = 1024
bucket_reso_steps = 64
bucket_no_upscale = true

[[datasets]]
resolution = [512, 512]
caption_dropout_rate = 0.25

  [[datasets.subsets]]
  image_dir = "img"
  num_repeats = 3
  class_tokens = "sks shape"

  [[datasets.subsets]]
  image_dir = "./img/"
  caption_extension = "caption"
  keep_tokens = 0
  shuffle_caption = false
  flip_aug = false

[[datasets]]
  [[datasets.subsets]]
  image_dir = "img"
  unknown_key = 1
EOF

# ---- manifest.jsonl: what `oboro data synth` writes, what `oboro data export` writes after an ingest,
# and lines for the harness's own images (a.png = fuzz_util.h kTinyPng; sub/b.png empty).
cp "$W/synth/manifest.jsonl" "$S/fuzz_manifest_jsonl/synth.jsonl"
head -3 "$W/synth/manifest.jsonl" >"$S/fuzz_ingest_jsonl/synth-head.jsonl"
run data ingest "$W/synth" --manifest "$W/m.db" --license CC0-1.0
run data export --manifest "$W/m.db" -o "$W/export"
head -5 "$W/export/manifest.jsonl" >"$S/fuzz_manifest_jsonl/export.jsonl"
head -3 "$W/export/manifest.jsonl" >"$S/fuzz_ingest_jsonl/export-head.jsonl"
printf '\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x02\x00\x00\x00\x02\x08\x02\x00\x00\x00\xfd\xd4\x9a\x73\x00\x00\x00\x12IDAT\x78\xda\x63\x38\x21\x27\x27\x77\x42\x8e\x01\x42\x01\x00\x1d\xd2\x04\x11\x25\x4e\xcf\xa7\x00\x00\x00\x00IEND\xae\x42\x60\x82' >"$W/tiny.png"
A=$(sha256sum "$W/tiny.png" | cut -c1-64)
B=$(sha256sum </dev/null | cut -c1-64)
cat >"$S/fuzz_manifest_jsonl/own.jsonl" <<EOF
{"file": "a.png", "sha256": "$A", "source": "npm:emoji-datasource-twitter@16.0.0", "original": "img/twitter/64/1f600.png", "license": "CC-BY-4.0", "attribution": "Twemoji (c) Twitter, CC-BY 4.0", "captions": ["grinning face", "smile"]}
{"file": "sub/b.png", "sha256": "$B", "source": "dicebear", "original": {"style": "pixel-art", "seed": "x"}, "license": "CC0-1.0", "attribution": "", "captions": []}
EOF
cat >"$S/fuzz_manifest_jsonl/dataset-summary.jsonl" <<'EOF'
{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","images":2,"licenses":{"CC-BY-4.0":1,"CC0-1.0":1},"sources":{"dicebear":1,"npm:emoji-datasource-twitter@16.0.0":1},"attribution":["Twemoji (c) Twitter, CC-BY 4.0"]}
EOF
cat >"$S/fuzz_ingest_jsonl/own.jsonl" <<EOF
{"file": "a.png", "sha256": "$A", "source": "npm:x@1", "original": {"style": "pixel-art"}, "license": "CC-BY-4.0 OR MIT", "attribution": "someone", "captions": ["a caption", " ", "red circle"]}
EOF
printf '%s\n' '{"file": "a.png", "license": "GPL-3.0-only"}' >"$S/fuzz_ingest_jsonl/license-only.jsonl"

# ---- server request bodies: the A1111 txt2img/img2img and OpenAI bodies the tests and the web UI send, one with a
# base64 PNG init image (the tiny PNG above) and one with a data: URL prefix.
SR=$S/fuzz_serve_request
B64=$(base64 -w0 "$W/tiny.png")
printf '%s' '{"prompt":"a red circle, pixel art","negative_prompt":"blurry","steps":4,"cfg_scale":5,"width":32,"height":32,"seed":7,"batch_size":2,"n_iter":1,"sampler_name":"Euler"}' >"$SR/txt2img.json"
printf '%s' '{"prompt":"x","enable_hr":true,"hr_scale":2,"hr_second_pass_steps":2,"denoising_strength":0.5,"override_settings":{"sd_model_checkpoint":"oboro-default [0123456789]"}}' >"$SR/hires.json"
printf '{"prompt":"blue","init_images":["%s"],"denoising_strength":0.6,"steps":3}' "$B64" >"$SR/img2img.json"
printf '{"prompt":"blue","init_images":["data:image/png;base64,%s"],"resize_mode":0}' "$B64" >"$SR/img2img-dataurl.json"
printf '%s' '{"prompt":"an avatar","n":2,"size":"32x32","response_format":"b64_json","model":"oboro-default"}' >"$SR/openai.json"
printf '%s' '{"prompt":"caf\u00e9 \u2603","seed":-1,"width":0,"height":0}' >"$SR/unicode.json"

# ---- LoRA: a rank-2 LoRA extracted from two tiny models (the harness's model is the tiny preset above), small
# slices of it, and text lines (keys, prompt tags, --lora arguments, block-weight specs).
run init --preset tiny --text-dim 32 --latent-channels 4 --seed 3 --random-all -o "$W/tiny-b.safetensors"
run merge --mode extract-lora --rank 2 "$W/tiny-b.safetensors" "$W/tiny.safetensors" -o "$W/lora.safetensors"
cp "$W/lora.safetensors" "$S/fuzz_lora/extracted-rank2.safetensors"
$PY "$HERE/slice_safetensors.py" slice "$W/lora.safetensors" "$S/fuzz_lora/extracted-3.safetensors" --max-bytes 16384 --max-tensors 3
printf '%s\n' 'lora_unet_layers_0_attention_qkv.lora_down.weight' 'transformer.layers.1.feed_forward.w1.lora_A.weight' \
  'a cat <lora:style:0.8> <lora:other:-0.3:0.5>' 'style.safetensors:1.5' 'embedders:0.5,00-01:1,final:0' >"$S/fuzz_lora/lines.txt"

# ---- tokenizer: a vocabulary trained by `oboro data vocab` on the shapes captions; seeds are captions and
# prompts, each prefixed by the token-limit byte.
run data vocab --captions "$W/shapes" --vocab-size 64 --out "$W/spm"
cp "$W/spm.model" "$OUT/tokenizer.model"
i=0
{ find "$W/shapes" -name '*.txt' | sort | head -8 | xargs cat; cat "$W/prompts.txt" "$ROOT/models/default/gallery_prompts.txt"; } |
  head -24 | while IFS= read -r line; do
    printf '\x40%s' "$line" >"$S/fuzz_tokenizer/line-$i"
    i=$((i + 1))
  done
printf '\x05caf\xc3\xa9 \xe2\x98\x83 \xff\xfe end' >"$S/fuzz_tokenizer/mixed-bytes"

n=$(find "$S" -type f | wc -l)
echo "make_corpus: $n seeds in $S"
