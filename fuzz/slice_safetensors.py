#!/usr/bin/python3
"""Small fuzz seeds from a real safetensors file that oboro wrote (fuzz/make_corpus.sh).

A real model is megabytes; libFuzzer mutates small inputs far better. This keeps the real header
conventions (names, dtypes, shapes, __metadata__ with oboro.config / oboro.weight_format, q8_0 I8
weights with their F32 `_scale` companions) and real tensor bytes, but only the tensors whose data is
at most --max-bytes (a q8_0 weight is kept only with its scale), written as:

  slice  IN OUT.safetensors [--max-bytes N] [--max-tensors K] [--drop-metadata KEY ...]
  shards IN OUT [--max-bytes N]   sharded checkpoint as one fuzz input for fuzz_safetensors_sharded:
                                  index JSON, then 2-3 shards, separated by b"\\0SHARD\\0"

Standard library only.
"""
import json
import struct
import sys

SEP = b"\0SHARD\0"
SHARD_NAMES = ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
               "model-00003-of-00003.safetensors"]


def read(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    data = b[8 + n:]
    meta = header.pop("__metadata__", None)
    tensors = {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in header.items()}
    return tensors, meta


def pick(tensors, max_bytes, max_tensors):
    names = []
    # Quantised weights (with a `_scale` companion, or not F32) first: they are what the format-specific
    # readers check.
    for name in sorted(tensors, key=lambda n: (n + "_scale" not in tensors and tensors[n][0] == "F32", n)):
        dtype, shape, data = tensors[name]
        if name.endswith("_scale") or len(data) > max_bytes:
            continue
        group = [name]
        if name + "_scale" in tensors:
            group.append(name + "_scale")
        elif dtype == "I8":
            continue
        names += group
        if len(names) >= max_tensors:
            break
    return names


def encode(tensors, names, meta):
    header, off, blobs = {}, 0, []
    for name in names:
        dtype, shape, data = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
        blobs.append(data)
    if meta:
        header["__metadata__"] = meta
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def main(argv):
    mode, src, out = argv[1], argv[2], argv[3]
    opts = argv[4:]
    max_bytes = int(opts[opts.index("--max-bytes") + 1]) if "--max-bytes" in opts else 2048
    max_tensors = int(opts[opts.index("--max-tensors") + 1]) if "--max-tensors" in opts else 12
    drop = [opts[i + 1] for i, o in enumerate(opts) if o == "--drop-metadata"]
    tensors, meta = read(src)
    if meta:
        meta = {k: v for k, v in meta.items() if k not in drop}
    names = pick(tensors, max_bytes, max_tensors)
    if mode == "slice":
        with open(out, "wb") as f:
            f.write(encode(tensors, names, meta))
    elif mode == "shards":
        k = 3 if len(names) >= 3 else 2
        groups = [names[i::k] for i in range(k)]
        weight_map = {n: SHARD_NAMES[i] for i, g in enumerate(groups) for n in g}
        total = sum(len(tensors[n][2]) for n in names)
        index = json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2).encode()
        parts = [index] + [encode(tensors, g, meta if i == 0 else None) for i, g in enumerate(groups)]
        with open(out, "wb") as f:
            f.write(SEP.join(parts))
    else:
        sys.exit("usage: slice_safetensors.py slice|shards IN OUT [--max-bytes N] [--max-tensors K]")


if __name__ == "__main__":
    main(sys.argv)
