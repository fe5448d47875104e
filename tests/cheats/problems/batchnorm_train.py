"""BatchNorm1d in training mode (stateful): x (batch_size, features) fp32 -> same shape.

Each forward normalises with the batch's own statistics (biased variance) and updates the
running_mean / running_var buffers (momentum 0.1, unbiased variance) and num_batches_tracked,
so a candidate must get both the output and the buffers right on every call.
"""

import torch
import torch.nn as nn

batch_size = 64
features = 48


class Model(nn.Module):
    """y = (x - mean_b) / sqrt(var_b + eps) * weight + bias; running stats updated in place.

    State dict: bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.num_batches_tracked.
    """

    def __init__(self, features: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


def get_inputs():
    return [torch.randn(batch_size, features)]


def get_init_inputs():
    return [features]


# Small enough for the Triton interpreter on a CPU; 33 rows is not a power of two (masked loads).
SIZES = [
    {"batch_size": 64, "features": 48},
    {"batch_size": 33, "features": 100},
]
