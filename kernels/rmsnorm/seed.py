"""RMSNorm in Triton: one program per row; a sum-of-squares sweep, then a scaling sweep."""

import torch
import torch.nn as nn
import triton
import triton.language as tl

# Widest chunk of a row held in registers at once; longer rows loop over chunks.
MAX_BLOCK = 4096
NUM_WARPS = 8


@triton.jit
def _rmsnorm_kernel(x_ptr, w_ptr, y_ptr, n_cols, x_row_stride, y_row_stride, eps, BLOCK: tl.constexpr):
    # Per element: 2 reads of x (the second mostly from L2), 1 write of y, w read once per row
    # (L2-resident across rows); ~4 FLOPs.
    row = tl.program_id(0).to(tl.int64)  # int64: row * stride passes 2**31 on the larger sizes
    x_row = x_ptr + row * x_row_stride
    y_row = y_ptr + row * y_row_stride
    cols = tl.arange(0, BLOCK)

    # Per-lane partial sums, reduced once at the end; zero padding adds nothing.
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK):
        offs = start + cols
        x = tl.load(x_row + offs, mask=offs < n_cols, other=0.0).to(tl.float32)
        acc += x * x
    rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / n_cols + eps)

    for start in range(0, n_cols, BLOCK):
        offs = start + cols
        mask = offs < n_cols
        x = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_row + offs, (x * rstd * w).to(y_ptr.dtype.element_ty), mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim.

    x: (..., n_cols) fp32/fp16/bf16; weight: (n_cols,) -> y: x's shape and dtype.
    """
    n_cols = x.shape[-1]
    x2 = x.reshape(-1, n_cols).contiguous()
    y = torch.empty_like(x2)
    block = triton.next_power_of_2(min(n_cols, MAX_BLOCK))
    _rmsnorm_kernel[(x2.shape[0],)](
        x2, weight.contiguous(), y, n_cols, x2.stride(0), y.stride(0), eps, BLOCK=block, num_warps=NUM_WARPS
    )
    return y.view(x.shape)


class ModelNew(nn.Module):
    """Drop-in for the reference Model; same ``weight`` parameter."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = 1e-6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)
