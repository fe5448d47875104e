"""Timing loops, the same for a candidate and for the reference (each in its own process).

Every call, warm-up included, gets a fresh draw of inputs made by the problem's own
``get_inputs()`` in the controller, so a timed call looks exactly like a checked one; its
output is kept (a reference, not a copy: a buffer the candidate reuses shows when it is
compared later) and the controller checks timed outputs after the block, outside any timed
region. Inputs are moved to the device, and a stateful model's state restored, before the
clock starts.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# Captured at import, before any candidate exists in the process: the worker's clocks.
clock_ns: Callable[[], int] = time.perf_counter_ns
_SYNC = torch.cuda.synchronize
_EVENT = torch.cuda.Event


def synchronize() -> None:
    _SYNC()


@dataclass(frozen=True)
class Samples:
    ms: tuple[float, ...]
    outputs: tuple[Any, ...]  # every call's output, warm-up first
    graph: bool = False  # timed as CUDA-graph replays


def summarize(ms: Sequence[float]) -> tuple[float, float]:
    """Median and spread ((p75 - p25) / median) of timing samples."""
    med = statistics.median(ms)
    if len(ms) < 4 or med <= 0:
        return med, 0.0
    q = statistics.quantiles(ms, n=4)
    return med, (q[2] - q[0]) / med


def time_cpu(fn: Callable[..., Any], prepare: Callable[[int], list[Any]], n: int, warmup: int) -> Samples:
    """``prepare(i)`` gives call ``i``'s arguments (untimed); calls ``warmup`` and after are timed."""
    ms: list[float] = []
    outs: list[Any] = []
    for i in range(n):
        args = prepare(i)
        t0 = clock_ns()
        outs.append(fn(*args))
        if i >= warmup:
            ms.append((clock_ns() - t0) / 1e6)
    return Samples(tuple(ms), tuple(outs))


def _graphed(fn: Callable[..., Any], args: list[Any]) -> tuple[Callable[[], Any], Any] | None:
    """``fn`` captured as a CUDA graph over ``args``'s buffers, or None when it cannot be captured
    (a sync or a host read inside forward). Replays skip the launch overhead that dominates
    kernels of a few microseconds."""
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn(*args)  # warm the allocator and Triton's caches on the capture stream
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn(*args)
        _SYNC()
    except Exception:
        _SYNC()
        return None
    return graph.replay, out


def _clone(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, (list, tuple)):
        return type(out)(_clone(o) for o in out)
    return out


def time_cuda(
    fn: Callable[..., Any], prepare: Callable[[int], list[Any]], n: int, warmup: int, l2_bytes: int,
    max_time_s: float, graph: bool = False,
) -> Samples:
    """Device events around each call; every stream is synchronised before the end event is
    recorded, so work on a side stream is counted. L2 is flushed with twice its size."""
    flush = torch.empty(max(2 * l2_bytes, 1 << 20), dtype=torch.uint8, device="cuda")
    ms: list[float] = []
    outs: list[Any] = []
    replay = None
    static: list[Any] = []
    started = clock_ns()
    for i in range(n):
        args = prepare(i)
        if graph and i == warmup:
            captured = _graphed(fn, args)
            if captured is not None:
                replay, out0 = captured
                static = args
        if replay is not None:  # the graph reads the captured buffers: refill them
            for buf, a in zip(static, args, strict=True):
                if isinstance(buf, torch.Tensor):
                    buf.copy_(a)
        flush.zero_()
        _SYNC()
        start, end = _EVENT(enable_timing=True), _EVENT(enable_timing=True)
        start.record()
        out = replay() if replay is not None else fn(*args)
        _SYNC()
        end.record()
        end.synchronize()
        if i >= warmup:
            ms.append(start.elapsed_time(end))
        # A replay rewrites the graph's own output buffer: keep a copy, made outside the timed region.
        outs.append(_clone(out0) if replay is not None else out)
        if i >= warmup + 10 and clock_ns() - started > max_time_s * 1e9:
            break
    return Samples(tuple(ms), tuple(outs), graph=replay is not None)
