"""Timing loops, run in the worker for the candidate and then the reference, the same way.

Each repetition gets inputs with fresh values (the timing draw with its elements rolled by
r + 1 places: same distribution, different value at every position), written into the same
buffers outside the timed region, so an answer cached by shape, pointer or version is
stale; the last repetition gets the timing draw exactly and its output goes back to the
controller to be checked.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kernelevo.evaluate import hooks


@dataclass(frozen=True)
class Samples:
    ms: tuple[float, ...]
    last_output: Any
    graph: bool = False  # timed as CUDA-graph replays


def summarize(ms: Sequence[float]) -> tuple[float, float]:
    """Median and spread ((p75 - p25) / median) of timing samples."""
    med = statistics.median(ms)
    if len(ms) < 4 or med <= 0:
        return med, 0.0
    q = statistics.quantiles(ms, n=4)
    return med, (q[2] - q[0]) / med


class RotatingInputs:
    """Fixed device buffers refilled before each repetition (outside the timed region)."""

    def __init__(self, base: list[Any]):
        self.base = base
        self.bufs = [b.clone() if isinstance(b, torch.Tensor) else b for b in base]

    def fill(self, rep: int | None) -> list[Any]:
        """Values for repetition ``rep``; ``None`` means the exact timing draw."""
        with torch.no_grad():
            for src, buf in zip(self.base, self.bufs, strict=True):
                if not isinstance(src, torch.Tensor):
                    continue
                if rep is None or src.numel() < 2:
                    buf.copy_(src)
                else:
                    buf.copy_(src.reshape(-1).roll(rep + 1).reshape(src.shape))
        return self.bufs


def time_cpu(fn: Callable[..., Any], inputs: RotatingInputs, warmup: int, reps: int) -> Samples:
    clock = hooks.clock_ns
    for r in range(warmup):
        fn(*inputs.fill(r))
    ms: list[float] = []
    out = None
    for r in range(reps):
        last = r == reps - 1
        args = inputs.fill(None if last else warmup + r)
        t0 = clock()
        out = fn(*args)
        ms.append((clock() - t0) / 1e6)
    return Samples(tuple(ms), out)


def _graphed(fn: Callable[..., Any], inputs: RotatingInputs, sync: Callable[[], None]) -> Callable[..., Any] | None:
    """``fn`` captured as a CUDA graph over the rotating buffers, or None when it cannot be
    captured (a sync or a host read inside forward). Replays skip the launch overhead that
    dominates kernels of a few microseconds; every repetition still refills the same buffers."""
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn(*inputs.bufs)  # warm the allocator and Triton's caches on the capture stream
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn(*inputs.bufs)
        sync()
    except Exception:
        torch.cuda.synchronize()
        return None

    def replay(*_: Any) -> Any:
        graph.replay()
        return out

    return replay


def time_cuda(
    fn: Callable[..., Any], inputs: RotatingInputs, warmup: int, reps: int, max_time_s: float, l2_bytes: int,
    graph: bool = False,
) -> Samples:
    """Device events around each call; every stream is synchronised before the end event is
    recorded, so work on a side stream is counted. L2 is flushed with twice its size."""
    sync = hooks._ORIGINALS["torch.cuda.synchronize"]
    event = hooks._ORIGINALS["torch.cuda.Event"]
    flush = torch.empty(max(2 * l2_bytes, 1 << 20), dtype=torch.uint8, device="cuda")
    for r in range(warmup):
        fn(*inputs.fill(r))
    sync()
    replay = _graphed(fn, inputs, sync) if graph else None
    if replay is not None:
        fn = replay
    ms: list[float] = []
    out = None
    budget_ns = max_time_s * 1e9
    started = hooks.clock_ns()
    r = 0
    while True:
        last = r >= reps - 1 or (r >= 10 and hooks.clock_ns() - started > budget_ns)
        args = inputs.fill(None if last else warmup + r)
        flush.zero_()
        sync()
        start, end = event(enable_timing=True), event(enable_timing=True)
        start.record()
        out = fn(*args)
        sync()
        end.record()
        end.synchronize()
        ms.append(start.elapsed_time(end))
        r += 1
        if last:
            if replay is not None:  # the graph's output buffer is reused by the next replay
                out = [o.clone() for o in out] if isinstance(out, (list, tuple)) else out.clone()
            return Samples(tuple(ms), out, graph=replay is not None)
