"""Linear + tanh-GELU in Triton: one tiled matmul kernel with the bias add and GELU in its epilogue."""

import torch
import torch.nn as nn
import triton
import triton.language as tl

# fp32 dots run on FMA units, not tensor cores: 128x64 tiles with 8 warps fit in ~190 registers
# a thread without spills on sm_90 (128x128 needs 255 and spills); 3 stages hold 48 KiB of
# x and W tiles in shared memory.
BLOCK_M = 128
BLOCK_N = 64
BLOCK_K = 32
GROUP_M = 8
NUM_WARPS = 8
NUM_STAGES = 3


@triton.jit
def _matmul_bias_gelu_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, M, N, K,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_ym, stride_yn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # 2*M*N*K FLOPs for the matmul + ~10*M*N for bias and GELU. Fusing the epilogue saves a
    # write and a read of the (M, N) pre-activation: bytes ~ 4 * (M*K + N*K + N + M*N) plus re-reads
    # of x and W strips across tiles, mostly from L2 thanks to the grouped order.
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    # Grouped order: GROUP_M row-tiles walk the column tiles together, so shared W strips stay in L2.
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (pid % num_pid_in_group) % group_size_m
    pid_n = (pid % num_pid_in_group) // group_size_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk
    # W is (N, K); reading it with swapped strides gives the (BLOCK_K, BLOCK_N) tile of W^T.
    w_ptrs = w_ptr + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn
    mask_m = offs_m[:, None] < M
    mask_n = offs_n[None, :] < N

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        # Zero padding past K adds nothing to the dot products.
        a = tl.load(x_ptrs, mask=mask_m & (offs_k[None, :] < K - k), other=0.0)
        b = tl.load(w_ptrs, mask=(offs_k[:, None] < K - k) & mask_n, other=0.0)
        # "ieee": true fp32 products; TF32 would miss the fp32 tolerance.
        acc = tl.dot(a, b, acc, input_precision="ieee")
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk

    # Epilogue on the fp32 accumulator, still in registers.
    bias = tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)
    h = acc + bias[None, :]
    z = 0.7978845608028654 * (h + 0.044715 * h * h * h)  # sqrt(2 / pi) * (h + 0.044715 h^3)
    # 0.5 * (1 + tanh(z)) == sigmoid(2z); e = exp(-2|z|) <= 1 never overflows, for either sign.
    e = tl.exp(-2.0 * tl.abs(z))
    y = h * tl.where(z >= 0, 1.0, e) / (1.0 + e)
    y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
    tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=mask_m & mask_n)


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """gelu_tanh(x @ weight^T + bias).

    x: (M, K), weight: (N, K), bias: (N,), fp32 -> y: (M, N), x's dtype. Any strides.
    """
    M, K = x.shape
    N = weight.shape[0]
    y = torch.empty((M, N), dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(M, BLOCK_M) * triton.cdiv(N, BLOCK_N),)
    _matmul_bias_gelu_kernel[grid](
        x, weight, bias.contiguous(), y, M, N, K,
        x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), y.stride(0), y.stride(1),
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, GROUP_M=GROUP_M,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    return y


class ModelNew(nn.Module):
    """Drop-in for the reference Model; same ``linear.weight`` and ``linear.bias`` parameters."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        # Kept as nn.Linear only for its parameters and their initialisation; forward never calls it.
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_gelu(x, self.linear.weight, self.linear.bias)
