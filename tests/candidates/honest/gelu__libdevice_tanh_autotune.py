"""Tanh-approximate GELU, elementwise, autotuned, with libdevice's ``tanh``.

Targets: kernels/gelu/problem.py

Traits exercised:
  (6) libdevice math: ``tl.extra.libdevice.tanh`` (the module is imported so that the
      ``tl.extra.libdevice`` attribute resolves inside the kernel).
  (1) ``@triton.autotune`` with six configs over BLOCK_SIZE and num_warps, ``key=["n_elements"]``,
      and a ``@triton.heuristics`` flag (``EVEN_N``) that drops the bounds mask when the element
      count is a multiple of the block; the grid is a lambda of the chosen BLOCK_SIZE.
  (2) dtype-generic: the element is upcast with ``.to(tl.float32)``, GELU is computed in fp32 and
      cast back to the output's element type; half inputs (``torch.float16`` / ``torch.bfloat16``)
      are accepted and keep their dtype.

Interpreter status: does NOT run under TRITON_INTERPRET=1 today, for two reasons, the first of
which it meets first: unpinned, the autotuner benchmarks its configs through
``triton.runtime.driver.active``:
    RuntimeError: 0 active drivers ([]). There should only be one.
and with one config pinned, the libdevice stub returns None in the interpreter:
    triton.runtime.errors.InterpreterError: TypeError("unsupported operand type(s) for +: 'float' and 'NoneType'")
On a GPU it is correct; a scratch copy with ``tl.extra.libdevice.tanh`` swapped for an
exp-based tanh runs in the interpreter and matches for every config.
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl
from triton.language.extra import libdevice  # noqa: F401  (makes tl.extra.libdevice resolvable)


def _gelu_configs():
    return [
        triton.Config({"BLOCK_SIZE": 256}, num_warps=2),
        triton.Config({"BLOCK_SIZE": 512}, num_warps=4),
        triton.Config({"BLOCK_SIZE": 1024}, num_warps=4),
        triton.Config({"BLOCK_SIZE": 1024}, num_warps=8),
        triton.Config({"BLOCK_SIZE": 2048}, num_warps=8),
        triton.Config({"BLOCK_SIZE": 4096}, num_warps=16),
    ]


@triton.autotune(configs=_gelu_configs(), key=["n_elements"])
@triton.heuristics({"EVEN_N": lambda args: args["n_elements"] % args["BLOCK_SIZE"] == 0})
@triton.jit
def _gelu_tanh_kernel(x_ptr, y_ptr, n_elements, BLOCK_SIZE: tl.constexpr, EVEN_N: tl.constexpr):
    pid = tl.program_id(axis=0)
    offsets = pid.to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    if EVEN_N:
        x = tl.load(x_ptr + offsets)
    else:
        mask = offsets < n_elements
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0)
    xf = x.to(tl.float32)
    # sqrt(2 / pi) = 0.7978845608028654
    inner = 0.7978845608028654 * (xf + 0.044715 * xf * xf * xf)
    y = 0.5 * xf * (1.0 + tl.extra.libdevice.tanh(inner))
    y = y.to(y_ptr.dtype.element_ty)
    if EVEN_N:
        tl.store(y_ptr + offsets, y)
    else:
        tl.store(y_ptr + offsets, y, mask=mask)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"gelu_tanh: unsupported dtype {x.dtype}")
    x = x.contiguous()
    y = torch.empty_like(x)
    n_elements = x.numel()
    grid = lambda meta: (triton.cdiv(n_elements, meta["BLOCK_SIZE"]),)
    _gelu_tanh_kernel[grid](x, y, n_elements)
    return y


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu_tanh(x)
