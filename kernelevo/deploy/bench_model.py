"""``kernelevo bench-model``: a user's model end to end, before and after its exported kernels are
patched in.

On a GPU both versions are timed in alternating rounds (``triton.testing.do_bench``, median of
each round, the speedup the median of the rounds' ratios, so a clock that drifts during the run
moves both sides alike), and each swap is timed alone so the report says which ones contributed.
On a CPU only the outputs are compared — Triton's interpreter times a Python loop, not a kernel —
and the report says timing needs a GPU.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kernelevo.deploy.load import REFERENCE
from kernelevo.deploy.patch import PatchReport, op_dirs, patch, unpatch
from kernelevo.evaluate.compare import compare_outputs
from kernelevo.problem import ProblemError, flatten_outputs, load_problem
from kernelevo.settings import triton_interpreted

ROUNDS = 5


class BenchError(ValueError):
    """A model file that cannot be built or run; one line."""


@dataclass(frozen=True)
class SwapTiming:
    where: str
    op: str
    what: str
    kernel_calls: int  # calls of this op's replacements in one forward that its kernels answered
    reference_calls: int  # ... and that the reference answered (unverified shapes, dtypes, devices)
    speedup_alone: float | None  # the model with only this op patched in, against the original (GPU)


@dataclass(frozen=True)
class BenchReport:
    model_file: str
    device: str
    outputs_match: bool
    mismatch: str  # the comparison's reason when they do not
    max_abs_err: float
    original_ms: float | None
    patched_ms: float | None
    speedup: float | None
    swaps: list[SwapTiming] = field(default_factory=list)
    not_swapped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _build(model_file: Path, device: str, overrides: Mapping[str, Any]) -> tuple[torch.nn.Module, list[Any]]:
    try:
        problem = load_problem(model_file, overrides, device=device)
    except ProblemError as e:
        raise BenchError(str(e)) from None
    try:
        ns = problem.namespace(problem.sizes[0], keep=True)
        torch.manual_seed(0)
        model = ns.Model(*ns.get_init_inputs()).to(device).eval()
        inputs = [x.to(device) if isinstance(x, torch.Tensor) else x for x in ns.get_inputs()]
    except Exception as e:  # noqa: BLE001 - the user's file: one line, whatever it raised
        raise BenchError(f"{model_file}: building the model failed: {type(e).__name__}: {e}") from None
    return model, inputs


def _time(fn: Callable[[], Any]) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def _rounds(model: torch.nn.Module, inputs: list[Any], ops: list[Path], chains: bool) -> tuple[float, float, float]:
    """Median times unpatched and patched with ``ops``, and the median of the rounds' ratios; the
    rounds alternate, and patching happens between timings, never inside one."""
    def call() -> Any:
        return model(*inputs)
    before, after = [], []
    for _ in range(ROUNDS):
        before.append(_time(call))
        patch(model, ops, chains=chains)
        try:
            after.append(_time(call))
        finally:
            unpatch(model)
    ratios = [b / a for b, a in zip(before, after, strict=True)]
    return statistics.median(before), statistics.median(after), statistics.median(ratios)


def bench_model(model_file: Path, kernels: list[Path] | None = None, *, device: str = "cpu",
                overrides: Mapping[str, Any] | None = None, chains: bool = False) -> BenchReport:
    """Run (and on a GPU time) ``model_file``'s model before and after patching in ``kernels``
    (op folders; default every export under ./kernels)."""
    model, inputs = _build(model_file, device, overrides or {})
    ops = op_dirs(kernels)
    notes: list[str] = []
    with torch.no_grad():
        try:
            expected = model(*inputs)
        except Exception as e:  # noqa: BLE001
            raise BenchError(f"{model_file}: Model.forward raised {type(e).__name__}: {e}") from None
        report: PatchReport = patch(model, ops, chains=chains)
        try:
            got = model(*inputs)
        finally:
            unpatch(model)
        cmp = compare_outputs(list(flatten_outputs(got)), list(flatten_outputs(expected)))
        swapped_ops = sorted({s.op for s in report.swapped})
        original_ms = patched_ms = speedup = None
        alone: dict[str, float] = {}
        if device == "cuda" and report.swapped:
            original_ms, patched_ms, speedup = _rounds(model, inputs, ops, chains)
            for op in swapped_ops:
                folder = next((p for p in ops if _op_name(p) == op), None)
                if folder is not None:
                    alone[op] = _rounds(model, inputs, [folder], chains)[2] if len(swapped_ops) > 1 else speedup
        elif device != "cuda":
            notes.append("timing needs a GPU: on a CPU the kernels run in Triton's interpreter, so only the "
                         "outputs are compared")
            if not triton_interpreted():
                notes.append("Triton's interpreter is off, so on the CPU every op ran its reference (set "
                             "TRITON_INTERPRET=1 before Triton is imported to run the CPU exports)")
    calls = {}
    for r in report.replacements:
        calls.setdefault(r.op, [0, 0])
        calls[r.op][0] += sum(v for k, v in r.calls.items() if k != REFERENCE)
        calls[r.op][1] += r.calls[REFERENCE]
    swaps = [SwapTiming(s.where, s.op, s.what, *calls.get(s.op, [0, 0]), alone.get(s.op)) for s in report.swapped]
    if not report.swapped:
        notes.append("nothing was swapped in: no exported op matches this model (see not_swapped)")
    return BenchReport(str(model_file), device, cmp.ok, cmp.reason, cmp.max_abs_err, original_ms, patched_ms, speedup,
                       swaps, [f"{n.where} ({n.op}): {n.reason}" for n in report.not_swapped], notes)


def _op_name(op_dir: Path) -> str:
    try:
        return load_problem(op_dir / "problem.py", device="cpu").name
    except ProblemError:
        return op_dir.name
