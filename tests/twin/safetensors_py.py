"""Minimal safetensors reader/writer for the oboro PyTorch twin and tests.

File layout: 8-byte little-endian u64 N, then N bytes of UTF-8 JSON
  {name: {"dtype": str, "shape": [int...], "data_offsets": [begin, end]}, ...,
   "__metadata__": {str: str}}
then the raw little-endian tensor bytes; offsets are relative to the end of the
header.  Only numpy + torch are needed (no `safetensors` package).
"""

import json
import os
import struct

import numpy as np
import torch

__all__ = ["load", "save", "read_header"]

# dtype name -> (numpy dtype used to read the bytes, element size)
_NP_READ = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<i2"),      # reinterpreted as torch.bfloat16
    "F8_E4M3": np.dtype("u1"),    # decoded through a lookup table
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}

_TORCH_TO_NAME = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}

_MAX_HEADER = 100 * 1024 * 1024


def _e4m3fn_table():
    """float32 value of every F8_E4M3 (FN variant: bias 7, no inf, NaN = S.1111.111)."""
    vals = np.zeros(256, dtype=np.float32)
    for b in range(256):
        sign = -1.0 if (b & 0x80) else 1.0
        e = (b >> 3) & 0xF
        m = b & 0x7
        if e == 0xF and m == 0x7:
            vals[b] = np.nan
        elif e == 0:
            vals[b] = sign * (m / 8.0) * 2.0 ** (-6)
        else:
            vals[b] = sign * (1.0 + m / 8.0) * 2.0 ** (e - 7)
    return vals


_E4M3 = None


def read_header(path):
    """Return (header dict without __metadata__, metadata dict, data start offset)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: file too short for a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > _MAX_HEADER:
            raise ValueError(f"{path}: header length {n} is implausible")
        hdr = f.read(n)
        if len(hdr) != n:
            raise ValueError(f"{path}: truncated header")
    header = json.loads(hdr.decode("utf-8"))
    meta = header.pop("__metadata__", None) or {}
    return header, meta, 8 + n


def load(path):
    """Load every tensor. Returns (dict name -> torch.Tensor, metadata dict).

    F8_E4M3 tensors are decoded to float32 (torch 1.13 has no float8 dtype).
    """
    global _E4M3
    header, meta, start = read_header(path)
    with open(path, "rb") as f:
        f.seek(start)
        blob = f.read()
    out = {}
    for name, info in header.items():
        dt = info["dtype"]
        shape = [int(s) for s in info["shape"]]
        b, e = (int(v) for v in info["data_offsets"])
        if dt not in _NP_READ:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {dt}")
        npdt = _NP_READ[dt]
        count = 1
        for s in shape:
            count *= s
        if e - b != count * npdt.itemsize or e > len(blob) or b < 0:
            raise ValueError(f"{path}: tensor {name}: bad data_offsets {b},{e} for "
                             f"{dt}{shape}")
        # astype to native byte order also makes a writable copy
        arr = np.frombuffer(blob, dtype=npdt, count=count, offset=b)
        arr = arr.astype(npdt.newbyteorder("="), copy=True)
        if dt == "F8_E4M3":
            if _E4M3 is None:
                _E4M3 = _e4m3fn_table()
            arr = _E4M3[arr]
        t = torch.from_numpy(arr)
        if dt == "BF16":
            t = t.view(torch.bfloat16)
        out[name] = t.reshape(shape)
    return out, dict(meta)


def _tensor_bytes(t):
    t = t.detach().cpu().contiguous()
    if t.dtype not in _TORCH_TO_NAME:
        raise ValueError(f"unsupported torch dtype {t.dtype}")
    name = _TORCH_TO_NAME[t.dtype]
    if t.dtype == torch.bfloat16:
        arr = t.view(torch.int16).numpy()
    else:
        arr = t.numpy()
    arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    return name, arr.tobytes(order="C")


def save(path, tensors, metadata=None):
    """Write tensors (dict name -> torch.Tensor) and metadata (dict str -> str).

    Writes to a temporary file in the same folder and renames it into place.
    """
    header = {}
    chunks = []
    off = 0
    for name, t in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"bad tensor name {name!r}")
        dt, data = _tensor_bytes(t)
        header[name] = {"dtype": dt, "shape": list(t.shape),
                        "data_offsets": [off, off + len(data)]}
        chunks.append(data)
        off += len(data)
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError("metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)   # keep the data 8-byte aligned
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(hb)))
            f.write(hb)
            for c in chunks:
                f.write(c)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
