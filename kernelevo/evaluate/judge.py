"""Verdicts from what a worker reported and what the plan expected: pure functions, run in the
controller. Every reason names the defect in words a model can act on."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kernelevo.evaluate import protocol as P
from kernelevo.evaluate.compare import (
    Comparison,
    Tolerance,
    compare_outputs,
    compare_stress,
    compare_tensor,
    describe_mismatch,
)
from kernelevo.evaluate.plan import PlannedCall, SizePlan
from kernelevo.evaluate.verdict import Verdict

STRESS_KINDS = frozenset({"magnitude", "offset"})


@dataclass(frozen=True)
class Judged:
    """One call's judgement: ``verdict`` None means it passed."""

    verdict: Verdict | None
    reason: str = ""
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0

    @property
    def ok(self) -> bool:
        return self.verdict is None


def share_text(work: float, reference_work: float) -> str:
    """``work`` as a share of the reference's, for a reason ("99%")."""
    if reference_work <= 0:
        return "PyTorch compute where the reference does none"
    pct = 100.0 * work / reference_work
    return f"{pct:.0f}%" if pct < 1000 else f"{pct / 100:.0f}x"


def torch_reason(out_work: float, ops: tuple[str, ...], sp: SizePlan, share: float) -> str:
    """Why a call whose PyTorch compute was poisoned is refused."""
    names = ", ".join(ops) if ops else "PyTorch ops"
    return (f"{share_text(out_work, sp.work)} of the reference's work ran in PyTorch ({names}); PyTorch compute "
            f"beyond {share:.0%} of it returns garbage in the judge, so the output was wrong: do the work in your "
            "own kernels")


def judge_call(
    planned: PlannedCall, out: P.Output, sp: SizePlan, atol: float | None, rtol: float | None, share: float,
    calls_before: int,
) -> Judged:
    """Judge one checked call against its plan."""
    where = f"size {sp.label}, {_kind_text(planned)}"
    if out.input_digest != planned.digest:
        return Judged(Verdict.REJECTED, f"{where}: forward modified its inputs; inputs are read-only")
    if planned.kind in STRESS_KINDS:
        c = compare_stress(list(out.outputs), list(planned.expected), list(planned.truth) if planned.truth else None,
                           atol=atol, rtol=rtol, note=planned.note,
                           sensitivity=list(planned.sensitivity) if planned.sensitivity else None)
    else:
        c = compare_outputs(list(out.outputs), list(planned.expected), atol, rtol)
    if not c.ok and out.poisoned:
        lead = f"correct for {calls_before} calls, then " if calls_before else ""
        if planned.kind == "extra":
            lead = "correct on the declared sizes, but at this one, outside them, "
        return Judged(Verdict.REJECTED, f"{where}: {lead}{torch_reason(out.torch_work, out.torch_ops, sp, share)}",
                      c.max_abs_err, c.max_rel_err)
    if out.launches == 0:
        return Judged(Verdict.REJECTED, f"{where}: forward launched no kernel of its own (a PyTorch path or a "
                      "fallback ran instead)")
    if c.ok:
        return Judged(None, "", c.max_abs_err, c.max_rel_err)
    detail = c.reason
    if planned.kind not in STRESS_KINDS and len(out.outputs) == len(planned.expected):
        for a, e in zip(out.outputs, planned.expected):  # noqa: B905 - the lengths are equal here
            pattern = describe_mismatch(a, e, Tolerance.for_dtype(e.dtype, atol, rtol))
            if pattern:
                detail = f"{pattern}; {c.reason}"
                break
    if "NaN where the reference has none" in c.reason:
        detail += " (computed, or never written: checked calls get fresh memory filled with NaN)"
    if planned.kind == "extra":
        detail = f"correct on the declared sizes but wrong at this one, outside them: {detail}"
    elif planned.kind == "weights B":
        detail = f"wrong once a second set of weights was loaded (a weight cached or ignored?): {detail}"
    if out.dtypes and any(d in ("float16", "bfloat16") for d in out.dtypes) and \
            all(e.dtype == torch.float32 for e in planned.expected):
        detail += f" (your kernels received {', '.join(out.dtypes)} tensors in a float32 problem)"
    return Judged(Verdict.INCORRECT, f"{where}: {detail}", c.max_abs_err, c.max_rel_err)


def _kind_text(planned: PlannedCall) -> str:
    kinds = {"plain": "draw", "rescaled": "draw", "magnitude": "stress draw", "offset": "stress draw",
             "weights B": "draw", "extra": "draw (extra size)"}
    text = kinds.get(planned.kind, planned.kind)
    return f"{text} ({planned.note})" if planned.note else text


def judge_recheck(first: dict[int, tuple[torch.Tensor, ...]], now: dict[int, tuple[torch.Tensor, ...]],
                  label: str) -> str | None:
    """An output must not change after later calls: returned buffers are the caller's."""
    for i, before in sorted(first.items()):
        after = now.get(i)
        if after is None or len(after) != len(before):
            return f"size {label}: call {i}'s output is gone after later calls"
        for a, b in zip(after, before):  # noqa: B905 - the lengths are equal here
            if a.shape != b.shape or a.dtype != b.dtype or not torch.equal(
                    torch.nan_to_num(a.double(), nan=1.5e300) if a.is_floating_point() else a,
                    torch.nan_to_num(b.double(), nan=1.5e300) if b.is_floating_point() else b):
                return (f"size {label}: an earlier output changed after a later call: the buffer is reused; return "
                        "a new tensor from every call")
    return None


def judge_state(now: dict[str, torch.Tensor], sp: SizePlan, atol: float | None, rtol: float | None,
                expected_state: dict[str, torch.Tensor] | None = None, when: str = "the calls") -> str | None:
    """Parameters must be what was loaded; buffers what the reference's own updates make them."""
    for name, expected in (expected_state if expected_state is not None else sp.final_state).items():
        actual = now.get(name)
        if actual is None:
            return f"size {sp.label}: state_dict entry {name} is gone after {when}"
        if sp.stateful:
            c = compare_tensor(actual, expected, Tolerance.for_dtype(expected.dtype, atol, rtol),
                               f"{name} after {when}")
            if not c.ok:
                return f"size {sp.label}: {c.reason} (the reference updates it on every call)"
        elif actual.shape != expected.shape or actual.dtype != expected.dtype or not torch.equal(actual, expected):
            return (f"size {sp.label}: {name} changed during forward (parameters and buffers are read-only; keep "
                    "transformed copies elsewhere)")
    return None


def judge_timed(
    outputs: dict[int, tuple[torch.Tensor, ...]], expected: dict[int, tuple[torch.Tensor, ...]], sp: SizePlan,
    atol: float | None, rtol: float | None, calls_before: int, stressed: dict[int, PlannedCall] | None = None,
) -> str | None:
    """Timed calls are checked like any other, after the block (a reused buffer, skipped work or
    a cached answer shows here); the stress draws hidden among them like the checked ones."""
    stressed = stressed or {}
    for i in sorted({*expected, *stressed}):
        got = outputs.get(i)
        if got is None:
            return f"size {sp.label}: timed call {i}'s output is gone"
        if i in stressed:
            s = stressed[i]
            c: Comparison = compare_stress(list(got), list(s.expected), list(s.truth) if s.truth else None,
                                           atol=atol, rtol=rtol, note=s.note,
                                           sensitivity=list(s.sensitivity) if s.sensitivity else None)
            if not c.ok:
                return (f"size {sp.label}: a timed call on a stress draw is wrong after {calls_before} correct calls "
                        f"({c.reason}); timed calls include stress draws, judged as the checked ones are")
            continue
        c = compare_outputs(list(got), list(expected[i]), atol, rtol)
        if not c.ok:
            return (f"size {sp.label}: a timed call's output is wrong after {calls_before} correct calls ({c.reason}); "
                    "every call is checked, timed ones included")
    return None


def foreign_reason(out: P.Output | P.Timed, share: float) -> str | None:
    """GPU kernels the candidate did not write (library kernels reached without PyTorch)."""
    if out.foreign and out.foreign_share > share:
        return (f"{out.foreign_share:.0%} of the GPU time ran in kernels it did not write "
                f"({', '.join(out.foreign[:3])}); write them yourself")
    return None


def torch_share(work: float, reference_work: float) -> float:
    return work / reference_work if reference_work > 0 else (math.inf if work > 0 else 0.0)
