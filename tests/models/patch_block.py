"""A block for `kernelevo.patch` and `bench-model` tests (KernelBench format): one LayerNorm the
test exports cover (32), one they do not (40), a softmax inside the forward whose (12, 40) scores
lie in a verified bucket, and a Linear+ReLU chain in an nn.Sequential."""

import torch
import torch.nn as nn

rows = 12
memory_len = 40
dim = 32


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.ln_other = nn.LayerNorm(memory_len)
        self.q = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Linear(16, dim))
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in self.parameters():  # LayerNorm starts at ones/zeros: weights that would hide a wrong kernel
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        h = self.ln(x)
        scores = torch.softmax(self.q(h) @ memory.T / dim**0.5, dim=-1)
        h = h + scores @ memory
        return h + self.mlp(h)


def get_inputs():
    return [torch.randn(rows, dim), torch.randn(memory_len, dim)]


def get_init_inputs():
    return []
