"""Linear layer then tanh-approximate GELU: x (batch_size, in_features) fp32 -> (batch_size, out_features)."""

import torch
import torch.nn as nn
import torch.nn.functional as F

batch_size = 4096
in_features = 4096
out_features = 4096


class Model(nn.Module):
    """y = gelu_tanh(x @ W^T + b), a transformer MLP's up-projection.

    x: (batch_size, in_features) -> y: (batch_size, out_features);
    linear.weight: (out_features, in_features), linear.bias: (out_features,).
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.linear(x), approximate="tanh")


def get_inputs():
    return [torch.randn(batch_size, in_features)]


def get_init_inputs():
    return [in_features, out_features]


# Square, BERT-large's MLP (1024 -> 4096), GPT-2's MLP (768 -> 3072) on 2000 tokens (M not a tile multiple).
SIZES = [
    {"batch_size": 4096, "in_features": 4096, "out_features": 4096},
    {"batch_size": 8192, "in_features": 1024, "out_features": 4096},
    {"batch_size": 2000, "in_features": 768, "out_features": 3072},
]
# Odd M, K and N everywhere, so every edge of every tile is masked.
CPU_SIZES = [
    {"batch_size": 33, "in_features": 47, "out_features": 65},
    {"batch_size": 64, "in_features": 64, "out_features": 64},
    {"batch_size": 100, "in_features": 31, "out_features": 77},
]
