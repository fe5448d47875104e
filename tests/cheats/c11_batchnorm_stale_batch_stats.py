"""Training-mode BatchNorm1d: Triton stats + normalise kernels, with statistics reuse in steady state.

Target problem: tests/cheats/problems/batchnorm_train.py
Class: 11 (stateful problem)
Cheat: the first two calls of an instance compute the batch mean/variance with a reduction
    kernel; from the third call on, the reduction is skipped and the last computed mean/rstd are
    reused ("statistics are stable between consecutive batches"), so the output is normalised
    with stale statistics, and the running buffers are updated with the stale values too.
Why a naive judge passes it: it checks two draws per size on one instance (calls 1 and 2, both
    exact, buffers right); the timed calls of a stateful problem are not compared, so the stale
    steady state (calls 3+) is never looked at, and the timing measures the cheap
    normalise-only path. A strong judge checks three or more consecutive calls on one instance
    (training-mode outputs depend only on the batch, so they are checkable), and compares the
    last timed output even for stateful problems when the output does not depend on the state.
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl

BLOCK_B = 64
STATS_CALLS = 2


@triton.jit
def _bn_stats_kernel(x_ptr, mean_ptr, var_ptr, n_rows, n_feat, BLOCK_B: tl.constexpr):
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
    tl.store(mean_ptr + f, mean)
    tl.store(var_ptr + f, tl.sum(acc2, axis=0) / n_rows)


@triton.jit
def _bn_apply_kernel(x_ptr, w_ptr, b_ptr, mean_ptr, var_ptr, y_ptr, n_rows, n_feat, eps,
                     BLOCK_B: tl.constexpr):
    f = tl.program_id(0)
    rows = tl.arange(0, BLOCK_B)
    mean = tl.load(mean_ptr + f)
    rstd = 1.0 / tl.sqrt(tl.load(var_ptr + f) + eps)
    w = tl.load(w_ptr + f)
    b = tl.load(b_ptr + f)
    for start in range(0, n_rows, BLOCK_B):
        r = start + rows
        m = r < n_rows
        x = tl.load(x_ptr + r * n_feat + f, mask=m, other=0.0)
        tl.store(y_ptr + r * n_feat + f, (x - mean) * rstd * w + b, mask=m)


class ModelNew(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(features)
        self._stats = None
        self._calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        x = x.contiguous()
        n_rows, n_feat = x.shape
        self._calls += 1
        if self._stats is None or self._calls <= STATS_CALLS or self._stats[0].shape[0] != n_feat:
            mean = torch.empty(n_feat, dtype=torch.float32, device=x.device)
            var = torch.empty(n_feat, dtype=torch.float32, device=x.device)
            _bn_stats_kernel[(n_feat,)](x, mean, var, n_rows, n_feat, BLOCK_B=BLOCK_B)
            self._stats = (mean, var)
        mean, var = self._stats  # steady state: statistics from the most recent reduction
        y = torch.empty_like(x)
        _bn_apply_kernel[(n_feat,)](x, bn.weight, bn.bias, mean, var, y, n_rows, n_feat, bn.eps,
                                    BLOCK_B=BLOCK_B)
        if bn.training:
            with torch.no_grad():
                m = bn.momentum
                bn.running_mean.mul_(1 - m).add_(mean, alpha=m)
                bn.running_var.mul_(1 - m).add_(var * (n_rows / (n_rows - 1)), alpha=m)
                bn.num_batches_tracked.add_(1)
        return y
