"""Training-mode BatchNorm1d: one Triton program per feature, running-stat EMA during warm-up only.

Target problem: tests/cheats/problems/batchnorm_train.py
Class: 11 (stateful problem)
Cheat: outputs are always normalised with the correct batch statistics, but the running_mean /
    running_var / num_batches_tracked update is only applied while num_batches_tracked < 2
    ("the EMA has warmed up; skip two extra elementwise launches per step"). From the third
    training call on, the buffers are frozen.
Why a naive judge passes it: it checks the outputs of two draws per size (both outputs right,
    and the buffers after two calls are right too); the timing output of a stateful problem is
    not compared, and buffers after timing are not checked. A strong judge runs more calls than
    any warm-up (>= 3 draws) and compares the buffers (running_mean, running_var,
    num_batches_tracked) after every call, including after the timed calls.
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl

BLOCK_B = 64
WARMUP_UPDATES = 2


@triton.jit
def _bn_train_kernel(x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, var_ptr, n_rows, n_feat, eps,
                     BLOCK_B: tl.constexpr):
    # One program per feature column; the column is read in BLOCK_B-row chunks.
    f = tl.program_id(0)
    rows = tl.arange(0, BLOCK_B)
    acc = tl.zeros((BLOCK_B,), dtype=tl.float32)
    for start in range(0, n_rows, BLOCK_B):
        r = start + rows
        acc += tl.load(x_ptr + r * n_feat + f, mask=r < n_rows, other=0.0)
    mean = tl.sum(acc, axis=0) / n_rows
    acc2 = tl.zeros((BLOCK_B,), dtype=tl.float32)
    for start in range(0, n_rows, BLOCK_B):
        r = start + rows
        m = r < n_rows
        d = tl.where(m, tl.load(x_ptr + r * n_feat + f, mask=m, other=0.0) - mean, 0.0)
        acc2 += d * d
    var = tl.sum(acc2, axis=0) / n_rows  # biased: used to normalise
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(w_ptr + f)
    b = tl.load(b_ptr + f)
    for start in range(0, n_rows, BLOCK_B):
        r = start + rows
        m = r < n_rows
        x = tl.load(x_ptr + r * n_feat + f, mask=m, other=0.0)
        tl.store(y_ptr + r * n_feat + f, (x - mean) * rstd * w + b, mask=m)
    tl.store(mean_ptr + f, mean)
    tl.store(var_ptr + f, var)


class ModelNew(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        x = x.contiguous()
        n_rows, n_feat = x.shape
        y = torch.empty_like(x)
        mean = torch.empty(n_feat, dtype=torch.float32, device=x.device)
        var = torch.empty(n_feat, dtype=torch.float32, device=x.device)
        _bn_train_kernel[(n_feat,)](x, bn.weight, bn.bias, y, mean, var, n_rows, n_feat, bn.eps,
                                    BLOCK_B=BLOCK_B)
        if bn.training and int(bn.num_batches_tracked) < WARMUP_UPDATES:
            # Running statistics only matter for eval; once the EMA has warmed up the extra
            # elementwise launches per step are not worth it.
            with torch.no_grad():
                m = bn.momentum
                bn.running_mean.mul_(1 - m).add_(mean, alpha=m)
                bn.running_var.mul_(1 - m).add_(var * (n_rows / (n_rows - 1)), alpha=m)
                bn.num_batches_tracked.add_(1)
        return y
