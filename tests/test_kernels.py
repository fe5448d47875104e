"""Shipped ops: every ``kernels/<op>/seed.py`` matches its ``problem.py`` reference.

Without CUDA the seeds run in Triton's interpreter, so the sizes here are the problems' small
``CPU_SIZES`` plus a few odd shapes (one element, one past a power of two, several tiles).
Reference parameters are randomised first: a kernel that ignores a weight initialised to
ones (or a bias to zeros) must not pass by luck.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import itertools
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first `import triton` (in a seed)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
KERNELS = Path(__file__).parents[1] / "kernels"
OPS = (
    "softmax", "layernorm", "rmsnorm", "gelu", "matmul_bias_gelu", "sum_reduction", "cross_entropy", "matmul",
)

# fp32: KernelBench's 1e-4 (fp32 eps is 1.2e-7; the small sizes here stay far below it).
FP32_TOL = {"atol": 1e-4, "rtol": 1e-4}
# Low precision outputs are compared with the fp32 reference (on the upcast input) cast back:
#  fp16: eps 9.8e-4, so 5e-3 is ~5 ulps at 1.0;
#  bf16: eps 7.8e-3, so 2e-2 is ~2.5 ulps at 1.0 (the interpreter rounds fp32 -> bf16 toward
#        zero where a GPU rounds to nearest: up to 1 ulp more, still inside).
LOW_PRECISION_TOL = {
    torch.float16: {"atol": 5e-3, "rtol": 5e-3},
    torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2},
}
LOW_PRECISION_OPS = ("softmax", "layernorm", "rmsnorm", "gelu", "sum_reduction", "cross_entropy")

_ROWS = [{"batch_size": 1, "dim": 1}, {"batch_size": 3, "dim": 129}, {"batch_size": 2, "dim": 8193}]
_TILES = [(1, 1, 1), (257, 40, 130), (5, 129, 3)]  # (257, 130): several tiles both ways, grouped order
EXTRA_SIZES: dict[str, list[dict[str, int]]] = {
    "softmax": _ROWS,
    "layernorm": _ROWS,
    "rmsnorm": _ROWS,
    "sum_reduction": _ROWS,
    "cross_entropy": [{"batch_size": r["batch_size"], "num_classes": r["dim"]} for r in _ROWS],
    # 1024 fills exactly one block (no masked lane); 3 * 1025 leaves a partly masked fourth.
    "gelu": [{"batch_size": 1, "dim": 1}, {"batch_size": 1, "dim": 1024}, {"batch_size": 3, "dim": 1025}],
    "matmul": [{"M": m, "K": k, "N": n} for m, k, n in _TILES],
    "matmul_bias_gelu": [{"batch_size": m, "in_features": k, "out_features": n} for m, k, n in _TILES],
}

_ids = itertools.count()


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def problem(op: str, size: dict[str, Any] | None = None) -> ModuleType:
    """A fresh copy of ``op``'s problem module with ``size``'s globals set (so sizes never leak)."""
    mod = _load(KERNELS / op / "problem.py", f"kernels_{op}_problem_{next(_ids)}")
    for k, v in (size or {}).items():
        assert hasattr(mod, k), f"{op}: size sets {k!r}, which is not a global of problem.py"
        setattr(mod, k, v)
    return mod


@functools.cache
def seed(op: str) -> ModuleType:
    return _load(KERNELS / op / "seed.py", f"kernels_{op}_seed")


def build(op: str, size: dict[str, Any]) -> tuple[torch.nn.Module, torch.nn.Module, list[Any]]:
    """Reference with random parameters, the seed's ModelNew holding the same state, and seeded inputs."""
    prob = problem(op, size)
    init = prob.get_init_inputs()
    torch.manual_seed(0)
    ref = prob.Model(*init)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_()
    new = seed(op).ModelNew(*init)
    new.load_state_dict(ref.state_dict())  # strict: same keys and shapes
    torch.manual_seed(1)
    inputs = [t.to(DEVICE) if isinstance(t, torch.Tensor) else t for t in prob.get_inputs()]
    return ref.to(DEVICE), new.to(DEVICE), inputs


def run(model: torch.nn.Module, inputs: list[Any]) -> torch.Tensor:
    with torch.no_grad():
        return model(*inputs)


def check(out: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> None:
    assert out.shape == expected.shape, f"shape {tuple(out.shape)}, expected {tuple(expected.shape)}"
    assert out.dtype == expected.dtype, f"dtype {out.dtype}, expected {expected.dtype}"
    torch.testing.assert_close(out, expected, atol=atol, rtol=rtol)


CPU_CASES = [(op, i, size) for op in OPS for i, size in enumerate(problem(op).CPU_SIZES)]
EXTRA_CASES = [(op, size) for op in OPS for size in EXTRA_SIZES[op]]
PARAMS = [(op, name) for op in OPS for name in build(op, problem(op).CPU_SIZES[0])[0].state_dict()]


def _size_id(size: dict[str, Any]) -> str:
    return "x".join(str(v) for v in size.values())


def test_every_shipped_op_is_covered() -> None:
    assert sorted(p.parent.name for p in KERNELS.glob("*/problem.py")) == sorted(OPS)
    assert all((KERNELS / op / "seed.py").is_file() for op in OPS)


@pytest.mark.parametrize("op", OPS)
def test_problem_sizes(op: str) -> None:
    from kernelevo.problem import load_problem

    prob = problem(op)
    assert len(prob.CPU_SIZES) == 3 and len(prob.SIZES) >= 3
    # The evaluator's loader accepts the sizes and picks CPU_SIZES on a CPU, SIZES on a GPU.
    assert list(load_problem(KERNELS / op / "problem.py", device="cpu").sizes) == prob.CPU_SIZES
    assert list(load_problem(KERNELS / op / "problem.py", device="cuda").sizes) == prob.SIZES
    # Masks only get exercised by a dimension that is not a power of two.
    dims = [v for s in prob.CPU_SIZES for v in s.values() if isinstance(v, int)]
    assert any(d & (d - 1) for d in dims), f"{op}: every CPU size is a power of two"


@pytest.mark.parametrize(("op", "i", "size"), CPU_CASES, ids=[f"{op}-cpu{i}" for op, i, _ in CPU_CASES])
def test_seed_matches_reference(op: str, i: int, size: dict[str, Any]) -> None:
    ref, new, inputs = build(op, size)
    check(run(new, inputs), run(ref, inputs), **FP32_TOL)


@pytest.mark.parametrize(("op", "size"), EXTRA_CASES, ids=[f"{op}-{_size_id(s)}" for op, s in EXTRA_CASES])
def test_seed_matches_reference_odd_shapes(op: str, size: dict[str, Any]) -> None:
    ref, new, inputs = build(op, size)
    check(run(new, inputs), run(ref, inputs), **FP32_TOL)


@pytest.mark.parametrize("op", OPS)
def test_non_contiguous_inputs(op: str) -> None:
    """Column-major copies of the 2-D float inputs: same values, other strides."""
    ref, new, inputs = build(op, problem(op).CPU_SIZES[0])
    strided = [
        t.t().contiguous().t() if isinstance(t, torch.Tensor) and t.is_floating_point() and t.ndim == 2 else t
        for t in inputs
    ]
    assert any(isinstance(t, torch.Tensor) and not t.is_contiguous() for t in strided)
    check(run(new, strided), run(ref, inputs), **FP32_TOL)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("op", LOW_PRECISION_OPS)
def test_low_precision_inputs(op: str, dtype: torch.dtype) -> None:
    ref, new, inputs = build(op, problem(op).CPU_SIZES[1])
    low = [t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in inputs]
    up = [t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in low]
    check(run(new, low), run(ref, up).to(dtype), **LOW_PRECISION_TOL[dtype])


def test_layernorm_large_mean() -> None:
    """|mean| / std = 1e4: variance as E[x^2] - mean^2 cancels to garbage (errors ~1e2) here;
    from (x - mean) it stays within ~2e-3 of PyTorch, whose own fp32 error is ~1.5e-3."""
    ref, new, inputs = build("layernorm", problem("layernorm").CPU_SIZES[1])
    shifted = [1000.0 + 0.1 * inputs[0]]
    check(run(new, shifted), run(ref, shifted), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("op", OPS)
def test_repeat_calls_are_bitwise_identical(op: str) -> None:
    """Deterministic: no atomics or other order-dependent accumulation across programs."""
    _, new, inputs = build(op, problem(op).CPU_SIZES[1])
    assert torch.equal(run(new, inputs), run(new, inputs))


@pytest.mark.parametrize("op", OPS)
def test_seed_structure(op: str) -> None:
    src = (KERNELS / op / "seed.py").read_text()
    kernels = [
        node.name
        for node in ast.walk(ast.parse(src))
        if isinstance(node, ast.FunctionDef)
        and any(ast.unparse(d) in ("triton.jit", "jit") for d in node.decorator_list)
    ]
    assert any(k.startswith("_") and k.endswith("_kernel") and len(k) > len("__kernel") for k in kernels), (
        f"{op}/seed.py has no @triton.jit function named _<name>_kernel (found {kernels})"
    )

    prob, mod = problem(op, problem(op).CPU_SIZES[0]), seed(op)
    params = list(inspect.signature(prob.Model.__init__).parameters)
    assert list(inspect.signature(mod.ModelNew.__init__).parameters) == params
    init = prob.get_init_inputs()
    shapes = {k: tuple(v.shape) for k, v in prob.Model(*init).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in mod.ModelNew(*init).state_dict().items()} == shapes


@pytest.mark.parametrize("op", OPS)
def test_forward_calls_only_glue_ops(op: str) -> None:
    """PyTorch only allocates, reshapes and copies; all arithmetic is in the seed's kernels."""
    from kernelevo.work import WorkRecorder

    _, new, inputs = build(op, problem(op).CPU_SIZES[0])
    rec = WorkRecorder()
    with torch.no_grad(), rec:
        new(*inputs)
    assert not rec.compute_ops, f"{op}: forward calls PyTorch compute ops {sorted(rec.compute_ops)}"


@pytest.mark.parametrize(("op", "name"), PARAMS, ids=[f"{op}-{name}" for op, name in PARAMS])
def test_wrong_parameter_changes_output(op: str, name: str) -> None:
    """Perturbing one parameter of ModelNew alone must move its output off the reference."""
    ref, new, inputs = build(op, problem(op).CPU_SIZES[1])
    expected = run(ref, inputs)
    check(run(new, inputs), expected, **FP32_TOL)
    with torch.no_grad():
        p = new.get_parameter(name)
        p.add_(torch.randn_like(p))
    diff = (run(new, inputs) - expected).abs()
    assert bool((diff > FP32_TOL["atol"] + FP32_TOL["rtol"] * expected.abs()).any()), (
        f"{op}: the output ignores {name}"
    )
