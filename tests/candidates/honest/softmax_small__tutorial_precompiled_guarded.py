"""Row softmax with the tutorial's precompiled-handle launch, guarded for Triton's interpreter.

Targets: tests/problems/softmax_small.py

Traits exercised:
  (3) Triton fused-softmax tutorial style: ``_kernel.warmup(..., grid=(1,))``, then
      ``kernel._init_handles()``, occupancy from ``kernel.n_regs`` / ``kernel.metadata.shared``
      and the device's limits, then a persistent launch of the precompiled handle with
      ``kernel[(n_programs, 1, 1)](...)``. Unlike softmax__tutorial_precompiled.py this version
      has a guard: when ``warmup`` hands back no compiled kernel (Triton's CPU interpreter
      returns None, since it compiles nothing) it launches the JIT function directly, one
      program per row, with the same kernel body.
  (2) dtype-generic: rows are loaded and reduced in fp32 (``.to(tl.float32)``) and the result is
      cast back to the output's element type; a half-precision input gets fewer warps.

Interpreter status: runs under TRITON_INTERPRET=1 (through the guard's direct launch).
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl
from triton.runtime import driver


@triton.jit
def _softmax_rows(
    y_ptr, x_ptr, x_row_stride, y_row_stride, n_rows, n_cols,
    BLOCK_SIZE: tl.constexpr, num_stages: tl.constexpr,
):
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    offs = tl.arange(0, BLOCK_SIZE)
    in_row = offs < n_cols
    for r in tl.range(pid, n_rows, n_programs, num_stages=num_stages):
        x = tl.load(x_ptr + r * x_row_stride + offs, mask=in_row, other=-float("inf")).to(tl.float32)
        z = x - tl.max(x, axis=0)
        e = tl.exp(z)
        p = e / tl.sum(e, axis=0)
        tl.store(y_ptr + r * y_row_stride + offs, p.to(y_ptr.dtype.element_ty), mask=in_row)


_props = {}


def _programs_per_device(kernel, num_warps: int, device: torch.device) -> int:
    index = device.index if device.index is not None else driver.active.get_current_device()
    if index not in _props:
        _props[index] = driver.active.utils.get_device_properties(index)
    props = _props[index]
    occupancy = props["max_num_regs"] // max(1, kernel.n_regs * props["warpSize"] * num_warps)
    shared = kernel.metadata.shared
    if shared:
        occupancy = min(occupancy, props["max_shared_mem"] // shared)
    return props["multiprocessor_count"] * max(1, occupancy)


def softmax(x: torch.Tensor) -> torch.Tensor:
    shape = x.shape
    x = x.reshape(-1, shape[-1]).contiguous()
    n_rows, n_cols = x.shape
    y = torch.empty_like(x)
    BLOCK_SIZE = triton.next_power_of_2(n_cols)
    half = x.dtype in (torch.float16, torch.bfloat16)
    num_warps = 4 if half else 8
    num_stages = 2

    # warmup compiles (or fetches from Triton's cache) the binary specialised on these arguments.
    kernel = _softmax_rows.warmup(
        y, x, x.stride(0), y.stride(0), n_rows, n_cols,
        BLOCK_SIZE=BLOCK_SIZE, num_stages=num_stages, num_warps=num_warps, grid=(1,),
    )
    if kernel is None:
        # No compiled binary (Triton's interpreter): nothing to size a persistent grid from,
        # so launch the JIT function directly, one program per row.
        _softmax_rows[(n_rows,)](
            y, x, x.stride(0), y.stride(0), n_rows, n_cols,
            BLOCK_SIZE=BLOCK_SIZE, num_stages=num_stages, num_warps=num_warps,
        )
    else:
        kernel._init_handles()
        n_programs = min(_programs_per_device(kernel, num_warps, x.device), n_rows)
        kernel[(n_programs, 1, 1)](y, x, x.stride(0), y.stride(0), n_rows, n_cols, BLOCK_SIZE, num_stages)
    return y.reshape(shape)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return softmax(x)
