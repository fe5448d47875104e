"""The GPU timing protocol, on a CPU: the order of events, flushes, markers and syncs (a fake
clock records them), the per-call kernel windows, blocks and paired speedups, and the
controller's alternation of candidate and reference blocks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from kernelevo.evaluate import evaluator as E
from kernelevo.evaluate import protocol as P
from kernelevo.evaluate.timing import (
    FLUSH_KERNEL,
    MARK_KERNEL,
    Kernel,
    call_windows,
    disagreement_note,
    merge_extras,
    paired_speedup,
    time_device,
)
from kernelevo.problem import load_problem
from kernelevo.settings import EvalSettings
from tests.conftest import CANDIDATES, PROBLEMS


class _Event:
    def __init__(self, log: list[str], clock: FakeClock) -> None:
        self.log, self.clock, self.t = log, clock, 0.0

    def record(self) -> None:
        self.t = self.clock.now
        self.log.append("record")

    def elapsed_time(self, end: Any) -> float:
        return end.t - self.t


class FakeClock:
    """Logs what the loop asks of the device; each call of the model takes ``call_ms`` of fake time."""

    def __init__(self, call_ms: float = 1.0) -> None:
        self.windows = True
        self.log: list[str] = []
        self.now = 0.0
        self.call_ms = call_ms
        self.kernels: list[Kernel] = []

    def event(self) -> _Event:
        return _Event(self.log, self)

    def synchronize(self) -> None:
        self.log.append("sync")

    def flush(self) -> None:
        self.log.append("flush")
        self.kernels.append(Kernel(FLUSH_KERNEL, 30.0, self.now * 1e3))
        self.now += 0.03

    def mark(self) -> None:
        self.log.append("mark")
        self.kernels.append(Kernel(MARK_KERNEL, 1.0, self.now * 1e3))
        self.now += 0.001

    @contextlib.contextmanager
    def trace(self) -> Iterator[list[Kernel]]:
        out: list[Kernel] = []
        self.log.append("trace on")
        yield out
        self.log.append("trace off")
        out += self.kernels

    def sample(self) -> dict[str, Any]:
        self.log.append("nvml")
        return {"sm_clock_mhz": 1980, "throttled": False}

    def call(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append("call")
        self.kernels.append(Kernel("_my_kernel", self.call_ms * 1e3, self.now * 1e3))
        self.now += self.call_ms
        return x + 1


def _run(clock: FakeClock, n: int = 8, warmup: int = 2, max_time_s: float = 10.0, samples: int = 3):
    log = clock.log

    def stage(i: int) -> list[Any]:
        log.append(f"stage {i}")
        return [torch.full((2,), float(i))]

    def before(i: int) -> None:
        log.append(f"before {i}")

    return time_device(clock.call, stage, before, n, warmup, clock, max_time_s, nvml_samples=samples)


def test_every_draw_is_on_the_device_before_the_first_call_and_one_sync_ends_the_block() -> None:
    clock = FakeClock()
    s = _run(clock)
    log = clock.log
    assert log[:8] == [f"stage {i}" for i in range(8)]  # no host copy inside the loop
    first_timed = log.index("before 2")
    timed = log[first_timed:]
    assert timed.count("sync") == 1 and timed[-2:] == ["sync", "trace off"]  # one sync, after the last call
    per_call = [x for x in timed if x not in ("nvml", "sync", "trace off")]
    for k in range(6):  # restore, flush, start, call, end, marker: back to back, nothing else
        assert per_call[6 * k:6 * k + 6] == [f"before {2 + k}", "flush", "record", "call", "record", "mark"]
    assert log[log.index("trace on") + 1:first_timed].count("sync") == 2  # warm-up calls do sync
    assert len(s.ms) == 6 and all(m == pytest.approx(1.0) for m in s.ms)  # the flush is outside the window
    assert len(s.outputs) == 8 and float(s.outputs[-1][0]) == 8.0


def test_nvml_is_sampled_while_the_queue_runs_not_after_it() -> None:
    clock = FakeClock()
    s = _run(clock, n=10, warmup=2, samples=3)
    log = clock.log
    assert log.count("nvml") == 3 and len(s.nvml) == 3
    last_sync = len(log) - 1 - log[::-1].index("sync")
    assert all(i < last_sync for i, x in enumerate(log) if x == "nvml")
    assert log.index("nvml") > log.index("before 2")  # during the timed calls, not before them
    assert _run(FakeClock(), n=4, warmup=1).nvml == ()  # three timed calls: too few to sample


def test_timed_calls_are_capped_by_the_warm_up_estimate() -> None:
    s = _run(FakeClock(call_ms=100.0), n=50, warmup=2, max_time_s=0.5)
    assert len(s.ms) == 10  # 0.5 s / 100 ms = 5, but never fewer than 10
    s = _run(FakeClock(call_ms=10.0), n=50, warmup=2, max_time_s=0.2)
    assert len(s.ms) == 20 and len(s.outputs) == 22
    assert len(_run(FakeClock(), n=30, warmup=0).ms) == 30  # no warm-up, no estimate: every draw


def test_kernel_windows_count_every_stream_between_flush_and_marker() -> None:
    clock = FakeClock(call_ms=2.0)
    s = _run(clock, n=5, warmup=1)
    assert s.kernel_ms == pytest.approx((2.0,) * 4)
    trace = [Kernel(FLUSH_KERNEL, 30, 0), Kernel("main", 500, 40), Kernel("side", 700, 45), Kernel(MARK_KERNEL, 1, 800),
             Kernel("restore_copy", 3, 801), Kernel(FLUSH_KERNEL, 30, 900), Kernel("main", 400, 940),
             Kernel(MARK_KERNEL, 1, 1400)]
    assert call_windows(trace, 2) == pytest.approx([1.2, 0.4])  # copies between windows are nobody's call
    assert call_windows(list(reversed(trace)), 2) == pytest.approx([1.2, 0.4])  # ordered by start, not by list
    assert call_windows(trace[:4], 2) == []  # a marker lost: no claim at all
    assert call_windows([Kernel(MARK_KERNEL, 1, 0), *trace], 2) == pytest.approx([1.2, 0.4])


def test_paired_speedup_cancels_drift_between_blocks() -> None:
    # The GPU slows down by 2x after the first block; each pair shares the slowdown.
    cand = [(1.0, 1.0, 1.2), (2.0, 2.0, 2.4), (2.0, 2.1, 2.0)]
    ref = [(3.0, 3.0, 3.0), (6.0, 6.0, 6.0), (6.0, 6.0, 6.3)]
    speedup, spread = paired_speedup(cand, ref)
    assert speedup == pytest.approx(3.0) and spread == pytest.approx(0.0)
    s, spread = paired_speedup([(1.0,), (1.0,), (1.0,)], [(2.0,), (3.0,), (4.0,)])
    assert s == 3.0 and spread == pytest.approx(2.0 / 3.0)
    assert paired_speedup([], []) == (0.0, 0.0)
    with pytest.raises(ValueError):
        paired_speedup([(1.0,)], [(1.0,), (2.0,)])


def test_disagreement_note_and_merged_device_facts() -> None:
    note = disagreement_note("n=4", 0.010, 0.007)
    assert note.startswith("size n=4: event time 10.0 us vs summed kernel time 7.0 us (-30%)") and "idle" in note
    assert "side stream" in disagreement_note("n=4", 0.010, 0.02)
    merged = merge_extras([{"kernels": [1], "nvml": {"sm_clock_mhz": 1900, "throttled": False,
                                                      "throttle_reasons": ["sw_power_cap"]}},
                           {"kernels": [2], "nvml": {"sm_clock_mhz": 1700, "temperature_c": 70, "throttled": True},
                            "persisting_l2": True}])
    assert merged["kernels"] == [1] and merged["persisting_l2"] is True
    assert merged["nvml"]["sm_clock_mhz"] == 1700 and merged["nvml"]["throttled"] is True
    assert merged["nvml"]["samples"] == 2 and merged["nvml"]["throttle_reasons"] == ["sw_power_cap"]
    assert merge_extras([]) == {} and merge_extras([{"nvml": None}])["nvml"] is None


def test_blocks_split_the_draws_and_carry_the_warm_up_first(evaluators) -> None:
    ev = evaluators("softmax_small")
    saved = ev.settings
    try:
        ev.settings = EvalSettings(timing_blocks=3)
        assert ev._blocks(1, 4) == [(0, 2, 1), (2, 3, 0), (3, 4, 0)]
        assert ev._blocks(10, 110) == [(0, 43, 10), (43, 76, 0), (76, 110, 0)]
        ev.settings = EvalSettings(timing_blocks=5)
        assert ev._blocks(1, 3) == [(0, 2, 1), (2, 3, 0)]  # never an empty block
        ev.settings = EvalSettings(timing_blocks=0)
        assert ev._blocks(0, 4) == [(0, 4, 0)]
    finally:
        ev.settings = saved


def test_candidate_and_reference_blocks_alternate(monkeypatch) -> None:
    """A B A B ...: the controller holds one timing block at a time, candidate first in each pair."""
    order: list[tuple[str, int]] = []
    original = E._Worker.ask

    def ask(self: Any, msg: Any, deadline: float, want: Any) -> Any:
        if isinstance(msg, P.Time):
            order.append((self.job_dir.name.split("-")[0], len(msg.draws)))
        return original(self, msg, deadline, want)

    monkeypatch.setattr(E._Worker, "ask", ask)
    from kernelevo.candidate import Candidate

    settings = EvalSettings(timing_blocks=3, cpu_reps=3, cpu_warmup=1)
    with E.Evaluator(load_problem(PROBLEMS / "softmax_small.py"), "cpu", settings) as ev:
        r = ev.evaluate(Candidate.from_file(CANDIDATES / "softmax_good.py"))
    assert r.ok, r.reason
    per_size = [("candidate", 2), ("reference", 2), ("candidate", 1), ("reference", 1), ("candidate", 1),
                ("reference", 1)]
    assert order == per_size * len(r.sizes)
    assert all(s.blocks == 3 and s.latency_ms and s.reference_ms for s in r.sizes)
    assert all(s.speedup is None for s in r.sizes)  # paired per block, but a CPU claims no speedup


def test_the_reference_blocks_do_not_count_against_the_candidates_time_limit(monkeypatch) -> None:
    """A slow reference block (a first torch.compile takes tens of seconds) between candidate blocks
    must not use up the candidate's limit."""
    import time

    from kernelevo.candidate import Candidate

    original = E.Evaluator._time_reference

    def slow(self: Any, *args: Any) -> P.Timed:
        out = original(self, *args)
        time.sleep(2.5)
        return out

    monkeypatch.setattr(E.Evaluator, "_time_reference", slow)
    settings = EvalSettings(timeout_s=8.0, timing_blocks=3, cpu_reps=3, cpu_warmup=1)
    with E.Evaluator(load_problem(PROBLEMS / "softmax_small.py"), "cpu", settings) as ev:
        r = ev.evaluate(Candidate.from_file(CANDIDATES / "softmax_good.py"))
    assert r.ok, r.reason
    assert r.elapsed_s > 8.0  # 2 sizes x 3 blocks x 2.5 s of reference: far past the candidate's own limit


def test_persisting_l2_calls_are_resolved_up_front() -> None:
    """A CUDA runtime without the calls (or none at all) is found out when the clock is built, not
    inside a candidate's timing."""
    import ctypes
    from types import SimpleNamespace

    from kernelevo.evaluate.cuda_clock import _persisting_l2_calls

    def fn() -> int:
        return 0

    def set_limit() -> int:
        return 0

    rt = SimpleNamespace(cudaDeviceGetLimit=fn, cudaCtxResetPersistingL2Cache=lambda: 0, cudaDeviceSetLimit=set_limit)
    calls = _persisting_l2_calls(rt)
    assert calls is not None and calls[0] is fn and calls[0].argtypes[1] is ctypes.c_int
    assert calls[2].argtypes == [ctypes.c_int, ctypes.c_size_t]
    assert _persisting_l2_calls(None) is None
    assert _persisting_l2_calls(SimpleNamespace(cudaDeviceGetLimit=fn)) is None
