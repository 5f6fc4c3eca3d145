"""Helpers shared by the C++-vs-twin tests: run an `oboro debug` contract, check its outputs,
record PASS/FAIL lines, relative errors."""

import os
import subprocess
import time

import torch

import safetensors_py as st

FAILS = []


def check(name, ok, detail=""):
    print(f"  [{'PASS' if ok else 'FAIL'}] {name}" + (f": {detail}" if detail else ""), flush=True)
    if not ok:
        FAILS.append(name)
    return ok


def rel(a, b):
    """||a - b|| / ||b|| in float64 (b is the reference)."""
    a = a.detach().double()
    b = b.detach().double()
    nb = b.norm().item()
    d = (a - b).norm().item()
    if nb == 0:
        return d
    return d / nb


class BinaryError(Exception):
    pass


def run_oboro(binary, sub, model, inputs, output, timeout, extra=()):
    cmd = [binary, "debug", sub, "--model", model, "--inputs", inputs, "--output", output] + list(extra)
    if os.path.exists(output):
        os.remove(output)
    t0 = time.time()
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BinaryError(f"`{' '.join(cmd)}` timed out after {timeout} s")
    dt = time.time() - t0
    if r.returncode != 0:
        tail = (r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace"))[-2000:]
        raise BinaryError(f"`{' '.join(cmd)}` exited with status {r.returncode}:\n{tail}")
    if not os.path.exists(output):
        raise BinaryError(f"`{' '.join(cmd)}` wrote no {output}")
    tensors, _ = st.load(output)
    return tensors, dt


def get_out(tensors, name, shape, what):
    if name not in tensors:
        raise BinaryError(f"{what}: output lacks tensor `{name}` (has {sorted(tensors)[:8]}...)")
    t = tensors[name]
    if tuple(t.shape) != tuple(shape):
        raise BinaryError(f"{what}: `{name}` has shape {tuple(t.shape)}, expected {tuple(shape)}")
    if t.dtype != torch.float32:
        raise BinaryError(f"{what}: `{name}` is {t.dtype}, expected F32")
    return t


def _bf16(t):
    """Round to BF16 (nearest even) as the C++ code does: from the float32 value."""
    return t.float().bfloat16().to(t.dtype)


class _Bf16Linear(torch.autograd.Function):
    """nn.Linear with the arithmetic of MatmulPrecision::BF16 (ops/backend.h): both operands of each of the three
    GEMMs rounded to BF16, the products summed in the tensor's own precision; bias and bias gradient unrounded."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        y = torch.matmul(_bf16(x), _bf16(w).t())
        return y + b if b is not None else y

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        dy2, x2 = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])
        dx = torch.matmul(_bf16(dy), _bf16(w))
        dw = torch.matmul(_bf16(dy2).t(), _bf16(x2))
        db = dy2.sum(0) if ctx.has_bias else None
        return dx, dw, db


class bf16_linear:
    """Context manager: every F.linear (so every nn.Linear) runs as _Bf16Linear inside it."""

    def __enter__(self):
        import torch.nn.functional as F
        self._orig = F.linear
        F.linear = lambda x, w, b=None: _Bf16Linear.apply(x, w, b)
        return self

    def __exit__(self, *exc):
        import torch.nn.functional as F
        F.linear = self._orig
        return False
