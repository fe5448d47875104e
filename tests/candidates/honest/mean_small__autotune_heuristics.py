"""Row mean with ``@triton.autotune`` and ``@triton.heuristics``, as LLM agents often write it.

Targets: tests/problems/mean_small.py

Traits exercised:
  (1) ``@triton.autotune`` with six configs over BLOCK_SIZE and num_warps, ``key=["n_cols"]``,
      stacked on ``@triton.heuristics`` (``NUM_BLOCKS`` = column blocks per row, ``EVEN_COLS`` =
      no column mask needed); the grid is one program per row. Every config reads every
      element of the row: the loop runs ``NUM_BLOCKS`` times whatever BLOCK_SIZE the tuner picks.
  (2) dtype-generic: the row is accumulated in fp32 (``.to(tl.float32)``) and the mean cast back
      to the output's element type; ``torch.half`` inputs are accepted (the branch that checks
      for them never runs for this fp32 problem).

Interpreter status: with one config pinned, every config runs under TRITON_INTERPRET=1 and
matches (checked on the problem's default 4 x 1000 and on 7 x 33 and 5 x 4097). Unpinned, the
autotuner's benchmark needs ``triton.runtime.driver.active``:
    RuntimeError: 0 active drivers ([]). There should only be one.
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.autotune(
    configs=[
        triton.Config({"BLOCK_SIZE": 64}, num_warps=1),
        triton.Config({"BLOCK_SIZE": 128}, num_warps=2),
        triton.Config({"BLOCK_SIZE": 256}, num_warps=2),
        triton.Config({"BLOCK_SIZE": 512}, num_warps=4),
        triton.Config({"BLOCK_SIZE": 1024}, num_warps=4),
        triton.Config({"BLOCK_SIZE": 2048}, num_warps=8),
    ],
    key=["n_cols"],
)
@triton.heuristics({
    "NUM_BLOCKS": lambda args: triton.cdiv(args["n_cols"], args["BLOCK_SIZE"]),
    "EVEN_COLS": lambda args: args["n_cols"] % args["BLOCK_SIZE"] == 0,
})
@triton.jit
def row_mean_kernel(
    x_ptr, out_ptr, n_cols, stride_row,
    BLOCK_SIZE: tl.constexpr, NUM_BLOCKS: tl.constexpr, EVEN_COLS: tl.constexpr,
):
    row = tl.program_id(0)
    base = x_ptr + row.to(tl.int64) * stride_row
    offsets = tl.arange(0, BLOCK_SIZE)
    acc = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
    for b in range(NUM_BLOCKS):
        cols = b * BLOCK_SIZE + offsets
        if EVEN_COLS:
            vals = tl.load(base + cols)
        else:
            vals = tl.load(base + cols, mask=cols < n_cols, other=0.0)
        acc += vals.to(tl.float32)
    mean = tl.sum(acc, axis=0) / n_cols
    tl.store(out_ptr + row, mean.to(out_ptr.dtype.element_ty))


def row_mean(x: torch.Tensor) -> torch.Tensor:
    if x.dtype not in (torch.float32, torch.half, torch.bfloat16):
        raise TypeError(f"row_mean: unsupported dtype {x.dtype}")
    lead = x.shape[:-1]
    x2d = x.reshape(-1, x.shape[-1]).contiguous()
    n_rows, n_cols = x2d.shape
    out = torch.empty(n_rows, dtype=x.dtype, device=x.device)
    row_mean_kernel[(n_rows,)](x2d, out, n_cols, x2d.stride(0))
    return out.reshape(lead)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return row_mean(x)
