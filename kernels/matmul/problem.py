"""Matrix multiply C = A @ B in fp32: A (M, K), B (K, N) -> C (M, N)."""

import torch
import torch.nn as nn

M = 4096
K = 4096
N = 4096

class Model(nn.Module):
    """C = A @ B. A: (M, K), B: (K, N) -> C: (M, N)."""

    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.matmul(A, B)


def get_inputs():
    return [torch.randn(M, K), torch.randn(K, N)]


def get_init_inputs():
    return []


# Square; LLaMA-7B's MLP up-projection (N = 11008); GPT-2's LM head (N = 50257: odd, unaligned rows).
SIZES = [
    {"M": 4096, "K": 4096, "N": 4096},
    {"M": 4096, "K": 4096, "N": 11008},
    {"M": 1024, "K": 768, "N": 50257},
]
# Odd M, K and N everywhere, so every edge of every tile is masked.
CPU_SIZES = [
    {"M": 33, "K": 47, "N": 65},
    {"M": 64, "K": 64, "N": 64},
    {"M": 100, "K": 31, "N": 77},
]
