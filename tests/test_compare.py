"""Output comparison: strict per-dtype tolerances, NaN/Inf, and no zeros-under-atol."""

from __future__ import annotations

import pytest
import torch

from kernelevo.evaluate.compare import Tolerance, compare_outputs, compare_tensor

FP32 = Tolerance.for_dtype(torch.float32)


def test_fp32_is_judged_as_fp32() -> None:
    e = torch.linspace(-3, 3, 1000)
    assert compare_tensor(e + 5e-5 * e.abs(), e, FP32).ok  # within rtol 1e-4
    # TF32 keeps 10 mantissa bits: a relative error around 5e-4 must fail
    tf32_like = e * (1 + 5e-4)
    c = compare_tensor(tf32_like, e, FP32)
    assert not c.ok and "outside atol" in c.reason


@pytest.mark.parametrize(
    "dtype,ok_err,bad_err",
    [(torch.float16, 2e-3, 2e-2), (torch.bfloat16, 8e-3, 8e-2)],
)
def test_low_precision_tolerances(dtype: torch.dtype, ok_err: float, bad_err: float) -> None:
    e = torch.linspace(0.5, 2, 256).to(dtype)
    tol = Tolerance.for_dtype(dtype)
    assert compare_tensor((e.float() * (1 + ok_err)).to(dtype), e, tol).ok
    assert not compare_tensor((e.float() * (1 + bad_err)).to(dtype), e, tol).ok


def test_absolute_tolerance_cannot_exceed_the_output_scale() -> None:
    e = torch.randn(1000) * 1e-6
    assert not compare_tensor(torch.zeros_like(e), e, FP32).ok
    assert compare_tensor(e.clone(), e, FP32).ok


def test_nan_and_inf() -> None:
    e = torch.tensor([1.0, float("nan"), float("inf")])
    assert compare_tensor(e.clone(), e, FP32).ok
    assert not compare_tensor(torch.tensor([float("nan"), float("nan"), float("inf")]), e, FP32).ok
    assert not compare_tensor(torch.tensor([1.0, 0.0, float("inf")]), e, FP32).ok
    assert not compare_tensor(torch.tensor([1.0, float("nan"), -float("inf")]), e, FP32).ok


def test_type_shape_dtype_and_integers() -> None:
    e = torch.arange(6).reshape(2, 3)
    assert compare_tensor(e.clone(), e, Tolerance.for_dtype(e.dtype)).ok
    assert not compare_tensor(e + (e == 5), e, Tolerance.for_dtype(e.dtype)).ok
    assert "shape" in compare_tensor(e.reshape(3, 2), e, FP32).reason
    assert "dtype" in compare_tensor(e.float(), e, FP32).reason
    assert "expected a torch.Tensor" in compare_tensor([1, 2], e, FP32).reason


def test_problem_tolerance_overrides_and_output_count() -> None:
    e = [torch.ones(4)]
    assert compare_outputs([torch.ones(4) * 1.01], e, atol=0.0, rtol=0.02).ok
    assert not compare_outputs([torch.ones(4) * 1.01], e).ok
    assert "returned 2 tensors, expected 1" in compare_outputs([torch.ones(4)] * 2, e).reason


def test_absolute_tolerance_follows_large_outputs() -> None:
    # A K=4096 matmul of randn inputs: outputs with RMS ~64; two correct fp32 summation orders
    # differ by ~1e-5 x RMS, while TF32 (10 mantissa bits) is off by ~1e-3 x RMS.
    torch.manual_seed(0)
    a, b = torch.randn(64, 4096, dtype=torch.float64), torch.randn(4096, 64, dtype=torch.float64)
    exact = (a @ b).float()
    fp32 = (a.float() @ b.float())
    def tf32(x: torch.Tensor) -> torch.Tensor:  # keep 10 of fp32's 23 mantissa bits, as TF32 does
        return (x.float().view(torch.int32) & ~0x1FFF).view(torch.float32)

    tf32_like = tf32(a) @ tf32(b)
    assert compare_tensor(fp32, exact, FP32).ok
    assert not compare_tensor(tf32_like, exact, FP32).ok


def _nan(x: float) -> bool:
    return x != x


def test_structural_mismatches_report_exactly() -> None:
    e = torch.ones(3)
    c = compare_tensor([1.0], e, FP32)
    assert (c.ok, c.reason) == (False, "output is list, expected a torch.Tensor") and _nan(c.max_abs_err)
    assert _nan(c.max_rel_err)
    c = compare_tensor(torch.ones(4), e, FP32, "output[1]")
    assert (c.ok, c.reason) == (False, "output[1] has shape (4,), expected (3,)")
    assert _nan(c.max_abs_err) and _nan(c.max_rel_err)
    c = compare_tensor(torch.ones(3, dtype=torch.float64), e, FP32)
    assert (c.ok, c.reason) == (False, "output has dtype torch.float64, expected torch.float32")
    assert _nan(c.max_abs_err) and _nan(c.max_rel_err)


def test_integers_must_match_exactly_and_report_the_worst_difference() -> None:
    e = torch.tensor([1, 5, 9])
    ok = compare_tensor(e.clone(), e, Tolerance.for_dtype(e.dtype))
    assert (ok.ok, ok.reason, ok.max_abs_err, ok.max_rel_err) == (True, "", 0.0, 0.0)
    bad = compare_tensor(torch.tensor([1, 2, 9]), e, Tolerance.for_dtype(e.dtype))
    assert (bad.ok, bad.reason, bad.max_abs_err) == (False, "output: 1 of 3 elements differ", 3.0)
    assert _nan(bad.max_rel_err)
    assert Tolerance.for_dtype(torch.int64) == Tolerance(0.0, 0.0)
    b = torch.tensor([True, False])
    assert not compare_tensor(~b, b, Tolerance.for_dtype(b.dtype)).ok


def test_nan_and_inf_reasons_and_counts() -> None:
    e = torch.tensor([1.0, 2.0, 3.0])
    c = compare_tensor(torch.tensor([float("nan"), float("nan"), 3.0]), e, FP32)
    assert (c.ok, c.reason) == (False, "output has 2 NaN where the reference has none")
    assert _nan(c.max_abs_err) and _nan(c.max_rel_err)
    e_nan = torch.tensor([float("nan"), 1.0])
    c = compare_tensor(torch.tensor([0.0, 1.0]), e_nan, FP32)
    assert (c.ok, c.reason) == (False, "output is finite where the reference is NaN") and _nan(c.max_abs_err)
    both = torch.tensor([float("nan"), float("nan")])
    c = compare_tensor(torch.tensor([float("nan"), 1.0]), torch.tensor([1.0, float("nan")]), FP32)
    assert c.reason == "output has 1 NaN where the reference has none"
    assert compare_tensor(both.clone(), both, FP32).ok
    inf = torch.tensor([float("inf"), 1.0])
    c = compare_tensor(torch.tensor([1.0, 1.0]), inf, FP32)
    assert (c.ok, c.reason) == (False, "output has Inf where the reference has none (or the opposite sign)")
    assert _nan(c.max_abs_err) and _nan(c.max_rel_err)
    assert not compare_tensor(torch.tensor([float("inf"), 1.0]), torch.tensor([1.0, 1.0]), FP32).ok
    assert compare_tensor(inf.clone(), inf, FP32).ok


def test_tolerance_edges_are_exact() -> None:
    # atol=1e-4 (scale 1 > 1% cap? no: cap is 1e-2 x 1 = 1e-2), rtol=1e-4 at |e| = 1: allowed 2e-4.
    e = torch.ones(4, dtype=torch.float64)
    tol = Tolerance(1e-4, 1e-4)
    assert compare_tensor(e + 1.9e-4, e, tol).ok
    c = compare_tensor(e + 2.1e-4, e, tol)
    assert not c.ok and c.reason.startswith("output: 4 of 4 elements outside atol=1.0e-04 rtol=1.0e-04")
    assert "first at flat index 0: got 1.00021, expected 1)" in c.reason
    assert abs(c.max_abs_err - 2.1e-4) < 1e-12 and abs(c.max_rel_err - 2.1e-4) < 1e-12
    # the first wrong element is named
    x = e.clone()
    x[2] += 1
    assert "first at flat index 2: got 2, expected 1" in compare_tensor(x, e, tol).reason


def test_atol_scales_with_rms_above_one_and_is_capped_by_scale() -> None:
    tol = Tolerance(1e-4, 0.0)
    e = torch.full((100,), 10.0, dtype=torch.float64)  # RMS 10: atol 1e-3
    assert compare_tensor(e + 9e-4, e, tol).ok
    c = compare_tensor(e + 1.1e-3, e, tol)
    assert not c.ok and "atol=1.0e-03" in c.reason
    small = torch.full((100,), 1e-3, dtype=torch.float64)  # scale 1e-3: atol capped at 1e-5
    assert compare_tensor(small + 9e-6, small, tol).ok
    c = compare_tensor(small + 1.1e-5, small, tol)
    assert not c.ok and "atol=1.0e-05" in c.reason
    mid = torch.full((100,), 0.5, dtype=torch.float64)  # RMS below 1: atol not scaled up
    assert not compare_tensor(mid + 1.1e-4, mid, tol).ok and compare_tensor(mid + 9e-5, mid, tol).ok


def test_relative_error_is_measured_where_the_reference_is_not_zero() -> None:
    e = torch.tensor([0.0, 2.0], dtype=torch.float64)
    c = compare_tensor(torch.tensor([0.0, 2.0002], dtype=torch.float64), e, Tolerance(1e-3, 1e-3))
    assert c.ok and abs(c.max_rel_err - 1e-4) < 1e-9 and abs(c.max_abs_err - 2e-4) < 1e-9
    z = compare_tensor(torch.tensor([1e-9, 2.0], dtype=torch.float64), e, Tolerance(1e-3, 1e-3))
    assert z.ok and abs(z.max_rel_err - 1e-6) < 1e-12  # 1e-9 / max(atol, 1e-12)
    tiny = compare_tensor(torch.tensor([1e-9], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64),
                          Tolerance(0.0, 0.0))
    assert not tiny.ok and tiny.max_rel_err == 1e-9 / 1e-12
    empty = compare_tensor(torch.empty(0), torch.empty(0), FP32)
    assert (empty.ok, empty.max_abs_err, empty.max_rel_err) == (True, 0.0, 0.0)


def test_per_dtype_defaults_and_problem_overrides() -> None:
    assert Tolerance.for_dtype(torch.float32) == Tolerance(1e-4, 1e-4)
    assert Tolerance.for_dtype(torch.float16) == Tolerance(5e-3, 5e-3)
    assert Tolerance.for_dtype(torch.bfloat16) == Tolerance(2e-2, 2e-2)
    assert Tolerance.for_dtype(torch.float64) == Tolerance(1e-7, 1e-7)
    assert Tolerance.for_dtype(torch.float32, atol=0.5) == Tolerance(0.5, 1e-4)
    assert Tolerance.for_dtype(torch.float32, rtol=0.5) == Tolerance(1e-4, 0.5)
    assert Tolerance.for_dtype(torch.float32, 0.0, 0.0) == Tolerance(0.0, 0.0)
    assert Tolerance.for_dtype(torch.complex64) == Tolerance(1e-4, 1e-4)
    assert Tolerance.for_dtype(torch.complex128) == Tolerance(1e-7, 1e-7)


def test_complex_outputs_judge_both_parts() -> None:
    e = torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex64)
    tol = Tolerance.for_dtype(e.dtype)
    assert compare_tensor(e + 1e-6, e, tol).ok
    assert not compare_tensor(e + 1e-2j, e, tol).ok  # only the imaginary part is off
    assert not compare_tensor(e.conj(), e, tol).ok


def test_several_outputs_are_each_compared_and_the_worst_reported() -> None:
    e = [torch.ones(2), torch.ones(3)]
    c = compare_outputs([torch.ones(2), torch.ones(3) * 2], e)
    assert not c.ok and c.reason.startswith("output[1]: 3 of 3 elements")
    assert compare_outputs([torch.ones(2) * 2, torch.ones(3)], e).reason.startswith("output[0]:")
    assert "output[1] is int" in compare_outputs([torch.ones(2), 3], e).reason
    ok = compare_outputs([torch.ones(2) + 1e-5, torch.ones(3) + 2e-5], e)
    assert ok.ok and ok.reason == "" and abs(ok.max_abs_err - 2e-5) < 1e-7 and abs(ok.max_rel_err - 2e-5) < 1e-7
    single = compare_outputs([torch.ones(2) * 2], [torch.ones(2)])
    assert single.reason.startswith("output: 2 of 2")
    few = compare_outputs([], [torch.ones(1)])
    assert (few.ok, few.reason) == (False, "forward returned 0 tensors, expected 1") and _nan(few.max_abs_err)
    assert _nan(few.max_rel_err)
