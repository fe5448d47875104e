"""Row softmax written the way Triton's fused-softmax tutorial launches its kernel.

Targets: kernels/softmax/problem.py

Trait exercised (3): the tutorial's precompiled-handle flow. The wrapper compiles the kernel
ahead of the launch with ``_kernel.warmup(..., grid=(1,))``, calls ``kernel._init_handles()``,
reads ``kernel.n_regs`` and ``kernel.metadata.shared`` to work out how many programs fit on
each SM, sizes a persistent grid from that, and launches the precompiled handle with
``kernel[(num_programs, 1, 1)](...)``, passing every argument (constexprs too) positionally.
Each program walks rows ``pid, pid + num_programs, ...`` with ``tl.range(..., num_stages=...)``.
The whole row is one block (``next_power_of_2(n_cols)``), as in the tutorial.

Interpreter status: does NOT run under TRITON_INTERPRET=1 today, by design of this fixture (it
is the code a GPU user writes, unguarded). In the interpreter ``JITFunction.warmup`` returns
None, so the first failure is
    AttributeError: 'NoneType' object has no attribute '_init_handles'
and, past that, the device limits come from ``triton.runtime.driver.active``, which in the CPU
interpreter raises ``RuntimeError: 0 active drivers ([]). There should only be one.``. The
device query is made lazily (after ``_init_handles``), so importing this module on a CPU works.
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl
from triton.runtime import driver


@triton.jit
def _softmax_persistent_kernel(
    out_ptr, in_ptr, in_row_stride, out_row_stride, n_rows, n_cols,
    BLOCK_SIZE: tl.constexpr, num_stages: tl.constexpr,
):
    # Persistent programs: program p handles rows p, p + P, p + 2P, ... (P = programs launched).
    first_row = tl.program_id(0)
    row_step = tl.num_programs(0)
    col_offsets = tl.arange(0, BLOCK_SIZE)
    col_mask = col_offsets < n_cols
    for row_idx in tl.range(first_row, n_rows, row_step, num_stages=num_stages):
        row_start = in_ptr + row_idx * in_row_stride
        # -inf padding never wins the max and contributes exp(-inf) = 0 to the sum.
        row = tl.load(row_start + col_offsets, mask=col_mask, other=-float("inf"))
        row_minus_max = row - tl.max(row, axis=0)
        numerator = tl.exp(row_minus_max)
        denominator = tl.sum(numerator, axis=0)
        out_start = out_ptr + row_idx * out_row_stride
        tl.store(out_start + col_offsets, numerator / denominator, mask=col_mask)


_device_limits_cache = {}


def _device_limits(device: torch.device):
    """(SM count, registers per SM, shared memory per SM, warp size) of ``device``."""
    index = device.index if device.index is not None else driver.active.get_current_device()
    if index not in _device_limits_cache:
        props = driver.active.utils.get_device_properties(index)
        _device_limits_cache[index] = (
            props["multiprocessor_count"], props["max_num_regs"], props["max_shared_mem"], props["warpSize"],
        )
    return _device_limits_cache[index]


def softmax(x: torch.Tensor) -> torch.Tensor:
    """softmax over the last dim of a 2-D tensor, one persistent program per group of rows."""
    x = x.contiguous()
    n_rows, n_cols = x.shape
    BLOCK_SIZE = triton.next_power_of_2(n_cols)
    num_warps = 8
    # Deeper software pipelining only pays while a row's block stays small.
    num_stages = 4 if BLOCK_SIZE <= 4096 else 2
    y = torch.empty_like(x)

    # Compile (or fetch from Triton's cache: the binary is specialised on these very arguments)
    # and read the resources it needs.
    kernel = _softmax_persistent_kernel.warmup(
        y, x, x.stride(0), y.stride(0), n_rows, n_cols,
        BLOCK_SIZE=BLOCK_SIZE, num_stages=num_stages, num_warps=num_warps, grid=(1,),
    )
    kernel._init_handles()
    n_regs = kernel.n_regs
    size_smem = kernel.metadata.shared
    num_sm, regs_per_sm, smem_per_sm, warp_size = _device_limits(x.device)
    occupancy = regs_per_sm // max(1, n_regs * warp_size * num_warps)
    if size_smem > 0:
        occupancy = min(occupancy, smem_per_sm // size_smem)
    occupancy = max(1, occupancy)

    num_programs = min(num_sm * occupancy, n_rows)
    kernel[(num_programs, 1, 1)](
        y, x, x.stride(0), y.stride(0), n_rows, n_cols, BLOCK_SIZE, num_stages,
    )
    return y


class ModelNew(nn.Module):
    """Drop-in for the reference Model: softmax(x, dim=-1) on (batch_size, dim)."""

    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return softmax(x)
