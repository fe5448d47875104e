"""Linear + bias + tanh-GELU with the CUDA backend's libdevice ``tanh`` in the epilogue.

Targets: kernels/matmul_bias_gelu/problem.py

Traits exercised:
  (6) libdevice math through the backend-specific import many GPU users write:
      ``from triton.language.extra.cuda import libdevice`` and ``libdevice.tanh(...)`` in the
      GELU epilogue.
  (7) tiled matmul over K with ``tl.dot`` and an fp32 accumulator, grouped program ordering
      (GROUP_SIZE_M), and the matmul tutorial's load-side trick: row and column offsets wrap
      modulo M and N (``% M``, ``% N``) so A/W loads need only the K mask, while the store uses
      separate boolean row/column masks combined with ``&``.
  (2) dtype-generic: fp32 epilogue (``.to(tl.float32)`` on the bias), result cast to the
      output's element type; ``input_precision="ieee"`` only for fp32 operands.

Interpreter status: does NOT run under TRITON_INTERPRET=1 today. The interpreter does not patch
the CUDA backend's libdevice, whose functions require a ``_semantic`` argument outside a
compiled kernel:
    triton.runtime.errors.InterpreterError: ValueError('Did you forget to add @triton.jit ? (`_semantic` argument must be provided outside of JIT functions.)')
On a GPU it is correct; a scratch copy with ``libdevice.tanh`` swapped for an exp-based tanh
runs in the interpreter and matches.
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl
from triton.language.extra.cuda import libdevice


@triton.jit
def _fused_linear_gelu_kernel(
    a_ptr, w_ptr, bias_ptr, c_ptr,
    M, N, K,
    stride_am, stride_ak, stride_wn, stride_wk, stride_cm, stride_cn,
    USE_IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid = tl.program_id(axis=0)
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * grid_n
    group_id = pid // width
    group_size = min(grid_m - group_id * GROUP_M, GROUP_M)
    pid_m = group_id * GROUP_M + (pid % width) % group_size
    pid_n = (pid % width) // group_size

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # Wrapped offsets: out-of-range rows/columns re-read valid memory; the store masks them off.
    offs_am = offs_m % M
    offs_wn = offs_n % N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_am[:, None] * stride_am + offs_k[None, :] * stride_ak
    w_ptrs = w_ptr + offs_k[:, None] * stride_wk + offs_wn[None, :] * stride_wn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - kb * BLOCK_K
        a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
        w = tl.load(w_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        if USE_IEEE:
            acc = tl.dot(a, w, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, w, acc)
        a_ptrs += BLOCK_K * stride_ak
        w_ptrs += BLOCK_K * stride_wk

    row_mask = offs_m < M
    col_mask = offs_n < N
    bias = tl.load(bias_ptr + offs_n, mask=col_mask, other=0.0).to(tl.float32)
    z = acc + bias[None, :]
    inner = 0.7978845608028654 * (z + 0.044715 * z * z * z)
    out = 0.5 * z * (1.0 + libdevice.tanh(inner))

    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])


class ModelNew(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.linear.weight, self.linear.bias
        lead = x.shape[:-1]
        a = x.reshape(-1, x.shape[-1])
        M, K = a.shape
        N = weight.shape[0]
        c = torch.empty((M, N), device=x.device, dtype=x.dtype)
        BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M = 64, 64, 32, 8
        grid = (triton.cdiv(M, BLOCK_M) * triton.cdiv(N, BLOCK_N),)
        _fused_linear_gelu_kernel[grid](
            a, weight, bias, c,
            M, N, K,
            a.stride(0), a.stride(1), weight.stride(0), weight.stride(1), c.stride(0), c.stride(1),
            USE_IEEE=a.dtype == torch.float32,
            BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, GROUP_M=GROUP_M,
            num_warps=4, num_stages=3,
        )
        return c.reshape(*lead, N)
