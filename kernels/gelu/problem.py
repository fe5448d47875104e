"""Tanh-approximate GELU, elementwise: x (batch_size, dim) fp32 -> y (batch_size, dim) fp32."""

import torch
import torch.nn as nn
import torch.nn.functional as F

batch_size = 4096
dim = 16384


class Model(nn.Module):
    """y = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))). x, y: (batch_size, dim)."""

    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


def get_inputs():
    return [torch.randn(batch_size, dim)]


def get_init_inputs():
    return []


# Transformer MLP activations (tokens, 4 * hidden): GPT-3 6.7B-ish, LLaMA-7B's 11008, GPT-2's 3072.
SIZES = [
    {"batch_size": 4096, "dim": 16384},
    {"batch_size": 8192, "dim": 11008},
    {"batch_size": 16384, "dim": 3072},
]
# Element counts 231, 16000 and 20485: none a multiple of the block, so the last block is masked.
CPU_SIZES = [
    {"batch_size": 7, "dim": 33},
    {"batch_size": 16, "dim": 1000},
    {"batch_size": 5, "dim": 4097},
]
