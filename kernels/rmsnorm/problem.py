"""RMSNorm over the last dim with a weight (LLaMA style, eps 1e-6): x (batch_size, dim) fp32."""

import torch
import torch.nn as nn

batch_size = 4096
dim = 4096


class Model(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight over the last dim.

    x: (batch_size, dim) -> y: (batch_size, dim); weight: (dim,).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = 1e-6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def get_inputs():
    return [torch.randn(batch_size, dim)]


def get_init_inputs():
    return [dim]


# LLaMA hidden sizes: 7B (4096), 70B (8192), 13B (5120: one full block plus a masked one).
SIZES = [
    {"batch_size": 4096, "dim": 4096},
    {"batch_size": 8192, "dim": 8192},
    {"batch_size": 2048, "dim": 5120},
]
# Odd widths exercise the masks; 4097 is one past a block, so the column loops run twice.
CPU_SIZES = [
    {"batch_size": 7, "dim": 33},
    {"batch_size": 16, "dim": 1000},
    {"batch_size": 5, "dim": 4097},
]
