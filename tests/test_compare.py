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
