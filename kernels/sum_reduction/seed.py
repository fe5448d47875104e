"""Sum over one dim (keepdim) in Triton: one program per row of the reduced dim moved last."""

import torch
import torch.nn as nn
import triton
import triton.language as tl

# Widest chunk of a row held in registers at once; longer rows loop over chunks.
MAX_BLOCK = 4096
NUM_WARPS = 8


@triton.jit
def _sum_reduction_kernel(x_ptr, y_ptr, n_cols, x_row_stride, BLOCK: tl.constexpr):
    # Per element: 1 read, 1 add; one write per row. Purely memory bound: n_rows * n_cols * itemsize.
    row = tl.program_id(0).to(tl.int64)  # int64: row * stride passes 2**31 on the larger sizes
    x_row = x_ptr + row * x_row_stride
    cols = tl.arange(0, BLOCK)
    # Per-lane fp32 partial sums, reduced once at the end: one cross-lane tree per row, and
    # fp16/bf16 inputs never accumulate in their own precision. Zero padding adds nothing.
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK):
        offs = start + cols
        acc += tl.load(x_row + offs, mask=offs < n_cols, other=0.0).to(tl.float32)
    tl.store(y_ptr + row, tl.sum(acc, axis=0).to(y_ptr.dtype.element_ty))


def sum_keepdim(x: torch.Tensor, dim: int) -> torch.Tensor:
    """torch.sum(x, dim, keepdim=True).

    x: any shape, fp32/fp16/bf16 -> y: x's shape with size 1 at ``dim``, x's dtype.
    """
    dim = dim % x.ndim
    # Reduced dim last and contiguous: each program then reads one unit-stride row.
    xm = x.movedim(dim, -1).contiguous()
    n_cols = xm.shape[-1]
    x2 = xm.reshape(-1, n_cols)
    y = torch.empty(x2.shape[0], dtype=x.dtype, device=x.device)
    block = triton.next_power_of_2(min(n_cols, MAX_BLOCK))
    _sum_reduction_kernel[(x2.shape[0],)](x2, y, n_cols, x2.stride(0), BLOCK=block, num_warps=NUM_WARPS)
    out_shape = list(x.shape)
    out_shape[dim] = 1
    return y.view(out_shape)


class ModelNew(nn.Module):
    """Drop-in for the reference Model: torch.sum(x, dim=self.dim, keepdim=True)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum_keepdim(x, self.dim)
