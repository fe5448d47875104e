"""Calls a kernel was not judged on are answered by the reference: strided inputs, eval mode for a
mode-dependent op, hooks, autocast, changed constructor attributes, a bucket shape whose kernel is
right on one input only. And a patched model survives what users do to models: copies, pickles,
threads, keyword calls, nested patches, submodules replaced after patching."""

from __future__ import annotations

import copy
import io
import json
import shutil
import threading

import pytest
import torch
import torch.nn as nn

import kernelevo
from kernelevo.candidate import source_digest
from kernelevo.deploy.load import REFERENCE
from kernelevo.deploy.patch import PatchError
from tests.conftest import CANDIDATES, PROBLEMS, make_export

LN_INIT = ((32,), 1e-5, True)
KERNEL = "cpu/best.py"


@pytest.fixture
def ln(exports):
    op = kernelevo.load(exports["ln"], *LN_INIT)
    with torch.no_grad():
        op.reference.op.weight.normal_()
        op.reference.op.bias.normal_()
    return op


def _answers(op, *args, **kwargs) -> str:
    with torch.no_grad():
        out = op(*args, **kwargs)
        torch.testing.assert_close(out, op.reference(*args, **kwargs), atol=1e-5, rtol=1e-5)
    return op.last


def test_strided_inputs_run_the_reference(ln) -> None:
    assert _answers(ln, torch.randn(8, 32)) == KERNEL
    assert _answers(ln, torch.randn(32, 8).t()) == REFERENCE  # same shape, transposed strides
    assert any("non-contiguous" in n for n in ln.notes)


def test_hooks_autocast_and_changed_attributes_run_the_reference(ln) -> None:
    x = torch.randn(8, 32)
    handle = ln.reference.op.register_forward_hook(lambda m, a, out: out * 0.5)
    assert _answers(ln, x) == REFERENCE
    handle.remove()
    assert _answers(ln, x) == KERNEL
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _answers(ln, x) == REFERENCE
    ln.reference.op.eps = 0.1  # changed after loading: the kernel was judged at 1e-5
    assert _answers(ln, x) == REFERENCE
    for reason in ("forward hooks", "autocast", "constructor arguments no export verified "
                   "(LayerNorm(elementwise_affine=True, eps=0.1, normalized_shape=(32,)))"):
        assert any(reason in n for n in ln.notes), (reason, ln.notes)


def test_constructor_arguments_no_export_verified_run_the_reference(exports) -> None:
    op = kernelevo.load(exports["ln"], (32,), 0.5, True)  # every size was judged at eps=1e-5
    assert _answers(op, torch.randn(8, 32)) == REFERENCE
    from kernelevo.deploy.patch import _identity

    # extra_repr() alone would call these the same module; the constructor-level state does not.
    plain, other = nn.AvgPool1d(3, 1, 1), nn.AvgPool1d(3, 1, 1, count_include_pad=False)
    assert plain.extra_repr() == other.extra_repr() and _identity(plain) != _identity(other)


def test_a_mode_dependent_op_runs_its_kernel_only_in_the_judged_training_mode(tmp_path) -> None:
    op_dir = make_export(tmp_path, PROBLEMS / "batchnorm_train.py", CANDIDATES / "batchnorm_good.py")
    manifest = json.loads((op_dir / "cpu" / "manifest.json").read_text())
    assert manifest["mode_independent"] is False
    op = kernelevo.load(op_dir)  # loaded in eval mode, as models are served
    x = torch.randn(*op._entries["cpu"].verified[0].inputs[0].shape)
    stats = op.reference.bn.running_mean.clone()
    assert _answers(op, x) == REFERENCE and torch.equal(op.reference.bn.running_mean, stats)
    assert any("eval mode" in n for n in op.notes)
    op.train()
    with torch.no_grad():
        op(x)
    assert op.last == KERNEL and not torch.equal(op.reference.bn.running_mean, stats)  # batch stats, as judged
    # A bucket shape's first call is checked against the reference, yet the running statistics
    # see one call, the caller's: exactly the reference's single update.
    twin = copy.deepcopy(op.reference)
    verified_rows = sorted(v.inputs[0].shape[0] for v in op._entries["cpu"].verified)
    rows = next(r for r in range(verified_rows[0], verified_rows[-1]) if r not in verified_rows)
    y = torch.randn(rows, x.shape[1])
    with torch.no_grad():
        op(y)
        twin(y)
    assert op.last == KERNEL, op.notes
    for k, v in twin.state_dict().items():
        torch.testing.assert_close(op.reference.state_dict()[k], v, atol=1e-5, rtol=1e-5)


def test_the_layernorm_export_is_mode_independent(exports) -> None:
    assert json.loads((exports["ln"] / "cpu" / "manifest.json").read_text())["mode_independent"] is True


def test_a_bucket_kernel_right_on_one_input_only_is_caught_by_the_random_draw(ln) -> None:
    kernel = ln._entries["cpu"].kernels["best.py"]
    honest = kernel.forward
    kernel.forward = lambda x: honest(x) if x.abs().sum() == 0 or x.shape[0] != 12 else honest(x) + 1.0
    zeros = torch.zeros(12, 32)
    assert _answers(ln, zeros) == REFERENCE  # the caller's zeros pass; the fresh draw does not
    assert _answers(ln, torch.randn(12, 32)) == REFERENCE
    assert any("on a random draw" in n for n in ln.notes)


def test_threads_share_a_loaded_op(ln) -> None:
    xs = [torch.randn(8, 32) for _ in range(8)]
    with torch.no_grad():
        expected = [ln.reference(x) for x in xs]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(5):
                with torch.no_grad():
                    torch.testing.assert_close(ln(xs[i]), expected[i], atol=1e-5, rtol=1e-5)
        except BaseException as e:  # noqa: BLE001 - collected for the assertion below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and ln.calls[KERNEL] == 40


def _patched_block(exports):
    block = nn.Sequential(nn.LayerNorm(32), nn.Linear(32, 33)).eval()
    with torch.no_grad():
        block[0].weight.normal_()
    report = kernelevo.patch(block, [exports["ln"], exports["softmax"]])
    assert [s.where for s in report.swapped] == ["0", "forward"]  # softmax calls routed, if any come
    return block


def test_copies_and_pickles_of_a_patched_model_work_on_their_own(exports) -> None:
    block = _patched_block(exports)
    x = torch.randn(8, 32)
    twin = copy.deepcopy(block)
    with torch.no_grad():
        twin[1].weight.zero_()
        twin[1].bias.zero_()
        assert torch.count_nonzero(twin(x)) == 0 and torch.count_nonzero(block(x)) > 0
    assert twin[0].last == KERNEL
    buffer = io.BytesIO()
    torch.save(block, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), block(x))
    assert loaded[0].last == KERNEL
    kernelevo.unpatch(twin)
    assert isinstance(twin[0], nn.LayerNorm)


def test_a_copy_of_a_call_patched_model_routes_its_own_forward(exports) -> None:
    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q = nn.Linear(32, 40)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.q(x), dim=-1)
    model = Attn().eval()
    kernelevo.patch(model, [exports["softmax"]])
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.q.bias.fill_(3.0)
        twin.q.weight.zero_()
        out = twin(torch.randn(12, 32))
    torch.testing.assert_close(out, torch.full((12, 40), 1 / 40))  # the copy's own weights
    kernelevo.unpatch(twin)
    assert "forward" not in twin.__dict__


def test_keyword_calls_nested_patches_chains_and_replaced_slots(exports) -> None:
    block = _patched_block(exports)
    x = torch.randn(8, 32)
    with torch.no_grad():
        torch.testing.assert_close(block[0](input=x), block[0].reference.op(x))  # nn.LayerNorm.forward(input)
    assert block[0].last == KERNEL
    with pytest.raises(PatchError, match="patched already"):
        kernelevo.patch(nn.Sequential(block), [exports["ln"]])
    block[1] = nn.Identity()  # the user swaps a module after patching
    assert kernelevo.unpatch(block) == [] and isinstance(block[0], nn.LayerNorm)
    assert isinstance(block[1], nn.Identity)
    seq = nn.Sequential(nn.Linear(32, 16), nn.ReLU())
    report = kernelevo.patch(seq, [exports["chain"]])
    assert not report.swapped and "chains=True" in report.not_swapped[0].reason


def test_a_call_with_non_tensor_inputs_is_not_swapped(exports, tmp_path) -> None:
    op_dir = tmp_path / "softmax_dim"
    shutil.copytree(exports["softmax"], op_dir)
    problem = op_dir / "problem.py"
    text = problem.read_text().replace("def forward(self, x: torch.Tensor) -> torch.Tensor:\n        return "
                                       "torch.softmax(x, dim=-1)", "def forward(self, x, d):\n        return "
                                       "torch.softmax(x, dim=d)").replace(
        "return [torch.randn(batch_size, dim)]", "return [torch.randn(batch_size, dim), -1]")
    assert "dim=d" in text
    problem.write_text(text)
    manifest = op_dir / "cpu" / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "problem_sha256": source_digest(text)}))
    report = kernelevo.patch(nn.Softmax(-1), [op_dir])
    assert not report.swapped and "non-tensor inputs" in report.not_swapped[0].reason


def test_torchscript_traces_and_meta_tensors_take_the_reference(exports) -> None:
    import subprocess
    import sys

    # In a child process: a trace that went wrong here once took the whole interpreter down.
    script = f"""
import os, torch, torch.nn as nn
import kernelevo
block = nn.Sequential(nn.LayerNorm(32), nn.Linear(32, 8)).eval()
kernelevo.patch(block, [{str(exports["ln"])!r}])
x = torch.randn(8, 32)
with torch.no_grad():
    traced = torch.jit.trace(block, x)
    assert torch.allclose(traced(x), block(x), atol=1e-5), "trace differs"
    meta = nn.Sequential(nn.LayerNorm(32)).to("meta")
    kernelevo.patch(meta, [{str(exports["ln"])!r}])
    assert meta(torch.randn(8, 32, device="meta")).shape == (8, 32) and meta[0].last == "reference"
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**__import__("os").environ, "TRITON_INTERPRET": "1"})
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
