"""LayerNorm with affine weights; the weight starts at ones, so a kernel ignoring it only
fails because the evaluator randomises parameters."""

import torch
import torch.nn as nn

batch_size = 4
dim = 33


class Model(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x)


def get_inputs():
    return [torch.randn(batch_size, dim)]


def get_init_inputs():
    return [dim]


SIZES = [{"dim": 33}, {"dim": 64}]
