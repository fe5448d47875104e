"""GPU checks (skipped without CUDA): the shipped seeds pass and are timed with device events."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernelevo.candidate import Candidate
from kernelevo.evaluate.evaluator import Evaluator
from kernelevo.evaluate.verdict import Verdict
from kernelevo.problem import load_problem
from tests.adversarial import HEADER

KERNELS = Path(__file__).parents[1] / "kernels"
OPS = sorted(p.parent.name for p in KERNELS.glob("*/problem.py"))


@pytest.mark.gpu
@pytest.mark.parametrize("op", OPS)
def test_shipped_seed_is_correct_on_gpu(op: str) -> None:
    problem = load_problem(KERNELS / op / "problem.py", device="cuda")
    with Evaluator(problem, "cuda") as ev:
        result = ev.evaluate(Candidate.from_file(KERNELS / op / "seed.py"))
    assert result.verdict is Verdict.CORRECT, result.reason
    assert result.timing == "cuda-events" and result.speedup and result.speedup > 0


@pytest.mark.gpu
def test_side_stream_work_is_timed_and_checked() -> None:
    src = HEADER + (
        "\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n"
        "        s = torch.cuda.Stream()\n"
        "        with torch.cuda.stream(s):\n"
        "            return softmax(x)\n"
    )
    problem = load_problem(Path(__file__).parent / "problems" / "softmax_small.py", device="cuda")
    with Evaluator(problem, "cuda") as ev:
        result = ev.evaluate(Candidate.from_source(src, "side_stream"))
    assert result.verdict is Verdict.CORRECT, result.reason
    assert all(s.latency_ms and s.latency_ms > 0.001 for s in result.sizes)


# -- GPU-only adversarial cases: each must fail, and the evaluator must carry on after it ---------

_KERNEL_HEADER = HEADER.split("\n\ndef softmax")[0]


def _gpu_eval(sources: list[tuple[str, str]], timeout_s: float = 20.0):
    from kernelevo.settings import EvalSettings

    problem = load_problem(Path(__file__).parent / "problems" / "softmax_small.py", device="cuda")
    with Evaluator(problem, "cuda", EvalSettings(timeout_s=timeout_s)) as ev:
        return [ev.evaluate(Candidate.from_source(src, name)) for name, src in sources]


GOOD = (Path(__file__).parent / "candidates" / "softmax_good.py").read_text()


@pytest.mark.gpu
def test_output_from_freed_reference_memory_fails() -> None:
    src = HEADER + "\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        softmax(x)\n" \
        "        return torch.empty_like(x)\n"
    (r,) = _gpu_eval([("empty_like", src)])
    # The caching allocator hands back softmax's freed block, answer and all; checked calls fill it with NaN.
    assert r.verdict is Verdict.INCORRECT and "never written" in r.reason, r.reason


@pytest.mark.gpu
def test_kernel_that_zeroes_its_inputs_is_rejected() -> None:
    src = HEADER + "\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        y = softmax(x)\n" \
        "        x.zero_()\n        return y\n"
    (r,) = _gpu_eval([("zero_inputs", src)])
    assert r.verdict is Verdict.REJECTED and "inputs" in r.reason, r.reason


@pytest.mark.gpu
def test_out_of_bounds_read_fails_and_the_next_candidate_runs() -> None:
    oob = GOOD.replace("mask = offs < n_cols", "mask = offs < n_cols + 4096").replace(
        "other=-float(\"inf\"))", "other=-float(\"inf\"))  # reads past the row")
    hang = _KERNEL_HEADER + (
        "\n\n@triton.jit\ndef _spin_kernel(p, n):\n    i = 0\n    while tl.load(p) >= 0:\n        i += 1\n"
        "    tl.store(p, i)\n\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n"
        "        flag = torch.zeros(1, device=x.device)\n        _spin_kernel[(1,)](flag, 1)\n        return x\n"
    )
    illegal = _KERNEL_HEADER + (
        "\n\n@triton.jit\ndef _wild_kernel(p):\n    tl.store(p + (1 << 40), 1.0)\n\n\n"
        "class ModelNew(nn.Module):\n    def forward(self, x):\n        y = torch.empty_like(x)\n"
        "        _wild_kernel[(1,)](y)\n        return y\n"
    )
    results = _gpu_eval([("oob", oob), ("good1", GOOD), ("hang", hang), ("good2", GOOD),
                         ("illegal", illegal), ("good3", GOOD)], timeout_s=15.0)
    by = {r.candidate: r for r in results}
    assert by["oob"].verdict in (Verdict.INCORRECT, Verdict.RUNTIME_ERROR, Verdict.CRASH), by["oob"].reason
    assert by["hang"].verdict is Verdict.TIMEOUT, by["hang"].reason
    assert by["illegal"].verdict in (Verdict.RUNTIME_ERROR, Verdict.CRASH), by["illegal"].reason
    for name in ("good1", "good2", "good3"):  # a poisoned context never reaches the next candidate
        assert by[name].verdict is Verdict.CORRECT, (name, by[name].reason)


@pytest.mark.gpu
def test_side_stream_work_is_counted_in_the_time() -> None:
    """The same kernel on a non-blocking side stream must not time faster than on the main stream."""
    side = HEADER + (
        "\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n"
        "        s = torch.cuda.Stream(non_blocking=True) if hasattr(torch.cuda.Stream, 'non_blocking') "
        "else torch.cuda.Stream()\n"
        "        with torch.cuda.stream(s):\n            for _ in range(20):\n"
        "                y = softmax(x)\n        return y\n"
    )
    main = side.replace("with torch.cuda.stream(s):", "if True:")
    r_side, r_main = _gpu_eval([("side", side), ("main", main)])
    assert r_side.verdict is Verdict.CORRECT and r_main.verdict is Verdict.CORRECT, (r_side.reason, r_main.reason)
    for a, b in zip(r_side.sizes, r_main.sizes, strict=True):
        assert a.latency_ms >= 0.8 * b.latency_ms, (a.latency_ms, b.latency_ms)


# -- profile, calibration, CUDA candidates --------------------------------------------------------


@pytest.mark.gpu
def test_profile_reports_registers_roofline_and_nvml() -> None:
    (r,) = _gpu_eval([("good", GOOD)])
    assert r.verdict is Verdict.CORRECT and r.profile is not None, r.reason
    kernels = r.profile["kernels"]
    assert kernels and kernels[0]["registers"] and kernels[0]["registers"] > 0
    assert all(s.gbps and s.gbps > 0 and s.roofline is not None for s in r.sizes)
    assert r.profile_text and "registers" in r.profile_text


@pytest.mark.gpu
def test_compile_baseline_on_gpu() -> None:
    from kernelevo.settings import EvalSettings

    problem = load_problem(Path(__file__).parent / "problems" / "softmax_small.py", device="cuda")
    with Evaluator(problem, "cuda", EvalSettings(compile_baseline=True)) as ev:
        r = ev.evaluate(Candidate.from_source(GOOD, "good"))
    assert r.verdict is Verdict.CORRECT and r.speedup_compiled and r.speedup_compiled > 0, r.reason


CUPY_SOFTMAX = '''
import cupy as cp
import torch
import torch.nn as nn

_SRC = r"""
extern "C" __global__ void softmax_rows(const float* x, float* y, int cols) {
    int row = blockIdx.x;
    const float* xr = x + (long)row * cols;
    float* yr = y + (long)row * cols;
    float m = -INFINITY;
    for (int c = 0; c < cols; ++c) m = fmaxf(m, xr[c]);
    float s = 0.f;
    for (int c = 0; c < cols; ++c) s += expf(xr[c] - m);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = expf(xr[c] - m) / s;
}
"""
_kernel = cp.RawKernel(_SRC, "softmax_rows")


class ModelNew(nn.Module):
    def forward(self, x):
        x = x.contiguous()
        y = torch.empty_like(x)
        stream = cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)
        with stream:
            _kernel((x.shape[0],), (128,), (cp.from_dlpack(x), cp.from_dlpack(y), cp.int32(x.shape[1])))
        return y
'''


@pytest.mark.gpu
def test_cupy_candidate_is_judged_and_its_launches_counted() -> None:
    pytest.importorskip("cupy")
    broken = CUPY_SOFTMAX.replace("fmaxf(m, xr[c])", "fmaxf(m, xr[c]")  # a CUDA syntax error
    launch = "_kernel((x.shape[0],), (128,), (cp.from_dlpack(x), cp.from_dlpack(y), cp.int32(x.shape[1])))"
    pure = CUPY_SOFTMAX.replace(launch, "y.copy_(torch.softmax(x, -1))")  # compiled, never launched
    assert pure != CUPY_SOFTMAX
    good, bad, none = _gpu_eval([("cupy", CUPY_SOFTMAX), ("cupy_broken", broken), ("cupy_unused", pure)], 60)
    assert good.verdict is Verdict.CORRECT, good.reason
    assert all(s.launches and s.launches >= 1 for s in good.sizes)
    assert bad.verdict is Verdict.COMPILE_ERROR and "error" in bad.reason, bad.reason
    assert none.verdict is Verdict.REJECTED, none.reason


@pytest.mark.gpu
def test_gpu_decoys_fail_however_the_work_is_reached() -> None:
    """PyTorch on the GPU (poisoned in the dispatcher), a copy to the host for NumPy (a host read,
    charged at the CUDA key), and a CuPy library routine (a kernel neither it nor PyTorch wrote)."""
    torch_decoy = HEADER + "\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        softmax(x[:1])\n" \
        "        return torch.softmax(x, -1)\n"
    host = HEADER + "\nimport numpy as np\n\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n" \
        "        softmax(x[:1])\n        a = x.cpu()\n        e = (a - a.amax(-1, keepdim=True)).exp()\n" \
        "        return (e / e.sum(-1, keepdim=True)).to(x.device)\n"
    results = _gpu_eval([("torch", torch_decoy), ("host", host)])
    for r in results:
        assert r.verdict is Verdict.REJECTED and "ran in PyTorch" in r.reason, (r.candidate, r.reason)
    pytest.importorskip("cupy")
    cupy_lib = HEADER + "\nimport cupy as cp\n\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n" \
        "        softmax(x[:1])\n        a = cp.from_dlpack(x)\n" \
        "        e = cp.exp(a - a.max(axis=-1, keepdims=True))\n" \
        "        return torch.from_dlpack(e / e.sum(axis=-1, keepdims=True))\n"
    (r,) = _gpu_eval([("cupy_library", cupy_lib)], 60)
    assert r.verdict is Verdict.REJECTED and "kernels it did not write" in r.reason, r.reason


@pytest.mark.gpu
def test_calibration_is_keyed_by_gpu_model(tmp_path: Path) -> None:
    from kernelevo.profile.calibrate import load, measure, save
    from kernelevo.profile.gpu import gpu_fingerprint

    cal = measure()
    assert cal.key == gpu_fingerprint().key and cal.copy_bytes_per_s > 1e11
    assert cal.flops_per_s["fp16"] > cal.flops_per_s["fp32"]
    save(cal, tmp_path)
    assert load(cal.key, tmp_path) == cal
