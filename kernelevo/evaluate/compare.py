"""Comparing a candidate's outputs with the reference's, outside the candidate's process.

Tolerances are per dtype and strict on purpose: a kernel that accumulates in fp32
and rounds once lands within one or two ulps of PyTorch, so we allow a few ulps for
a different summation order and nothing more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# (atol, rtol) per output dtype.
#  fp32: KernelBench's current 1e-4 (it was 1e-2 until Nov 2025, loose enough for TF32
#        and fp16 inside an "fp32" kernel to pass); fp32 eps is 1.2e-7, so this still
#        leaves ~800 ulps for reordered reductions over long rows.
#  fp16: eps 9.8e-4; 5e-3 is ~5 ulps at 1.0.
#  bf16: eps 7.8e-3; 2e-2 is ~2.5 ulps at 1.0.
#  fp64: eps 2.2e-16; 1e-7 is loose for fp64 but strict enough to catch fp32 maths.
DEFAULT_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-7, 1e-7),
    torch.complex128: (1e-7, 1e-7),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (5e-3, 5e-3),
    torch.bfloat16: (2e-2, 2e-2),
}

# The absolute tolerance is relative to the output's scale, both ways:
# - Capped at this fraction of the largest reference magnitude: an atol larger than the
#   output itself lets an all-zeros kernel pass (Sakana's AI CUDA Engineer was caught so).
# - Multiplied by the reference's RMS when that exceeds 1: a dot product's rounding error
#   scales with its terms, not its result, so an element of a K=4096 matmul that lands near
#   zero carries an error of ~1e-4 x RMS under any correct fp32 summation order. TF32 and
#   fp16 errors stay ~10x above this (~1e-3 x RMS), so the downgrade is still caught.
ATOL_SCALE_CAP = 1e-2


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float

    @staticmethod
    def for_dtype(
        dtype: torch.dtype, atol: float | None = None, rtol: float | None = None
    ) -> Tolerance:
        """The default tolerance of ``dtype``; ``atol``/``rtol`` (from a problem file) win."""
        if not (dtype.is_floating_point or dtype.is_complex):
            return Tolerance(0.0, 0.0)
        d_atol, d_rtol = DEFAULT_TOLERANCES.get(dtype, DEFAULT_TOLERANCES[torch.float32])
        return Tolerance(d_atol if atol is None else atol, d_rtol if rtol is None else rtol)


@dataclass(frozen=True)
class Comparison:
    ok: bool
    reason: str  # empty when ok
    max_abs_err: float
    max_rel_err: float


def _finite_max(t: torch.Tensor) -> float:
    return float(t.max()) if t.numel() else 0.0


def compare_tensor(
    actual: object, expected: torch.Tensor, tol: Tolerance, what: str = "output"
) -> Comparison:
    """Judge one output tensor. ``actual`` comes from the candidate and may be anything."""
    nan = math.nan
    if type(actual) is not torch.Tensor:
        return Comparison(False, f"{what} is {type(actual).__name__}, expected a torch.Tensor", nan, nan)
    if actual.shape != expected.shape:
        return Comparison(
            False, f"{what} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}", nan, nan
        )
    if actual.dtype != expected.dtype:
        return Comparison(False, f"{what} has dtype {actual.dtype}, expected {expected.dtype}", nan, nan)
    a = actual.detach().cpu()
    e = expected.detach().cpu()
    if e.is_complex():  # real and imaginary parts, each judged as a float
        a, e = torch.view_as_real(a.resolve_conj()), torch.view_as_real(e.resolve_conj())
    if not e.dtype.is_floating_point:
        diff = (a.to(torch.float64) - e.to(torch.float64)).abs()
        mismatched = int((a != e).sum())
        max_abs = _finite_max(diff)
        if mismatched:
            return Comparison(False, f"{what}: {mismatched} of {e.numel()} elements differ", max_abs, nan)
        return Comparison(True, "", 0.0, 0.0)

    a64, e64 = a.to(torch.float64), e.to(torch.float64)
    a_nan, e_nan = torch.isnan(a64), torch.isnan(e64)
    if bool((a_nan != e_nan).any()):
        n = int((a_nan & ~e_nan).sum())
        if n:
            return Comparison(False, f"{what} has {n} NaN where the reference has none", nan, nan)
        return Comparison(False, f"{what} is finite where the reference is NaN", nan, nan)
    a_inf, e_inf = torch.isinf(a64), torch.isinf(e64)
    if bool((a_inf != e_inf).any()) or bool((a64[e_inf] != e64[e_inf]).any()):
        return Comparison(False, f"{what} has Inf where the reference has none (or the opposite sign)", nan, nan)

    finite = ~(e_nan | e_inf)
    a_f, e_f = a64[finite], e64[finite]
    diff = (a_f - e_f).abs()
    max_abs = _finite_max(diff)
    # Relative error only means something where the reference is not ~0.
    rel = diff / e_f.abs().clamp_min(max(tol.atol, 1e-12))
    max_rel = _finite_max(rel)
    scale = _finite_max(e_f.abs())
    rms = float(e_f.square().mean().sqrt()) if e_f.numel() else 0.0
    atol = min(tol.atol * max(1.0, rms), ATOL_SCALE_CAP * scale)
    bad = diff > atol + tol.rtol * e_f.abs()
    n_bad = int(bad.sum())
    if n_bad:
        idx = int(torch.nonzero(bad.flatten())[0])
        reason = (
            f"{what}: {n_bad} of {e.numel()} elements outside atol={atol:.1e} rtol={tol.rtol:.1e} "
            f"(max abs err {max_abs:.3e}; first at flat index {idx}: got {float(a_f[idx]):.6g}, "
            f"expected {float(e_f[idx]):.6g})"
        )
        return Comparison(False, reason, max_abs, max_rel)
    return Comparison(True, "", max_abs, max_rel)  # finite: no NaN or Inf gets here, divisors >= 1e-12


def compare_outputs(
    actual: list[object],
    expected: list[torch.Tensor],
    atol: float | None = None,
    rtol: float | None = None,
) -> Comparison:
    """Judge a flattened list of outputs; the worst error over all of them is reported."""
    if len(actual) != len(expected):
        return Comparison(False, f"forward returned {len(actual)} tensors, expected {len(expected)}", math.nan,
                          math.nan)
    worst_abs = worst_rel = 0.0
    for i, e in enumerate(expected):  # the lengths are equal
        what = "output" if len(expected) == 1 else f"output[{i}]"
        a = actual[i]
        c = compare_tensor(a, e, Tolerance.for_dtype(e.dtype, atol, rtol), what)
        if not c.ok:
            return c
        worst_abs, worst_rel = max(worst_abs, c.max_abs_err), max(worst_rel, c.max_rel_err)
    return Comparison(True, "", worst_abs, worst_rel)


def describe_mismatch(actual: torch.Tensor, expected: torch.Tensor, tol: Tolerance) -> str:
    """Where a wrong output is wrong, when that says more than a count: the columns (or rows)
    beyond some index, everything, or nothing but non-finite values. Empty when no pattern."""
    if type(actual) is not torch.Tensor or actual.shape != expected.shape or actual.dim() == 0:
        return ""
    a, e = actual.detach().cpu().to(torch.float64), expected.detach().cpu().to(torch.float64)
    scale = float(e[torch.isfinite(e)].abs().max()) if bool(torch.isfinite(e).any()) else 1.0
    bad = ~torch.isclose(a, e, rtol=tol.rtol, atol=min(tol.atol, ATOL_SCALE_CAP * scale), equal_nan=True)
    if not bool(bad.any()):
        return ""
    if bool(bad.all()) and bad.numel() > 1:
        return "every element is wrong"
    for dim, what in ((-1, "columns" if a.dim() > 1 else "elements"), (0, "rows")):
        if a.dim() < (2 if dim == 0 else 1):
            continue
        # Per index along ``dim``: the share of its elements that are wrong.
        wrong = bad.transpose(dim, -1).reshape(-1, bad.shape[dim]).to(torch.float64).mean(0)
        first = int(torch.nonzero(wrong)[0])
        # Right before ``first``, (nearly) all wrong after it: a block or a grid that stops short.
        if first > 0 and float(wrong[first:].mean()) >= 0.9:
            lines = a.transpose(dim, -1)
            tail = lines[..., first:]
            const = tail.flatten()[0]
            unchanged = "never written?" if bool((tail == const).all()) else "wrong"
            if unchanged != "wrong":
                # An unwritten element can match by chance (a reference value within atol of the fill):
                # the unwritten run of identical values starts where the kernel stopped.
                while first > 1 and bool((lines[..., first - 1] == const).all()):
                    first -= 1
            return f"{what} {first} and beyond are {unchanged} (the first {first} are right)"
    return ""

# A stable float32 algorithm's error over the exact result's movement under one float32 rounding
# of the inputs; reductions add a rounding per step. Measured on the shipped LayerNorm's CPU sizes
# (3 seeds, 40 stress draws): Inductor's Welford up to 23x, PyTorch's own up to 3.6x, a one-pass
# variance 370-540x even at the smallest offsets (~150). 64 sits between them.
SENSITIVITY_FACTOR = 64.0


def compare_stress(
    actual: list[object], expected: list[torch.Tensor], truth: list[torch.Tensor] | None,
    *, atol: float | None = None, rtol: float | None = None, note: str,
    sensitivity: list[float] | None = None,
) -> Comparison:
    """Judge a stress draw (inputs at large magnitude or offset). Elements where the reference
    itself overflowed are not compared. Against the float64 ``truth``, an output may be off by
    the tolerance plus the larger of four times the error PyTorch's own float32 result has there
    and ``SENSITIVITY_FACTOR`` times the problem's ``sensitivity`` at these inputs (how far the
    exact result moves when the inputs are rounded as float32 rounds): as accurate as a stable
    float32 algorithm, whichever one. PyTorch's own error is one summation order's luck: a
    Welford LayerNorm (torch.compile's own) measured up to 15x it at an offset of 900; a one-pass
    variance or an exp without the max subtracted is far past either allowance."""
    nan = math.nan
    if len(actual) != len(expected):
        return Comparison(False, f"forward returned {len(actual)} tensors, expected {len(expected)}", nan, nan)
    worst_abs = worst_rel = 0.0
    for i, e in enumerate(expected):  # the lengths are equal
        what = "output" if len(expected) == 1 else f"output[{i}]"
        a = actual[i]
        tol = Tolerance.for_dtype(e.dtype, atol, rtol)
        shape = compare_tensor(a, e, tol, what)  # shape, dtype and type first
        if shape.reason and ("shape" in shape.reason or "dtype" in shape.reason or "expected a torch" in shape.reason):
            return shape
        if not e.dtype.is_floating_point:
            if not shape.ok:
                return shape
            continue
        assert isinstance(a, torch.Tensor)
        a64, e64 = a.detach().cpu().to(torch.float64), e.detach().cpu().to(torch.float64)
        t64 = truth[i].detach().cpu().to(torch.float64) if truth is not None else e64
        finite = torch.isfinite(e64) & torch.isfinite(t64)
        if not bool(finite.any()):
            continue
        a_f, t_f = a64[finite], t64[finite]
        overflow = ~torch.isfinite(a_f)
        if bool(overflow.any()):
            kind = "inf" if bool(torch.isinf(a_f).any()) else "nan"
            return Comparison(False, f"overflow: {kind} at {note} where the reference is finite "
                              f"({int(overflow.sum())} of {int(finite.sum())} elements)", nan, nan)
        ref_err = float((e64[finite] - t_f).abs().max())
        diff = (a_f - t_f).abs()
        scale = float(t_f.abs().max())
        rms = float(t_f.square().mean().sqrt())
        forced = SENSITIVITY_FACTOR * sensitivity[i] if sensitivity is not None and i < len(sensitivity) else 0.0
        allowed = (min(tol.atol * max(1.0, rms), ATOL_SCALE_CAP * scale) + tol.rtol * t_f.abs()
                   + max(4 * ref_err, forced))
        n_bad = int((diff > allowed).sum())
        max_abs = float(diff.max())
        max_rel = float((diff / t_f.abs().clamp_min(1e-12)).max())
        if n_bad:
            return Comparison(False, f"{what} loses precision at {note}: {n_bad} of {int(finite.sum())} elements "
                              f"off by up to {max_abs:.3g} (PyTorch's own float32 error there: {ref_err:.3g})",
                              max_abs, max_rel)
        worst_abs, worst_rel = max(worst_abs, max_abs), max(worst_rel, max_rel)
    return Comparison(True, "", worst_abs, worst_rel)  # finite: diff < 4e38 and the divisor >= 1e-12
