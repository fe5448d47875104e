"""Exported kernels in a model: `load` runs them only where verified, `patch` swaps them in and
`unpatch` takes them out; the custom ops pass `opcheck` and compose with torch.compile/export."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import kernelevo
from kernelevo.deploy.load import REFERENCE, ExportedOp, LoadError
from kernelevo.deploy.manifest import ManifestError
from kernelevo.deploy.patch import PatchError
from kernelevo.problem import load_problem
from tests.conftest import CANDIDATES, ROOT, TESTS, make_export

MODELS = TESTS / "models"

LN_INIT = ((32,), 1e-5, True)


@pytest.fixture
def copy_of(exports, tmp_path):
    """A private copy of an export folder, for tests that damage it."""
    def make(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(exports[name], dst)
        return dst
    return make


def _block() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    problem = load_problem(MODELS / "patch_block.py")
    ns = problem.namespace(problem.sizes[0], keep=True)  # compiled below: its module must be importable
    torch.manual_seed(0)
    return ns.Model().eval(), tuple(ns.get_inputs())


def test_load_runs_the_kernel_where_verified(exports) -> None:
    op = kernelevo.load(exports["ln"], *LN_INIT)
    nn.init.normal_(op.reference.op.weight)
    nn.init.normal_(op.reference.op.bias)
    x = torch.randn(8, 32)
    with torch.no_grad():
        y = op(x)
        assert op.last == "cpu/best.py"
        torch.testing.assert_close(y, op.reference(x), atol=1e-5, rtol=1e-5)
        assert op(torch.randn(6, 32)).shape == (6, 32) and op.last == "cpu/best.py"  # a bucket: checked once
        op.reference.op.weight = nn.Parameter(torch.randn(32))  # replaced, not updated in place
        op.reference.op.bias.mul_(3.0)  # updated in place
        torch.testing.assert_close(op(x), op.reference(x), atol=1e-5, rtol=1e-5)
        assert op.last == "cpu/best.py"


def test_load_falls_back_to_the_reference_and_says_why_once(exports, monkeypatch, caplog) -> None:
    op = kernelevo.load(exports["ln"], *LN_INIT)
    caplog.set_level(logging.WARNING, logger="kernelevo")
    with torch.no_grad():
        op(torch.randn(8, 32, dtype=torch.float64).float().half().float())  # still fp32: kernel
        assert op.last == "cpu/best.py"
        op.half()
        op(torch.randn(8, 32).half())
        op(torch.randn(8, 32).half())
    assert op.last == REFERENCE
    assert sum("dtype float16 was not verified on cpu (verified: float32)" in r.message for r in caplog.records) == 1
    op.float()
    with torch.no_grad():
        op(torch.randn(500, 32))  # rows far beyond the verified 5..8
    assert op.last == REFERENCE and any("outside the sizes verified" in n for n in op.notes)
    x = torch.randn(8, 32)
    assert torch.equal(op(x), op.reference(x)) and op.last == REFERENCE  # autograd on: forward-only kernels
    assert any("autograd" in n for n in op.notes)
    monkeypatch.delenv("TRITON_INTERPRET")  # a process whose Triton compiles for a GPU
    op = kernelevo.load(exports["ln"], *LN_INIT)
    with torch.no_grad():
        op(x)
    assert op.last == REFERENCE and any("CPU tensors" in n for n in op.notes)


def test_a_kernel_that_raises_is_switched_off_and_the_model_keeps_running(exports) -> None:
    op = kernelevo.load(exports["ln"], *LN_INIT)
    kernel = op._entries["cpu"].kernels["best.py"]

    def boom(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("out of resources: shared memory")
    kernel.forward = boom
    x = torch.randn(8, 32)
    with torch.no_grad():
        assert torch.equal(op(x), op.reference(x)) and op.last == REFERENCE
    assert any("raised RuntimeError: out of resources" in n and "switched off" in n for n in op.notes)


def test_an_export_for_another_gpu_type_only_runs_the_reference(copy_of) -> None:
    op_dir = copy_of("ln")
    (op_dir / "cpu").rename(op_dir / "nvidia-h100-80gb-sm90")
    manifest = op_dir / "nvidia-h100-80gb-sm90" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["gpu_key"] = "nvidia-h100-80gb-sm90"
    manifest.write_text(json.dumps(data))
    op = kernelevo.load(op_dir, *LN_INIT)
    with torch.no_grad():
        op(torch.randn(8, 32))
    assert op.last == REFERENCE and op.gpu_keys == ["nvidia-h100-80gb-sm90"]
    assert any("no export for this GPU type (cpu; exports: nvidia-h100-80gb-sm90)" in n for n in op.notes)


def test_a_tampered_kernel_is_refused(copy_of) -> None:
    op_dir = copy_of("ln")
    best = op_dir / "cpu" / "best.py"
    best.write_text(best.read_text().replace("d * rstd * w + b", "d * rstd * w + b + 0.001"))
    op = kernelevo.load(op_dir, *LN_INIT)
    with torch.no_grad():
        op(torch.randn(8, 32))
    assert op.last == REFERENCE and op.gpu_keys == []
    assert any("export cpu refused" in n and "sha256 does not match the manifest" in n for n in op.notes)
    with pytest.raises(ManifestError, match="best.py: sha256 does not match"):
        kernelevo.load(op_dir, *LN_INIT, strict=True)
    (op_dir / "problem.py").write_text((op_dir / "problem.py").read_text() + "\n# edited\n")
    with pytest.raises(ManifestError, match="problem.py: sha256 does not match"):
        kernelevo.load(op_dir, *LN_INIT, strict=True)


def test_a_folder_without_a_problem_cannot_give_a_reference(tmp_path) -> None:
    with pytest.raises(LoadError, match="no usable reference"):
        kernelevo.load(tmp_path)


def test_the_custom_ops_pass_opcheck(exports) -> None:
    op = kernelevo.load(exports["ln"], *LN_INIT)
    x = torch.randn(8, 32)
    state = [t.detach() for t in op.reference.state_dict().values()]
    with torch.no_grad():
        op(x)  # registers the kernel's own op on first use
    assert list(op.kernel_ops) == ["cpu/best.py"]
    for custom in (op.kernel_ops["cpu/best.py"], op.dispatch_op):
        assert custom._qualname.startswith("kernelevo::layernorm_module_")
        torch.library.opcheck(custom, ([x], state))


def test_a_loaded_op_composes_with_compile_and_export(exports) -> None:
    op = kernelevo.load(exports["ln"], *LN_INIT)
    x = torch.randn(8, 32)
    with torch.no_grad():
        expected = op.reference(x)
        compiled = torch.compile(op, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(x), expected, atol=1e-5, rtol=1e-5)
    assert op.calls["cpu/best.py"] == 1  # the compiled graph's one opaque call chose the kernel
    exported = torch.export.export(op, (x,))
    assert "torch.ops.kernelevo.layernorm_module_" in exported.graph_module.code
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), expected, atol=1e-5, rtol=1e-5)
    assert op.calls["cpu/best.py"] == 2
    xg = x.clone().requires_grad_()
    exported.module()(xg).square().sum().backward()  # the op's gradient is the reference's
    xr = x.clone().requires_grad_()
    op.reference(xr).square().sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad)


def test_patch_swaps_modules_chains_and_calls_then_unpatch_restores(exports) -> None:
    block, inputs = _block()
    children = dict(block.named_modules())
    before = dict(block.__dict__)
    state = {k: v.clone() for k, v in block.state_dict().items()}
    with torch.no_grad():
        expected = block(*inputs)
    report = kernelevo.patch(block, [exports["ln"], exports["chain"], exports["softmax"]], chains=True)
    assert {s.where for s in report.swapped} == {"ln", "mlp.0", "forward"}
    assert [n.where for n in report.not_swapped] == ["ln_other"]
    assert "LayerNorm((40,)" in report.not_swapped[0].reason and "no export verified" in report.not_swapped[0].reason
    assert isinstance(block.ln, ExportedOp) and isinstance(block.mlp[1], nn.Identity)
    assert block.ln.reference.op is children["ln"]  # the user's own module: its weights, shared
    assert list(block.state_dict()) == list(state)  # the original's keys, in order: checkpoints still load
    block.load_state_dict(state, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(block(*inputs), expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(torch.compile(block, backend="eager")(*inputs), expected, atol=1e-4, rtol=1e-4)
    for r in report.replacements:
        assert r.calls["cpu/best.py"] >= 2 and r.calls[REFERENCE] == 0, (r.op, r.calls, r.notes)
    kernelevo.unpatch(block)
    assert dict(block.named_modules()) == children and "forward" not in block.__dict__
    assert set(block.__dict__) - {"_is_torch_compile"} == set(before)  # nothing of kernelevo's left (compile marks it)
    assert all(torch.equal(v, state[k]) for k, v in block.state_dict().items())
    with torch.no_grad():
        assert torch.equal(block(*inputs), expected)
    with pytest.raises(PatchError, match="not patched"):
        kernelevo.unpatch(block)


def test_patch_says_why_an_op_cannot_be_swapped(tmp_path) -> None:
    plain = tmp_path / "layernorm"
    plain.mkdir()
    shutil.copy(ROOT / "kernels" / "layernorm" / "problem.py", plain / "problem.py")
    report = kernelevo.patch(nn.Sequential(nn.LayerNorm(32)), [plain])
    assert not report.swapped and report.not_swapped[0].reason == "no usable export (run kernelevo export)"
    with pytest.raises(PatchError, match="not an exported op folder"):
        kernelevo.patch(nn.Linear(2, 2), [tmp_path / "nothing"])


def test_a_bucket_shape_is_checked_once_against_the_reference(exports) -> None:
    op = kernelevo.load(exports["ln"], *LN_INIT)
    kernel = op._entries["cpu"].kernels["best.py"]
    honest = kernel.forward
    kernel.forward = lambda x: honest(x) + (1.0 if x.shape[0] == 12 else 0.0)  # wrong off the verified rows
    with torch.no_grad():
        x = torch.randn(12, 32)
        assert torch.equal(op(x), op.reference(x)) and op.last == REFERENCE
        op(torch.randn(12, 32))
        assert op.last == REFERENCE  # the shape stays off after one disagreement
        op(torch.randn(16, 32))
        assert op.last == "cpu/best.py"  # a verified size is unaffected
    assert any("float32[12, 32]" in n and "disagreed with the reference" in n for n in op.notes)


def test_bench_model_checks_outputs_on_a_cpu_and_names_the_swaps(exports) -> None:
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "kernelevo", "bench-model", str(MODELS / "patch_block.py"), "--device", "cpu",
           "--json", "--chains", "--kernels", str(exports["ln"].parent)]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the command switches it on itself
    done = subprocess.run(cmd, capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["outputs_match"] and report["speedup"] is None and "timing needs a GPU" in report["notes"][0]
    kernel_calls = {s["where"]: s["kernel_calls"] for s in report["swaps"]}
    assert kernel_calls == {"ln": 1, "mlp.0": 1, "forward": 1}
    assert report["not_swapped"][0].startswith("ln_other (layernorm_module): LayerNorm((40,)")
    broken = subprocess.run([*cmd[:4], str(MODELS / "missing.py")], capture_output=True, text=True,
                            env={**env, "PYTHONPATH": str(ROOT)})
    assert broken.returncode == 2 and broken.stderr.count("\n") == 1 and "no such problem file" in broken.stderr


def test_the_loop_from_a_model_back_into_it(tmp_path) -> None:
    """hotspots -> optimize -> export -> patch, on the transformer block: the LayerNorm it finds
    comes back as a kernel that answers both of the block's LayerNorm(32) calls it can see."""
    from kernelevo.deploy.hotspots import find_hotspots, write_problems

    found = find_hotspots(MODELS / "transformer_block.py", top=20, device="cpu")
    (ln,) = [h for h in found if h.name == "layernorm_32"]
    (problem,) = write_problems([ln], tmp_path / "hot")
    kernel = tmp_path / "ln_kernel.py"  # the test candidate, taking the hotspot's fourth argument (bias)
    kernel.write_text((CANDIDATES / "layernorm_module_good.py").read_text().replace(
        "def __init__(self, normalized_shape, eps, elementwise_affine):",
        "def __init__(self, normalized_shape, eps, elementwise_affine, bias):"))
    op_dir = make_export(tmp_path / "run", problem, kernel)
    ns = load_problem(MODELS / "transformer_block.py").namespace({}, keep=True)
    torch.manual_seed(0)
    model = ns.Model(*ns.get_init_inputs()).eval()
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)
    x = ns.get_inputs()[0]
    with torch.no_grad():
        expected = model(x)
        report = kernelevo.patch(model, [op_dir])
        assert sorted(s.where for s in report.swapped) == [f"blocks.{b}.ln{i}" for b in (0, 1) for i in (1, 2)]
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
    assert all(r.calls["cpu/best.py"] == 1 and r.calls[REFERENCE] == 0 for r in report.replacements)
