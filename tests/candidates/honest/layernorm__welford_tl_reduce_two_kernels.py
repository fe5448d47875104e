"""LayerNorm in two kernels, FlagGems/Inductor style: a looped Welford reduction per row using
tl.reduce with a @triton.jit combine function over (mean, m2, weight) tuples, written to
mean/rstd workspaces; then an elementwise normalise kernel over a 2-D grid of row x column blocks.
The stats kernel is @triton.autotune'd over the chunk width; libdevice.rsqrt from
triton.language.extra.

Target: kernels/layernorm/problem.py
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl
from triton.language.extra import libdevice


@triton.jit
def welford_combine(mean_1, m2_1, weight_1, mean_2, m2_2, weight_2):
    delta = mean_2 - mean_1
    new_weight = weight_1 + weight_2
    w2_over_w = tl.where(new_weight == 0.0, 0.0, weight_2 / new_weight)
    return (mean_1 + delta * w2_over_w, m2_1 + m2_2 + delta * delta * weight_1 * w2_over_w, new_weight)


@triton.autotune(configs=[triton.Config({"BLOCK": 256}, num_warps=4), triton.Config({"BLOCK": 1024}, num_warps=8)],
                 key=["N"])
@triton.jit
def _stats_kernel(x_ptr, mean_ptr, rstd_ptr, N, stride, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mean_acc = tl.zeros((BLOCK,), dtype=tl.float32)
    m2_acc = tl.zeros((BLOCK,), dtype=tl.float32)
    w_acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for off in range(0, N, BLOCK):
        c = off + cols
        mask = c < N
        x = tl.load(x_ptr + row * stride + c, mask=mask, other=0.0).to(tl.float32)
        # Welford update, element-wise per lane.
        w_new = w_acc + tl.where(mask, 1.0, 0.0)
        delta = x - mean_acc
        mean_new = mean_acc + tl.where(mask, delta / tl.maximum(w_new, 1.0), 0.0)
        m2_acc = m2_acc + tl.where(mask, delta * (x - mean_new), 0.0)
        mean_acc = mean_new
        w_acc = w_new
    mean, m2, w = tl.reduce((mean_acc, m2_acc, w_acc), 0, welford_combine)
    var = m2 / w
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, libdevice.rsqrt(var + eps))


@triton.jit
def _normalize_kernel(x_ptr, y_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, N, stride, BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = c < N
    x = tl.load(x_ptr + row * stride + c, mask=mask, other=0.0)
    mean = tl.load(mean_ptr + row)
    rstd = tl.load(rstd_ptr + row)
    w = tl.load(w_ptr + c, mask=mask, other=0.0)
    b = tl.load(b_ptr + c, mask=mask, other=0.0)
    tl.store(y_ptr + row * stride + c, (x - mean) * rstd * w + b, mask=mask)


class ModelNew(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = 1e-5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).contiguous()
        M, N = x2.shape
        mean = torch.empty(M, device=x.device, dtype=torch.float32)
        rstd = torch.empty(M, device=x.device, dtype=torch.float32)
        _stats_kernel[(M,)](x2, mean, rstd, N, x2.stride(0), self.eps)
        y = torch.empty_like(x2)
        BLOCK_N = 1024
        _normalize_kernel[(M, triton.cdiv(N, BLOCK_N))](x2, y, self.weight, self.bias, mean, rstd, N, x2.stride(0),
                                                         BLOCK_N=BLOCK_N)
        return y.view(shape)
