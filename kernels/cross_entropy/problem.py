"""Cross-entropy loss, mean over rows: logits (batch_size, num_classes) fp32, targets (batch_size,) int64."""

import torch
import torch.nn as nn
import torch.nn.functional as F

batch_size = 4096
num_classes = 32000


class Model(nn.Module):
    """loss = mean_i(logsumexp(logits[i]) - logits[i, targets[i]]).

    logits: (batch_size, num_classes) fp32, targets: (batch_size,) int64 in [0, num_classes)
    -> loss: () fp32.
    """

    def __init__(self):
        super().__init__()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets)


def get_inputs():
    return [torch.randn(batch_size, num_classes), torch.randint(0, num_classes, (batch_size,))]


def get_init_inputs():
    return []


# LLM heads: LLaMA's 32000 and GPT-2's 50257 (odd) vocabularies; ImageNet's 1000 classes, many rows.
SIZES = [
    {"batch_size": 4096, "num_classes": 32000},
    {"batch_size": 2048, "num_classes": 50257},
    {"batch_size": 32768, "num_classes": 1000},
]
# Odd widths exercise the masks; 4097 is one past a block, so the column loop runs twice.
CPU_SIZES = [
    {"batch_size": 7, "num_classes": 33},
    {"batch_size": 16, "num_classes": 1000},
    {"batch_size": 5, "num_classes": 4097},
]
