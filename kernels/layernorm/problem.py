"""LayerNorm over the last dim with weight and bias (nn.LayerNorm, eps 1e-5): x (batch_size, dim) fp32."""

import torch
import torch.nn as nn
import torch.nn.functional as F

batch_size = 4096
dim = 8192


class Model(nn.Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last dim.

    x: (batch_size, dim) -> y: (batch_size, dim); weight, bias: (dim,). The parameters have
    nn.LayerNorm's names, so the state_dict keys are ``weight`` and ``bias``.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = 1e-5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


def get_inputs():
    return [torch.randn(batch_size, dim)]


def get_init_inputs():
    return [dim]


# Transformer hidden sizes: 8192, BERT-large's 1024 (many short rows), GPT-3's 12288 (three blocks).
SIZES = [
    {"batch_size": 4096, "dim": 8192},
    {"batch_size": 16384, "dim": 1024},
    {"batch_size": 2048, "dim": 12288},
]
# Odd widths exercise the masks; 4097 is one past a block, so the column loops run twice.
CPU_SIZES = [
    {"batch_size": 7, "dim": 33},
    {"batch_size": 16, "dim": 1000},
    {"batch_size": 5, "dim": 4097},
]
