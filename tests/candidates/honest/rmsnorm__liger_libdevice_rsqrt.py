"""RMSNorm forward in Liger-Kernel's style, using libdevice's ``rsqrt``.

Targets: kernels/rmsnorm/problem.py

Traits exercised:
  (6) libdevice math: ``rsqrt`` comes from ``triton.language.extra.libdevice`` (falling back to
      the CUDA backend's ``triton.language.extra.cuda.libdevice`` on older Triton releases), the
      import idiom Liger-Kernel uses.
  (2) dtype-generic: the row is squared and summed in fp32 (``.to(tl.float32)``); in "llama"
      casting mode the normalised row is cast back to the input dtype before the weight is
      applied, as LLaMA's reference does for half inputs; ``tl.float16`` / ``torch.float16``
      appear only in branches that an fp32 input never takes. The per-row inverse RMS is kept
      in fp32 for a backward pass.
  (5) ``eps`` is a plain Python float (``self.eps``) used as a scalar: ``rsqrt(mean_sq + eps)``.

Interpreter status: does NOT run under TRITON_INTERPRET=1 today. Triton's interpreter patches
``tl`` and ``tl.math`` but not libdevice, whose functions are stubs there and return None, so
the first use of ``rstd`` (``tl.store(RSTD_ptr + row_idx, rstd)``) fails:
    triton.runtime.errors.InterpreterError: TypeError("cannot convert None of type <class 'NoneType'> to tensor")
On a GPU it is correct; a scratch copy with
``rsqrt`` replaced by ``tl.rsqrt`` runs in the interpreter and matches.
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl

try:
    from triton.language.extra.libdevice import rsqrt
except ModuleNotFoundError:  # Triton < 3.0 ships libdevice only under the CUDA backend
    from triton.language.extra.cuda.libdevice import rsqrt

_CASTING_MODE_NONE = tl.constexpr(0)
_CASTING_MODE_LLAMA = tl.constexpr(1)


@triton.jit
def _rms_norm_forward_kernel(
    Y_ptr, Y_row_stride, X_ptr, X_row_stride, W_ptr, RSTD_ptr, n_cols, eps,
    casting_mode: tl.constexpr, HALF_INPUT: tl.constexpr, BLOCK_SIZE: tl.constexpr,
):
    row_idx = tl.program_id(0).to(tl.int64)
    col_offsets = tl.arange(0, BLOCK_SIZE)
    mask = col_offsets < n_cols

    X_row = tl.load(X_ptr + row_idx * X_row_stride + col_offsets, mask=mask, other=0)
    W_row = tl.load(W_ptr + col_offsets, mask=mask, other=0)
    X_f32 = X_row.to(tl.float32)

    mean_square = tl.sum(X_f32 * X_f32, axis=0) / n_cols
    rstd = rsqrt(mean_square + eps)
    tl.store(RSTD_ptr + row_idx, rstd)

    X_normed = X_f32 * rstd
    if casting_mode == _CASTING_MODE_LLAMA:
        if HALF_INPUT:
            X_normed = X_normed.to(tl.float16)
        else:
            X_normed = X_normed.to(X_row.dtype)
    Y_row = X_normed * W_row
    tl.store(Y_ptr + row_idx * Y_row_stride + col_offsets, Y_row.to(Y_ptr.dtype.element_ty), mask=mask)


def rms_norm(X: torch.Tensor, W: torch.Tensor, eps: float) -> torch.Tensor:
    shape = X.shape
    X = X.reshape(-1, shape[-1]).contiguous()
    n_rows, n_cols = X.shape
    BLOCK_SIZE = triton.next_power_of_2(n_cols)
    num_warps = 4
    if BLOCK_SIZE >= 2048:
        num_warps = 8
    if BLOCK_SIZE >= 8192:
        num_warps = 16
    half_input = X.dtype == torch.float16
    # Half activations times an fp32 weight promote to fp32, as in the PyTorch reference.
    out_dtype = torch.promote_types(X.dtype, W.dtype)
    Y = torch.empty((n_rows, n_cols), dtype=out_dtype, device=X.device)
    RSTD = torch.empty(n_rows, dtype=torch.float32, device=X.device)
    _rms_norm_forward_kernel[(n_rows,)](
        Y, Y.stride(0), X, X.stride(0), W, RSTD, n_cols, eps,
        casting_mode=_CASTING_MODE_LLAMA, HALF_INPUT=half_input, BLOCK_SIZE=BLOCK_SIZE, num_warps=num_warps,
    )
    return Y.reshape(shape)


class ModelNew(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = 1e-6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)
