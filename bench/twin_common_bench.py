"""Helpers shared by the twin benchmark scripts (bench/twin_*_bench.py): precisions, timing, memory."""

import ctypes
import resource
import time

import torch

DTYPES = ("float32", "bfloat16")


def parse_dtypes(text):
    out = [d.strip() for d in text.split(",") if d.strip()]
    for d in out:
        if d not in DTYPES:
            raise SystemExit(f"unknown dtype {d!r}: use float32 or bfloat16")
    return out


def autocast(dtype):
    """bfloat16: CPU autocast (GEMMs and convolutions in BF16 through oneDNN, weights stay float32)."""
    if dtype == "bfloat16":
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return torch.autocast(device_type="cpu", enabled=False)


def best_of(fn, dtypes, warmup, repeats):
    """Time fn(dtype) for each dtype: warm-up runs, then `repeats` timed runs. Returns (results, best dtype)."""
    results = {}
    for d in dtypes:
        for _ in range(warmup):
            fn(d)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn(d)
            times.append(time.perf_counter() - t0)
        if out is not None and not torch.isfinite(out.float()).all():
            raise SystemExit(f"non-finite output ({d})")
        results[d] = {"min_seconds": min(times), "mean_seconds": sum(times) / len(times), "times": times}
    best = min(results, key=lambda d: results[d]["min_seconds"])
    return results, best


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def rss_bytes():
    return _status("VmRSS:")


def hwm_bytes():
    return _status("VmHWM:")


def reset_hwm():
    """VmHWM := VmRSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def malloc_return_memory():
    """Fixed mmap threshold (64 KiB) so every large buffer is mmapped and unmapped on free: the
    peak-RSS delta of a call then measures its working memory rather than what glibc kept."""
    libc = ctypes.CDLL("libc.so.6")
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
    libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
