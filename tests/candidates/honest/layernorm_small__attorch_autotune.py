"""LayerNorm forward in attorch's style: autotuned 2-D (rows x features) blocks.

Targets: tests/problems/layernorm_small.py

Traits exercised:
  (1) ``@triton.autotune`` with five configs over the rows-per-program block and ``num_warps``,
      ``key=["n_rows", "n_cols"]``, stacked on ``@triton.heuristics`` that derives the feature
      block (next power of two of the row width) from the arguments; the grid is a lambda of
      the chosen meta-parameters.
  (2) dtype-generic: the block is normalised in fp32 (``.to(tl.float32)``), the statistics are
      always kept in fp32, the output is cast back to the input's element type, and the host
      has a ``torch.float16`` / ``torch.bfloat16`` branch (never taken for this fp32 problem)
      that accepts fp32 parameters with half activations.
  (5) ``eps`` is passed as a plain Python float (``self.ln.eps``) and used as a scalar inside
      the kernel: ``1.0 / tl.sqrt(var + eps)``.
It also takes attorch's optional outputs as constexpr switches (scale by weight, add bias,
save mean / inverse std for a backward pass; the statistics are saved only when the input
needs gradients).

Interpreter status: with a single config pinned (as an evaluator pins each config in turn),
every config runs under TRITON_INTERPRET=1 and matches. Unpinned, Triton's autotuner
benchmarks the five configs through ``triton.runtime.driver.active``, which the CPU
interpreter does not have: ``RuntimeError: 0 active drivers ([]). There should only be one.``
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


def _row_block_configs():
    # (rows per program, warps): narrow rows want several rows a program, wide rows more warps.
    return [
        triton.Config({"BLOCK_ROWS": 1}, num_warps=1),
        triton.Config({"BLOCK_ROWS": 2}, num_warps=2),
        triton.Config({"BLOCK_ROWS": 4}, num_warps=4),
        triton.Config({"BLOCK_ROWS": 8}, num_warps=4),
        triton.Config({"BLOCK_ROWS": 16}, num_warps=8),
    ]


@triton.autotune(configs=_row_block_configs(), key=["n_rows", "n_cols"])
@triton.heuristics({"BLOCK_COLS": lambda args: triton.next_power_of_2(args["n_cols"])})
@triton.jit
def _layer_norm_fwd_kernel(
    x_ptr, weight_ptr, bias_ptr, mean_ptr, inv_std_ptr, y_ptr,
    n_rows, n_cols,
    x_row_stride, x_col_stride, y_row_stride, y_col_stride,
    eps,
    SCALE_BY_WEIGHT: tl.constexpr, ADD_BIAS: tl.constexpr, SAVE_STATS: tl.constexpr,
    BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr,
):
    pid = tl.program_id(axis=0)
    row_offs = pid * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    col_offs = tl.arange(0, BLOCK_COLS)
    row_mask = row_offs < n_rows
    col_mask = col_offs < n_cols
    tile_mask = row_mask[:, None] & col_mask[None, :]

    x_ptrs = x_ptr + row_offs[:, None] * x_row_stride + col_offs[None, :] * x_col_stride
    x = tl.load(x_ptrs, mask=tile_mask, other=0.0).to(tl.float32)

    mean = tl.sum(x, axis=1) / n_cols
    centred = tl.where(col_mask[None, :], x - mean[:, None], 0.0)
    var = tl.sum(centred * centred, axis=1) / n_cols
    inv_std = 1.0 / tl.sqrt(var + eps)
    out = centred * inv_std[:, None]

    if SAVE_STATS:
        tl.store(mean_ptr + row_offs, mean, mask=row_mask)
        tl.store(inv_std_ptr + row_offs, inv_std, mask=row_mask)
    if SCALE_BY_WEIGHT:
        w = tl.load(weight_ptr + col_offs, mask=col_mask).to(tl.float32)
        out = out * w[None, :]
    if ADD_BIAS:
        b = tl.load(bias_ptr + col_offs, mask=col_mask).to(tl.float32)
        out = out + b[None, :]

    y_ptrs = y_ptr + row_offs[:, None] * y_row_stride + col_offs[None, :] * y_col_stride
    tl.store(y_ptrs, out.to(y_ptr.dtype.element_ty), mask=tile_mask)


def layer_norm(x, weight, bias, eps: float):
    shape = x.shape
    x2d = x.reshape(-1, shape[-1])
    n_rows, n_cols = x2d.shape
    if x.dtype == torch.float16 or x.dtype == torch.bfloat16:
        # Mixed precision (fp32 parameters, half activations) is fine: the kernel upcasts both.
        assert weight is None or weight.dtype in (torch.float32, x.dtype), "unsupported weight dtype"
    y = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)

    save_stats = x.requires_grad
    mean = inv_std = None
    if save_stats:
        mean = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        inv_std = torch.empty(n_rows, dtype=torch.float32, device=x.device)

    grid = lambda META: (triton.cdiv(n_rows, META["BLOCK_ROWS"]),)
    _layer_norm_fwd_kernel[grid](
        x2d, weight, bias, mean, inv_std, y,
        n_rows, n_cols,
        x2d.stride(0), x2d.stride(1), y.stride(0), y.stride(1),
        eps,
        SCALE_BY_WEIGHT=weight is not None, ADD_BIAS=bias is not None, SAVE_STATS=save_stats,
    )
    return y.reshape(shape)


class ModelNew(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.ln.weight, self.ln.bias, self.ln.eps)
