"""The way back into a model on a GPU: a measured export is loaded under this GPU's key, answers
from its kernel, passes `verify`'s speed check, and `bench-model` times the patched model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import kernelevo
from kernelevo.deploy.verify import verify_exports
from kernelevo.profile.gpu import gpu_fingerprint
from tests.conftest import CANDIDATES, PROBLEMS, ROOT, TESTS, make_export

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_exports")
    return {
        "ln": make_export(root, PROBLEMS / "layernorm_module.py", CANDIDATES / "layernorm_module_good.py",
                          device="cuda"),
        "chain": make_export(root, PROBLEMS / "linear_relu_chain.py", CANDIDATES / "linear_relu_chain_good.py",
                             device="cuda"),
        "softmax": make_export(root, ROOT / "kernels/softmax/problem.py", ROOT / "kernels/softmax/seed.py",
                               device="cuda"),
    }


def test_a_gpu_export_runs_under_this_gpus_key(gpu_exports) -> None:
    key = gpu_fingerprint().key
    op = kernelevo.load(gpu_exports["ln"], (32,), 1e-5, True).cuda()
    manifest = json.loads((gpu_exports["ln"] / key / "manifest.json").read_text())
    assert not manifest["correctness_only"] and manifest["best"]["speedup"] is not None
    x = torch.randn(8, 32, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(op(x), op.reference(x), atol=1e-5, rtol=1e-5)
        assert op.last == f"{key}/best.py"
        torch.testing.assert_close(torch.compile(op)(x), op.reference(x), atol=1e-5, rtol=1e-5)  # Inductor


def test_verify_passes_a_fresh_gpu_export(gpu_exports) -> None:
    report = verify_exports(gpu_exports["softmax"], threshold=0.5)  # a fresh export: only noise can differ
    assert report.gpu_key == gpu_fingerprint().key and report.ok, report.lines()


def test_bench_model_times_the_patched_model(gpu_exports) -> None:
    done = subprocess.run([sys.executable, "-m", "kernelevo", "bench-model", str(TESTS / "models/patch_block.py"),
                           "--device", "cuda", "--json", "--chains", "--kernels", str(gpu_exports["ln"].parent)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["outputs_match"] and report["speedup"] > 0 and report["original_ms"] > 0
    assert {s["where"] for s in report["swaps"]} == {"ln", "mlp.0", "forward"}
    assert all(s["speedup_alone"] is not None for s in report["swaps"])
