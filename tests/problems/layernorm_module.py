"""nn.LayerNorm as a module, in the form `kernelevo hotspots` writes: the Model holds the user's
module class as ``self.op``, so `kernelevo.patch` can match it by class and constructor arguments."""

import torch
import torch.nn as nn

batch_size = 8
dim = 32


class Model(nn.Module):
    def __init__(self, normalized_shape, eps, elementwise_affine):
        super().__init__()
        self.op = nn.LayerNorm(normalized_shape, eps=eps, elementwise_affine=elementwise_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def get_inputs():
    return [torch.randn(batch_size, dim)]


def get_init_inputs():
    return [(dim,), 1e-5, True]


# Two hidden sizes, so one verified export serves LayerNorm(32) and LayerNorm(48) but not (40,);
# rows 5..16 make a bucket that 12 rows fall in.
SIZES = [{"batch_size": 8, "dim": 32}, {"batch_size": 5, "dim": 48}, {"batch_size": 16, "dim": 32}]
