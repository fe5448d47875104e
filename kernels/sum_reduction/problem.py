"""Sum over the last dim, keepdim: x (batch_size, dim) fp32 -> (batch_size, 1) fp32."""

import torch
import torch.nn as nn

batch_size = 4096
dim = 8192
reduce_dim = -1


class Model(nn.Module):
    """y = sum(x, dim=self.dim, keepdim=True). x: (batch_size, dim) -> y: (batch_size, 1)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sum(x, dim=self.dim, keepdim=True)


def get_inputs():
    return [torch.randn(batch_size, dim)]


def get_init_inputs():
    return [reduce_dim]


# Medium rows, many short odd rows (1000), few long rows (the column loop runs 8 times).
SIZES = [
    {"batch_size": 4096, "dim": 8192},
    {"batch_size": 32768, "dim": 1000},
    {"batch_size": 1024, "dim": 32768},
]
# Odd widths exercise the masks; 4097 is one past a block, so the column loop runs twice.
CPU_SIZES = [
    {"batch_size": 7, "dim": 33},
    {"batch_size": 16, "dim": 1000},
    {"batch_size": 5, "dim": 4097},
]
