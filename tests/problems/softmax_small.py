"""Row softmax, small sizes for the test suite (odd widths exercise masks)."""

import torch
import torch.nn as nn

batch_size = 5
dim = 37


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=-1)


def get_inputs():
    return [torch.randn(batch_size, dim)]


def get_init_inputs():
    return []


SIZES = [{"batch_size": 5, "dim": 37}, {"batch_size": 3, "dim": 64}]
