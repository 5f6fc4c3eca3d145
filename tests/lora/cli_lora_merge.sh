#!/bin/bash
# oboro merge + generate --lora end to end on the bundled default model (issue 19): a bf16 copy (no-interpolation
# --dtype bf16), a LoRA extracted from default − copy (retained energy printed), generate with it (every tensor
# applied, Lora hashes in the PNG), with a prompt tag from --lora-dir, a wrong LoRA failing with its key named, and
# oboro data audit on the extracted LoRA. Usage: cli_lora_merge.sh OBORO WORKDIR SOURCE_DIR
set -euo pipefail
OBORO=$1; W=$2; SRC=$3
D=$SRC/models/default/oboro-default.safetensors
rm -rf "$W"; mkdir -p "$W/loras"
fail() { echo "FAIL: $*" >&2; exit 1; }

"$OBORO" merge --mode no-interpolation "$D" --dtype bf16 -o "$W/bf16.safetensors" 2>"$W/m1.err"
"$OBORO" merge --mode extract-lora --rank 4 "$D" "$W/bf16.safetensors" -o "$W/loras/diff.safetensors" 2>"$W/m2.err"
grep -q 'retained energy' "$W/m2.err" || fail "extract-lora printed no retained energy"
# Refusals: an existing output without --force, an input as output.
if "$OBORO" merge --mode no-interpolation "$D" -o "$W/bf16.safetensors" 2>"$W/m3.err"; then fail "overwrote without --force"; fi
grep -q -- '--force' "$W/m3.err" || fail "no --force hint: $(cat "$W/m3.err")"

G=(generate "a red square" --model "$D" --steps 2 --size 64x64 --seed 7)
"$OBORO" "${G[@]}" --lora "$W/loras/diff.safetensors:1" -o "$W/out1" >"$W/g1.out" 2>"$W/g1.err"
grep -Eq 'applied ([0-9]+) of \1 LoRA tensors' "$W/g1.err" || fail "not every tensor applied: $(grep applied "$W/g1.err")"
grep -q 'Lora hashes' "$(head -1 "$W/g1.out")" || fail "no Lora hashes in the PNG"
"$OBORO" "${G[@]/a red square/a red square <lora:diff:0.5>}" --lora-dir "$W/loras" -o "$W/out2" >/dev/null 2>"$W/g2.err"
grep -q 'applied' "$W/g2.err" || fail "the prompt tag was not applied"

python3 - "$W/bad.safetensors" <<'PY'
import json, struct, sys
hdr = {"lora_unet_layers_0_attention_qkvx.lora_down.weight": {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]}}
h = json.dumps(hdr).encode(); h += b" " * ((8 - (8 + len(h)) % 8) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + b"\0\0\0\0")
PY
if "$OBORO" "${G[@]}" --lora "$W/bad.safetensors" -o "$W/out3" 2>"$W/g3.err"; then fail "a wrong LoRA was accepted"; fi
grep -q 'lora_unet_layers_0_attention_qkvx.lora_down.weight' "$W/g3.err" || fail "the bad key is not named: $(cat "$W/g3.err")"

if python3 -c "import json,struct,sys; f=open(sys.argv[1],'rb'); n=struct.unpack('<Q',f.read(8))[0]; sys.exit(0 if 'oboro.dataset' in json.loads(f.read(n)).get('__metadata__',{}) else 1)" "$D"; then
  "$OBORO" data audit "$W/loras/diff.safetensors" >"$W/audit.out"
  grep -q 'dataset: sha256:' "$W/audit.out" || fail "audit lists no dataset: $(cat "$W/audit.out")"
fi
echo "cli_lora_merge: ok"
