"""Row softmax over the last dim: x (batch_size, dim) fp32 -> y (batch_size, dim) fp32."""

import torch
import torch.nn as nn

batch_size = 4096
dim = 8192


class Model(nn.Module):
    """y = softmax(x, dim=-1). x: (batch_size, dim) -> y: (batch_size, dim)."""

    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=-1)


def get_inputs():
    return [torch.randn(batch_size, dim)]


def get_init_inputs():
    return []


# Attention-score rows, many short rows, and a GPT-2 vocabulary row (50257: odd, longer than one block).
SIZES = [
    {"batch_size": 4096, "dim": 8192},
    {"batch_size": 32768, "dim": 1024},
    {"batch_size": 2048, "dim": 50257},
]
# Odd widths exercise the masks; 4097 is one past a block, so the column loop runs twice.
CPU_SIZES = [
    {"batch_size": 7, "dim": 33},
    {"batch_size": 16, "dim": 1000},
    {"batch_size": 5, "dim": 4097},
]
