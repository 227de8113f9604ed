"""create_model(pretrained=True) from a local file stays cheap: no heavy lazy imports, no init work.

Building on the meta device used to run every weight-init call through Python reference kernels
(their first use imports torch._dynamo, ~2-7 s) and ``Module.to_empty`` (``empty_like`` on meta
imports sympy, ~2 s): most of the load time of a small model. Measured in
benchmarks/results/load_time.md.
"""
from __future__ import annotations

import json
import subprocess
import sys

import torch
from safetensors.torch import save_file

import visionzoo
from visionzoo.pretrained.load import materialize_empty, skip_init_on_meta

CHILD = r"""
import json, sys
import torch, visionzoo
arch, path = sys.argv[1:3]
before = set(sys.modules)
m = visionzoo.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=path))
new = sorted(k for k in set(sys.modules) - before if k.split(".")[0] in ("sympy", "torch"))
print(json.dumps({"new": new, "meta": any(p.is_meta for p in m.parameters())}))
"""


def test_pretrained_build_imports_nothing_heavy(tmp_path, arch="test_efficientnet"):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in visionzoo.create_model(arch).state_dict().items()}, str(path))
    out = subprocess.run([sys.executable, "-c", CHILD, arch, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert not res["meta"]
    heavy = [m for m in res["new"] if m.startswith(("sympy", "torch._dynamo", "torch.fx.experimental"))]
    assert heavy == [], heavy


def test_skip_init_on_meta_is_a_no_op_for_values_only():
    with torch.device("meta"), skip_init_on_meta():
        lin = torch.nn.Linear(4, 3)
        torch.nn.init.trunc_normal_(lin.weight, std=0.02)
        t = torch.empty(2, 6).uniform_(-1, 1).t_()  # shape-changing in-place ops still apply
    assert lin.weight.is_meta and t.shape == (6, 2)
    # outside meta tensors, init runs as usual
    with skip_init_on_meta():
        w = torch.zeros(3, 3)
        torch.nn.init.ones_(w)
        w.mul_(2)
    assert torch.equal(w, torch.full((3, 3), 2.0))
    m = materialize_empty(lin)
    assert not m.weight.is_meta and m.weight.requires_grad and m.weight.shape == (3, 4)
    assert isinstance(m.weight, torch.nn.Parameter)
