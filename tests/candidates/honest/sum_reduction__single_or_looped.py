"""Sum over a dim (keepdim) with a single-pass path for narrow rows and a looped one for wide rows.

Targets: kernels/sum_reduction/problem.py

Traits exercised:
  (8) honest handling of every width: ``@triton.heuristics`` sets ``SINGLE_BLOCK`` when a row
      fits in one block, and the kernel then loads each row once and writes its sum in a single
      pass; wider rows loop over column blocks accumulating in a vector before one final
      reduction. Short rows are packed several to a program (a 2-D ROWS x BLOCK_SIZE tile).
      With CPU_SIZES: 33 and 1000 take the single pass, 4097 loops twice.
  (1) ``@triton.heuristics`` with two derived meta-parameters (``SINGLE_BLOCK``, ``EVEN_ROWS``).
  (2) dtype-generic: the accumulator dtype is a constexpr (``tl.float64`` for double input,
      ``tl.float32`` otherwise, so fp16/bf16 rows are summed in fp32 and cast back on store);
      the host has a ``torch.float16`` / ``torch.bfloat16`` branch an fp32 input never takes.
Any reduction dim is supported: the dim is moved last (glue: ``movedim`` + ``contiguous``).

Interpreter status: runs under TRITON_INTERPRET=1.
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl

MAX_BLOCK = 4096


@triton.heuristics({
    "SINGLE_BLOCK": lambda args: args["n_cols"] <= args["BLOCK_SIZE"],
    "EVEN_ROWS": lambda args: args["n_rows"] % args["ROWS"] == 0,
})
@triton.jit
def _row_sum_kernel(
    x_ptr, out_ptr, n_rows, n_cols, x_row_stride,
    ACC_DTYPE: tl.constexpr, ROWS: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    SINGLE_BLOCK: tl.constexpr, EVEN_ROWS: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * ROWS + tl.arange(0, ROWS)
    row_mask = rows < n_rows
    cols = tl.arange(0, BLOCK_SIZE)
    row_ptrs = x_ptr + rows[:, None] * x_row_stride

    if SINGLE_BLOCK:
        if EVEN_ROWS:
            # Every row of the tile exists: only the column edge needs a mask.
            mask = cols[None, :] < n_cols
        else:
            mask = row_mask[:, None] & (cols[None, :] < n_cols)
        x = tl.load(row_ptrs + cols[None, :], mask=mask, other=0.0).to(ACC_DTYPE)
        total = tl.sum(x, axis=1)
    else:
        acc = tl.zeros([ROWS, BLOCK_SIZE], dtype=ACC_DTYPE)
        for start in range(0, n_cols, BLOCK_SIZE):
            offs = start + cols
            mask = row_mask[:, None] & (offs[None, :] < n_cols)
            acc += tl.load(row_ptrs + offs[None, :], mask=mask, other=0.0).to(ACC_DTYPE)
        total = tl.sum(acc, axis=1)

    if EVEN_ROWS:
        tl.store(out_ptr + rows, total.to(out_ptr.dtype.element_ty))
    else:
        tl.store(out_ptr + rows, total.to(out_ptr.dtype.element_ty), mask=row_mask)


def sum_keepdim(x: torch.Tensor, dim: int) -> torch.Tensor:
    dim = dim % x.dim()
    moved = x.movedim(dim, -1).contiguous()
    n_cols = moved.shape[-1]
    x2d = moved.reshape(-1, n_cols)
    n_rows = x2d.shape[0]
    out = torch.empty(n_rows, dtype=x.dtype, device=x.device)

    acc_dtype = tl.float64 if x.dtype == torch.float64 else tl.float32
    BLOCK_SIZE = min(MAX_BLOCK, triton.next_power_of_2(max(n_cols, 1)))
    if x.dtype == torch.float16 or x.dtype == torch.bfloat16:
        BLOCK_SIZE = min(2 * MAX_BLOCK, triton.next_power_of_2(max(n_cols, 1)))
    # Short rows: several rows a program so every program moves a useful amount of data.
    ROWS = max(1, min(16, 2048 // BLOCK_SIZE))
    num_warps = 4 if BLOCK_SIZE * ROWS <= 2048 else 8

    grid = (triton.cdiv(n_rows, ROWS),)
    _row_sum_kernel[grid](
        x2d, out, n_rows, n_cols, x2d.stride(0),
        ACC_DTYPE=acc_dtype, ROWS=ROWS, BLOCK_SIZE=BLOCK_SIZE, num_warps=num_warps,
    )
    keep_shape = list(x.shape)
    keep_shape[dim] = 1
    return out.reshape(moved.shape[:-1]).unsqueeze(-1).movedim(-1, dim).reshape(keep_shape)


class ModelNew(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum_keepdim(x, self.dim)
