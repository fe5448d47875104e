"""Timing loops, the same for a candidate and for the reference (each in its own process).

Every call, warm-up included, gets a fresh draw of inputs made by the problem's own
``get_inputs()`` in the controller, so a timed call looks exactly like a checked one; its
output is kept (a reference, not a copy: a buffer the candidate reuses shows when it is
compared later) and the controller checks timed outputs after the block, outside any timed
region.

On a GPU the loop measures what the GPU does, not the host (as ``triton.testing.do_bench``
does): every draw is on the device before the first call, and then, per call, with no
synchronisation in between, the state restore (stateful problems), the L2 flush, a start
event, the call, an end event and a marker kernel are queued back to back; one
synchronisation ends the block. The queue stays ahead of the GPU, so a sample is the GPU's
time from the flush's end to the call's last kernel, not the host's launch path or a sync
round trip. The block runs under the CUDA profiler, which sees every stream: the kernels
between a flush and its marker are the call's, and their summed time is reported next to the
event time (work left on a side stream that the end event does not wait for shows as the two
disagreeing). NVML is sampled while the queue runs, not after it drained.

The device side is behind :class:`Clock`, so the order of those steps is tested on a CPU.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import torch

from kernelevo.profile.gpu import merge_samples

# Captured at import, before any candidate exists in the process: the worker's clocks.
clock_ns: Callable[[], int] = time.perf_counter_ns
_SYNC = torch.cuda.synchronize
_EVENT = torch.cuda.Event

FLUSH_KERNEL = "_kernelevo_l2_flush_kernel"  # queued before each timed call: starts its window
MARK_KERNEL = "_kernelevo_mark_kernel"  # queued after each timed call's end event: ends it


def synchronize() -> None:
    _SYNC()


class Kernel(NamedTuple):
    """One kernel the GPU ran, from the CUDA profiler: its name, device microseconds and start."""

    name: str
    us: float
    start_us: float = 0.0


class Event(Protocol):
    def record(self) -> None: ...

    def elapsed_time(self, end: Any) -> float: ...


class Clock(Protocol):
    """What a timing loop needs from a device."""

    windows: bool  # the trace shows the flush and marker kernels, so per-call kernel time can be claimed

    def event(self) -> Event: ...

    def synchronize(self) -> None: ...

    def flush(self) -> None:
        """Queue an L2 flush (and drop persisting L2 lines); launches a FLUSH_KERNEL."""

    def mark(self) -> None:
        """Queue a MARK_KERNEL: the end of one call's window in the trace."""

    def trace(self) -> contextlib.AbstractContextManager[list[Kernel]]: ...

    def sample(self) -> Any:
        """An NVML sample (or None), taken while the queue runs."""


@dataclass(frozen=True)
class Samples:
    ms: tuple[float, ...]
    outputs: tuple[Any, ...]  # every call's output, warm-up first
    graph: bool = False  # timed as CUDA-graph replays
    kernel_ms: tuple[float, ...] = ()  # per timed call: the summed time of its kernels, every stream
    trace: tuple[Kernel, ...] = ()  # every kernel of the block, warm-up included (launch counts, foreign)
    nvml: tuple[Any, ...] = field(default=())  # samples taken during the timed calls
    # What each call read, as it is after the block, aligned with ``outputs``: (draw index, the
    # arguments). CUDA-graph replays read the captured buffers, so there the last replay's draw
    # stands for them all (they were refilled before each one).
    inputs: tuple[tuple[int, list[Any]], ...] = ()


def summarize(ms: Sequence[float]) -> tuple[float, float]:
    """Median and spread ((p75 - p25) / median) of timing samples."""
    med = statistics.median(ms)
    if len(ms) < 4 or med <= 0:
        return med, 0.0
    q = statistics.quantiles(ms, n=4)
    return med, (q[2] - q[0]) / med


def paired_speedup(cand: Sequence[Sequence[float]], base: Sequence[Sequence[float]]) -> tuple[float, float]:
    """The speedup of interleaved blocks (candidate block k timed next to baseline block k): the
    median of the pairwise ratios of block medians, and their spread ((max - min) / median).
    Clock and thermal drift between blocks cancel in each ratio."""
    ratios = [statistics.median(b) / statistics.median(c)
              for c, b in zip(cand, base, strict=True) if c and b and statistics.median(c) > 0]
    if not ratios:
        return 0.0, 0.0
    med = statistics.median(ratios)
    return med, ((max(ratios) - min(ratios)) / med if med > 0 else 0.0)


def time_cpu(fn: Callable[..., Any], prepare: Callable[[int], list[Any]], n: int, warmup: int) -> Samples:
    """``prepare(i)`` gives call ``i``'s arguments (untimed); calls ``warmup`` and after are timed."""
    ms: list[float] = []
    outs: list[Any] = []
    read: list[tuple[int, list[Any]]] = []
    for i in range(n):
        args = prepare(i)
        t0 = clock_ns()
        outs.append(fn(*args))
        if i >= warmup:
            ms.append((clock_ns() - t0) / 1e6)
        read.append((i, args))
    return Samples(tuple(ms), tuple(outs), inputs=tuple(read))


def _graphed(
    fn: Callable[..., Any], args: list[Any], between: Callable[[], None],
) -> tuple[Callable[[], Any], Any] | None:
    """``fn`` captured as a CUDA graph over ``args``'s buffers, or None when it cannot be captured
    (a sync or a host read inside forward). Replays skip the launch overhead that dominates
    kernels of a few microseconds. ``between`` runs between the two calls (each call is one
    forward to the compute meter, as any other call)."""
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn(*args)  # warm the allocator and Triton's caches on the capture stream
        torch.cuda.current_stream().wait_stream(stream)
        between()
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


def call_windows(trace: Sequence[Kernel], n: int) -> list[float]:
    """Per timed call, the summed milliseconds of the kernels that started between its flush
    and its marker, on any stream. ``n`` calls were timed; fewer windows means the trace lost
    markers (then nothing is claimed)."""
    ordered = sorted(trace, key=lambda k: k.start_us)
    windows: list[float] = []
    inside, total = False, 0.0
    for k in ordered:
        if k.name == FLUSH_KERNEL:
            inside, total = True, 0.0
        elif k.name == MARK_KERNEL:
            if inside:
                windows.append(total / 1e3)
            inside = False
        elif inside:
            total += k.us
    return windows if len(windows) == n else []


def time_device(
    fn: Callable[..., Any], stage: Callable[[int], list[Any]], before: Callable[[int], None], n: int,
    warmup: int, clock: Clock, max_time_s: float, graph: bool = False, nvml_samples: int = 3,
) -> Samples:
    """Time ``fn`` on draws ``0..n-1`` (``stage(i)`` puts draw ``i`` on the device, all of them
    before the first call; ``before(i)`` queues what must precede call ``i`` untimed, such as a
    state restore). Calls before ``warmup`` are not timed; the timed ones are capped so the
    block stays near ``max_time_s`` (from the warm-up's own times)."""
    staged = [stage(i) for i in range(n)]
    outs: list[Any] = []
    warm_ms: list[float] = []
    with clock.trace() as trace:
        for i in range(warmup):
            before(i)
            start, end = clock.event(), clock.event()
            start.record()
            outs.append(fn(*staged[i]))
            end.record()
            clock.synchronize()  # warm-up only: compiles and autotuning finish before the clock runs
            warm_ms.append(start.elapsed_time(end))
        timed = n - warmup
        if warm_ms:
            per = max(statistics.median(warm_ms), 1e-3)
            timed = min(timed, max(10, int(max_time_s * 1e3 / per)))
        replay = None
        static: list[Any] = []
        out0: Any = None
        if graph and timed:
            before(warmup)
            captured = _graphed(fn, staged[warmup], lambda: before(warmup))
            if captured is not None:
                replay, out0 = captured
                static = staged[warmup]
        points = {timed * (j + 1) // (nvml_samples + 1) for j in range(nvml_samples)} if timed >= 4 else set()
        events: list[tuple[Event, Event]] = []
        nvml: list[Any] = []
        for k in range(timed):
            i = warmup + k
            before(i)
            if replay is not None:  # the graph reads the captured buffers: refill them, untimed
                for buf, a in zip(static, staged[i], strict=True):
                    if isinstance(buf, torch.Tensor):
                        buf.copy_(a)
            clock.flush()
            start, end = clock.event(), clock.event()
            start.record()
            out = replay() if replay is not None else fn(*staged[i])
            end.record()
            clock.mark()
            events.append((start, end))
            # A replay rewrites the graph's own output buffer: keep a copy, queued after the end event.
            outs.append(_clone(out0) if replay is not None else out)
            if k in points:
                nvml.append(clock.sample())
        clock.synchronize()
    ms = tuple(s.elapsed_time(e) for s, e in events)
    windows = call_windows(trace, timed) if clock.windows else []
    called = warmup + len(events)
    read = [(i, staged[i]) for i in range(warmup if replay is not None else called)]
    if replay is not None and events:
        read.append((called - 1, static))
    return Samples(ms, tuple(outs), graph=replay is not None, kernel_ms=tuple(windows),
                   trace=tuple(trace), nvml=tuple(x for x in nvml if x is not None), inputs=tuple(read))


def disagreement_note(label: str, event_ms: float, kernel_ms: float) -> str:
    """Said when a candidate's event time and its kernels' summed time differ by more than 10%."""
    diff = (kernel_ms - event_ms) / event_ms
    why = ("the GPU sat idle inside the timed window (launches slower than the kernels: host-bound) or "
           "kernels overlapped on several streams" if diff < 0 else
           "kernels ran outside the window the end event waits for (a side stream not joined to the caller's)")
    return (f"size {label}: event time {event_ms * 1e3:.1f} us vs summed kernel time {kernel_ms * 1e3:.1f} us "
            f"({diff:+.0%}): {why}")


def merge_extras(blocks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Device facts of several timing blocks of one side as one: the first block's kernel
    metadata, NVML over all blocks."""
    if not blocks:
        return {}
    out = dict(blocks[0])
    nv = [b["nvml"] for b in blocks if b.get("nvml")]
    out["nvml"] = merge_samples(nv) if nv else None
    out["persisting_l2"] = any(b.get("persisting_l2") for b in blocks)
    return out
