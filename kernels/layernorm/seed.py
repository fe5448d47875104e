"""LayerNorm in Triton: one program per row; mean, variance and normalise sweeps over the row."""

import torch
import torch.nn as nn
import triton
import triton.language as tl

# Widest chunk of a row held in registers at once; longer rows loop over chunks.
MAX_BLOCK = 4096
NUM_WARPS = 8


@triton.jit
def _layernorm_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, n_cols, x_row_stride, y_row_stride, eps, BLOCK: tl.constexpr
):
    # Per element: 3 reads of x (the last two mostly hit L2: a row is tens of KiB at most),
    # 1 write of y, and w, b read once per row (L2-resident across rows); ~8 FLOPs.
    row = tl.program_id(0).to(tl.int64)  # int64: row * stride passes 2**31 on the larger sizes
    x_row = x_ptr + row * x_row_stride
    y_row = y_ptr + row * y_row_stride
    cols = tl.arange(0, BLOCK)

    # Per-lane partial sums, reduced once at the end: fewer cross-lane reductions per chunk.
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK):
        offs = start + cols
        acc += tl.load(x_row + offs, mask=offs < n_cols, other=0.0).to(tl.float32)
    mean = tl.sum(acc, axis=0) / n_cols

    # Variance from (x - mean) rather than E[x^2] - mean^2, which cancels badly when |mean| >> std.
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK):
        offs = start + cols
        mask = offs < n_cols
        x = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, x - mean, 0.0)  # padding would otherwise add mean^2 per lane
        acc += d * d
    rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / n_cols + eps)

    for start in range(0, n_cols, BLOCK):
        offs = start + cols
        mask = offs < n_cols
        x = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        y = (x - mean) * rstd * w + b
        tl.store(y_row + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the last dim.

    x: (..., n_cols) fp32/fp16/bf16; weight, bias: (n_cols,) -> y: x's shape and dtype.
    """
    n_cols = x.shape[-1]
    x2 = x.reshape(-1, n_cols).contiguous()
    y = torch.empty_like(x2)
    block = triton.next_power_of_2(min(n_cols, MAX_BLOCK))
    _layernorm_kernel[(x2.shape[0],)](
        x2, weight.contiguous(), bias.contiguous(), y, n_cols, x2.stride(0), y.stride(0), eps,
        BLOCK=block, num_warps=NUM_WARPS,
    )
    return y.view(x.shape)


class ModelNew(nn.Module):
    """Drop-in for the reference Model; same ``weight`` and ``bias`` parameters (nn.LayerNorm's keys)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = 1e-5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)
