"""Row softmax that keeps narrow rows in one block and loops over column blocks for wide ones.

Targets: kernels/softmax/problem.py

Traits exercised:
  (8) honest handling of every width: a row that fits in one block (``n_cols <= MAX_FUSED_SIZE``)
      is loaded once, normalised and written in a single pass; a wider row is handled by an
      online max/normaliser loop over column blocks followed by a second loop that writes the
      normalised block outputs. The branch is a constexpr (``SINGLE_BLOCK``) chosen on the host.
      With CPU_SIZES, widths 33 and 1000 take the single pass and 4097 loops twice.
  (2) dtype-generic: every load is upcast with ``.to(tl.float32)``, stores cast back to
      ``y_ptr.dtype.element_ty``; the host picks fewer warps for ``torch.float16`` /
      ``torch.bfloat16`` rows (a branch that never runs for this fp32 problem).

Interpreter status: runs under TRITON_INTERPRET=1.
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl

# Widest slice of a row held in registers at once; wider rows loop over slices of this size.
MAX_FUSED_SIZE = 4096


@triton.jit
def _softmax_fwd_kernel(
    x_ptr, y_ptr, x_row_stride, y_row_stride, n_cols,
    BLOCK_SIZE: tl.constexpr, SINGLE_BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_row_stride
    y_row = y_ptr + row * y_row_stride
    cols = tl.arange(0, BLOCK_SIZE)

    if SINGLE_BLOCK:
        mask = cols < n_cols
        x = tl.load(x_row + cols, mask=mask, other=-float("inf")).to(tl.float32)
        x = x - tl.max(x, axis=0)
        num = tl.exp(x)
        out = num / tl.sum(num, axis=0)
        tl.store(y_row + cols, out.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        # Pass 1: running max m and normaliser d = sum(exp(x - m)), rescaled when m grows.
        m = -float("inf")
        d = 0.0
        for start in range(0, n_cols, BLOCK_SIZE):
            offs = start + cols
            x = tl.load(x_row + offs, mask=offs < n_cols, other=-float("inf")).to(tl.float32)
            m_new = tl.maximum(m, tl.max(x, axis=0))
            d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
            m = m_new
        inv_d = 1.0 / d
        # Pass 2: write exp(x - m) / d block by block.
        for start in range(0, n_cols, BLOCK_SIZE):
            offs = start + cols
            mask = offs < n_cols
            x = tl.load(x_row + offs, mask=mask, other=-float("inf")).to(tl.float32)
            out = tl.exp(x - m) * inv_d
            tl.store(y_row + offs, out.to(y_ptr.dtype.element_ty), mask=mask)


def softmax(x: torch.Tensor) -> torch.Tensor:
    shape = x.shape
    x2d = x.reshape(-1, shape[-1]).contiguous()
    n_rows, n_cols = x2d.shape
    y = torch.empty_like(x2d)

    BLOCK_SIZE = min(MAX_FUSED_SIZE, triton.next_power_of_2(n_cols))
    single_block = n_cols <= BLOCK_SIZE
    num_warps = 4
    if BLOCK_SIZE >= 2048:
        num_warps = 8
    if BLOCK_SIZE >= 4096:
        num_warps = 16
    if x.dtype == torch.float16 or x.dtype == torch.bfloat16:
        # Half the bytes per element: the same block needs half the registers.
        num_warps = max(4, num_warps // 2)

    _softmax_fwd_kernel[(n_rows,)](
        x2d, y, x2d.stride(0), y.stride(0), n_cols,
        BLOCK_SIZE=BLOCK_SIZE, SINGLE_BLOCK=single_block, num_warps=num_warps,
    )
    return y.reshape(shape)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return softmax(x)
