#!/usr/bin/python3
"""Stand-in for the C++ binary's DiT debug contract, built on the twin in float32.

Only for checking test_dit_twin.py itself (and for seeing what error a correct
float32 implementation gets):
    /usr/bin/python3 tests/twin/test_dit_twin.py --oboro tests/twin/fake_oboro.py
Supports `debug dit` and `debug dit-grad` with --model/--inputs/--output.
`--bug NAME` (or env FAKE_OBORO_BUG) injects a deliberate error to see the test fail:
  nomask   ignore txt_mask
  f32sin   float32 timestep sinusoid (a plausible, legitimate-looking C++ choice)
"""

import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oboro_twin as tw          # noqa: E402
import safetensors_py as st      # noqa: E402


def f32_sinusoid(t, dtype):
    k = torch.arange(128, dtype=torch.float32)
    phi = torch.exp(-math.log(10000.0) * k / 128)
    ang = (1000.0 * t.float())[:, None] * phi[None, :]
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=-1).to(dtype)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("group")
    ap.add_argument("cmd")
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--bug", default=os.environ.get("FAKE_OBORO_BUG", ""))
    a = ap.parse_args()
    if a.group != "debug" or a.cmd not in ("dit", "dit-grad"):
        print(f"unsupported: {a.group} {a.cmd}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    if a.bug == "f32sin":
        tw.timestep_sinusoid = f32_sinusoid
    model, _ = tw.load_model(a.model, dtype=torch.float32)
    inp, _ = st.load(a.inputs)
    mask = inp["txt_mask"] if a.bug != "nomask" else torch.ones_like(inp["txt_mask"])
    if a.cmd == "dit":
        with torch.no_grad():
            v = model(inp["x"], inp["t"], inp["txt"], mask)
        st.save(a.output, {"v": v})
        return 0
    v = model(inp["x"], inp["t"], inp["txt"], mask)
    loss = ((v - inp["target"]) ** 2).mean()
    names = [n for n, _ in model.named_parameters()]
    grads = torch.autograd.grad(loss, list(model.parameters()))
    out = {"v": v.detach(), "loss": loss.detach().reshape(1)}
    out.update({"grad." + n: g for n, g in zip(names, grads)})
    st.save(a.output, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
