"""LayerNorm forward that casts its float ``eps`` argument with ``eps.to(tl.float32)``.

Targets: kernels/layernorm/problem.py

Traits exercised:
  (5) ``eps`` is passed as a plain Python float (``self.eps``) and, inside the kernel, converted
      with ``eps.to(tl.float32)`` before it is added to the variance. When compiled, a float
      argument is an fp32 scalar tensor, so ``.to`` is legal; this is common in kernels that
      are also launched with fp64 or fp16 scalars.
  (8) honest handling of every width: rows up to MAX_FUSED_SIZE columns are normalised in a
      single pass over one block; wider rows take a looped path (mean loop, centred variance
      loop, normalise-and-write loop) over column blocks. With CPU_SIZES, 33 and 1000 take the
      single pass and 4097 loops twice.
  (2) dtype-generic: loads upcast with ``.to(tl.float32)``, stores cast to the output's element
      type; the host picks the block for ``torch.float16`` inputs differently.

Interpreter status: does NOT run under TRITON_INTERPRET=1 today. The interpreter passes a float
argument into the kernel as a Python float, so the first statement using it fails:
    triton.runtime.errors.InterpreterError: AttributeError("'float' object has no attribute 'to'")
On a GPU (compiled) it is correct. A scratch copy with ``eps.to(tl.float32)`` replaced by
``eps`` runs in the interpreter and matches (see the fixture report).
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl

MAX_FUSED_SIZE = 4096


@triton.jit
def _layer_norm_fwd(
    x_ptr, w_ptr, b_ptr, y_ptr, x_row_stride, y_row_stride, n_cols, eps,
    BLOCK_SIZE: tl.constexpr, ONE_PASS: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_row_stride
    y_row = y_ptr + row * y_row_stride
    eps_f32 = eps.to(tl.float32)
    cols = tl.arange(0, BLOCK_SIZE)

    if ONE_PASS:
        mask = cols < n_cols
        x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=0) / n_cols
        xc = tl.where(mask, x - mean, 0.0)
        var = tl.sum(xc * xc, axis=0) / n_cols
        rstd = 1.0 / tl.sqrt(var + eps_f32)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_row + cols, (xc * rstd * w + b).to(y_ptr.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
        for start in range(0, n_cols, BLOCK_SIZE):
            offs = start + cols
            acc += tl.load(x_row + offs, mask=offs < n_cols, other=0.0).to(tl.float32)
        mean = tl.sum(acc, axis=0) / n_cols
        # Centred second pass: no cancellation from E[x^2] - E[x]^2.
        acc = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
        for start in range(0, n_cols, BLOCK_SIZE):
            offs = start + cols
            mask = offs < n_cols
            x = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
            xc = tl.where(mask, x - mean, 0.0)
            acc += xc * xc
        rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / n_cols + eps_f32)
        for start in range(0, n_cols, BLOCK_SIZE):
            offs = start + cols
            mask = offs < n_cols
            x = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            y = (x - mean) * rstd * w + b
            tl.store(y_row + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    shape = x.shape
    x2d = x.reshape(-1, shape[-1]).contiguous()
    n_rows, n_cols = x2d.shape
    y = torch.empty_like(x2d)
    max_block = MAX_FUSED_SIZE
    if x.dtype == torch.float16:
        max_block = 2 * MAX_FUSED_SIZE  # two bytes an element: twice the columns in the same registers
    BLOCK_SIZE = min(max_block, triton.next_power_of_2(n_cols))
    num_warps = min(16, max(4, BLOCK_SIZE // 256))
    _layer_norm_fwd[(n_rows,)](
        x2d, weight, bias, y, x2d.stride(0), y.stride(0), n_cols, eps,
        BLOCK_SIZE=BLOCK_SIZE, ONE_PASS=n_cols <= BLOCK_SIZE, num_warps=num_warps,
    )
    return y.reshape(shape)


class ModelNew(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = 1e-5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)
