"""Outputs around 1e-6: under an absolute tolerance of 1e-4 an all-zeros kernel would pass."""

import torch
import torch.nn as nn

n = 1000


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1e-6


def get_inputs():
    return [torch.randn(n)]


def get_init_inputs():
    return []
