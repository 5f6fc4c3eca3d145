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


def run_oboro(binary, sub, model, inputs, output, timeout):
    cmd = [binary, "debug", sub, "--model", model, "--inputs", inputs, "--output", output]
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
