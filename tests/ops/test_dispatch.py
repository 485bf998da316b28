"""The op decides its backend in one place (stkit.ops.dispatch), and falls back in one place."""

import os
import subprocess
import sys

CODE = """
import torch
from stkit import ops
from stkit.ops.custom_op import ms_deform_attn_op
value = torch.rand(1, 4, 1, 2, dtype=torch.float64)
ss, lsi = torch.tensor([[2, 2]]), torch.tensor([0])
loc = torch.rand(1, 3, 1, 1, 1, 2, dtype=torch.float64)
attn = torch.ones(1, 3, 1, 1, 1, dtype=torch.float64)
print(ops.backend())
out = ops.ms_deform_attn(value, ss, lsi, loc, attn)
assert torch.allclose(out, ops.ms_deform_attn_reference(value, ss, lsi, loc, attn))
try:
    ms_deform_attn_op(value, ss, lsi, loc, attn)
except RuntimeError as err:
    print("raised:", err)
"""


def test_reference_mode_falls_back_in_one_place():
    env = {**os.environ, "STKIT_OPS_BACKEND": "reference"}
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "reference (forced by STKIT_OPS_BACKEND=reference)"
    # the raw custom op never picks an implementation itself: without a kernel it says so
    assert lines[1].startswith("raised: stkit::ms_deform_attn has no compiled kernel for cpu tensors")
