"""Jobs to slots: one queue per GPU type, one thread per slot, lost evaluations re-queued.

A slot judges one candidate at a time, so a GPU never times two candidates at once. A job is a
candidate for every GPU type the run names; its future completes when each type has judged it.
When a worker dies under a candidate (``WorkerLost``: a killed process, a lost Ray node) the
slot is restarted and the candidate goes back to the front of its queue; it is judged, and
recorded, once. A candidate that kills ``max_retries`` workers is recorded as a crash.

With prepare slots (local GPUs), a job first passes the static checks and is compiled ahead
(kernelevo.execute.prepare) on the driver's CPU; the search keeps that many more candidates in
flight, so the next ones are compiling while the GPUs time the current ones.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from kernelevo.candidate import Candidate
from kernelevo.evaluate.verdict import Evaluation
from kernelevo.execute.base import HostInfo, HostResult, Judgement, ProblemSpec, Slot, WorkerLost, combine, crash

log = logging.getLogger("kernelevo.execute")


@dataclass
class _Job:
    spec: ProblemSpec
    candidate: Candidate
    types: tuple[str, ...]
    future: Future[Judgement]
    results: dict[str, HostResult] = field(default_factory=dict)
    attempts: int = 0
    warmed: Any = None  # kernelevo.evaluate.warm.Warmed, when compiled ahead


@dataclass
class _Part:
    job: _Job
    gpu_type: str
    lost: int = 0  # workers that died under it


class _Queue:
    """A deque with a condition: lost work goes back to the front."""

    def __init__(self) -> None:
        self.items: deque[_Part | None] = deque()
        self.cv = threading.Condition()

    def put(self, part: _Part | None, front: bool = False) -> None:
        with self.cv:
            (self.items.appendleft if front else self.items.append)(part)
            self.cv.notify()

    def get(self) -> _Part | None:
        with self.cv:
            while not self.items:
                self.cv.wait()
            return self.items.popleft()


class Dispatcher:
    """An :class:`~kernelevo.execute.base.Executor` over groups of slots, one group per GPU type."""

    def __init__(self, groups: dict[str, list[Slot]], max_retries: int = 3, label: str = "local",
                 prepare: list[Any] | None = None):
        if not groups or not all(groups.values()):
            raise ValueError("an executor needs at least one worker per GPU type")
        self.groups = groups
        self.types = tuple(groups)
        self.max_retries = max_retries
        self.label = label
        self.lost = 0  # workers lost under an evaluation, over the executor's life
        self._notes: dict[str, None] = {}
        self._lock = threading.Lock()
        self._queues = {t: _Queue() for t in groups}
        self._alive = {t: len(slots) for t, slots in groups.items()}
        self._busy: dict[str, Candidate] = {}  # slot name -> the candidate it is judging
        self.busy_s = 0.0  # seconds slots spent judging, summed over slots
        self.prepare = list(prepare or [])
        self._prepare_q = _Queue()
        self._threads = [threading.Thread(target=self._serve, args=(t, slot), daemon=True,
                                          name=f"kernelevo-slot-{slot.name}")
                         for t, slots in groups.items() for slot in slots]
        self._threads += [threading.Thread(target=self._prepare, args=(p,), daemon=True,
                                           name=f"kernelevo-{p.name}") for p in self.prepare]
        for th in self._threads:
            th.start()

    # -- Executor ---------------------------------------------------------------------------
    @property
    def workers(self) -> int:
        """Evaluations that run at once (on every GPU type)."""
        return min(len(s) for s in self.groups.values())

    @property
    def slots(self) -> int:
        """Candidates the search keeps in flight: one per worker, and one compiling per prepare slot."""
        return self.workers + len(self.prepare)

    @property
    def run_notes(self) -> tuple[str, ...]:
        return tuple(self._notes)

    def describe(self) -> str:
        per = ", ".join(f"{len(s)} on {t}" for t, s in self.groups.items()) if len(self.groups) > 1 else \
            f"{self.workers}"
        ahead = f", {len(self.prepare)} compiling ahead" if self.prepare else ""
        return f"{self.label}: {per} evaluation worker{'s' if self.workers > 1 or len(self.groups) > 1 else ''}{ahead}"

    def busy(self) -> dict[str, Candidate]:
        """Slot name -> the candidate it is judging now."""
        with self._lock:
            return dict(self._busy)

    def info(self, spec: ProblemSpec) -> HostInfo:
        return self.groups[self.types[0]][0].info(spec)

    def submit(self, spec: ProblemSpec, candidate: Candidate) -> Future[Judgement]:
        fut: Future[Judgement] = Future()
        fut.set_running_or_notify_cancel()
        job = _Job(spec, candidate, self.types, fut)
        if self.prepare:
            self._prepare_q.put(_Part(job, ""))
        else:
            self._enqueue(job)
        return fut

    def _enqueue(self, job: _Job) -> None:
        for t in self.types:
            if self._alive[t] == 0:
                self._finish(_Part(job, t), self._lost_result(job, t, "no evaluation worker is left"))
            else:
                self._queues[t].put(_Part(job, t))

    def close(self) -> None:
        for _ in self.prepare:
            self._prepare_q.put(None)
        for t, q in self._queues.items():
            for _ in self.groups[t]:
                q.put(None)
        deadline = time.monotonic() + 10
        for th in self._threads:
            th.join(timeout=max(0.0, deadline - time.monotonic()))
        for slot in [*self.prepare, *(s for slots in self.groups.values() for s in slots)]:
            try:
                slot.close()
            except Exception as e:  # a worker that is already gone
                log.debug("closing %s: %s", slot.name, e)

    # -- slots --------------------------------------------------------------------------------
    def _prepare(self, slot: Any) -> None:
        """Static checks, then compile ahead; a candidate the checks refuse never takes a GPU."""
        while True:
            part = self._prepare_q.get()
            if part is None:
                return
            job = part.job
            try:
                refused = slot.check(job.candidate)
                if refused is not None:
                    per = [(t, refused) for t in job.types]
                    job.future.set_result(Judgement(refused, tuple(per), (slot.name,) * len(per),
                                                    ("",) * len(per), 0))
                    continue
                job.warmed = slot.warm(job.spec, job.candidate)
            except Exception as e:  # compiling ahead is an optimisation: the GPU compiles it instead
                log.warning("%s could not compile %s ahead: %s", slot.name, job.candidate.name, e)
            self._enqueue(job)

    def _serve(self, gpu_type: str, slot: Slot) -> None:
        q = self._queues[gpu_type]
        while True:
            part = q.get()
            if part is None:
                return
            job = part.job
            with self._lock:
                job.attempts += 1
                self._busy[slot.name] = job.candidate
            t0 = time.monotonic()
            try:
                result = slot.evaluate(job.spec, job.candidate)
            except WorkerLost as e:
                with self._lock:
                    self._busy.pop(slot.name, None)
                    self.lost += 1
                    self.busy_s += time.monotonic() - t0
                part.lost += 1
                log.warning("worker %s lost while judging %s (%s); re-queued", slot.name, job.candidate.name, e)
                if part.lost >= self.max_retries:
                    self._finish(part, self._lost_result(job, gpu_type, f"{part.lost} evaluation workers died "
                                                         f"while judging it (last: {e})"))
                else:
                    q.put(part, front=True)
                try:
                    slot.restart()
                except Exception as e2:  # no worker to be had: the others go on; the last one fails the queue
                    log.warning("worker %s could not be restarted: %s", slot.name, e2)
                    self._retire(gpu_type)
                    return
                continue
            except Exception as e:  # the evaluator itself failed: the candidate is recorded, the run goes on
                result = HostResult(crash(job.candidate, f"evaluator error: {type(e).__name__}: {e}"), slot.name, "")
            with self._lock:
                self._busy.pop(slot.name, None)
                self.busy_s += time.monotonic() - t0
            self._finish(part, result)

    def _retire(self, gpu_type: str) -> None:
        with self._lock:
            self._alive[gpu_type] -= 1
            last = self._alive[gpu_type] == 0
        if not last:
            return
        q = self._queues[gpu_type]
        with q.cv:
            parts = [p for p in q.items if p is not None]
            q.items.clear()
        for p in parts:
            self._finish(p, self._lost_result(p.job, gpu_type, "no evaluation worker is left"))

    @staticmethod
    def _lost_result(job: _Job, gpu_type: str, reason: str) -> HostResult:
        return HostResult(crash(job.candidate, f"{reason} on {gpu_type}" if gpu_type else reason), "", gpu_type)

    def _finish(self, part: _Part, result: HostResult) -> None:
        job = part.job
        with self._lock:
            for note in result.run_notes:
                self._notes.setdefault(note, None)
            job.results[part.gpu_type] = result
            if len(job.results) < len(job.types):
                return
        per: list[tuple[str, Evaluation]] = [(t, job.results[t].evaluation) for t in job.types]
        job.future.set_result(Judgement(combine(per), tuple(per), tuple(job.results[t].worker for t in job.types),
                                        tuple(job.results[t].gpu_key for t in job.types), job.attempts,
                                        job.warmed))
