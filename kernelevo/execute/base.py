"""The seam between the search and the machines that judge its candidates.

A search hands an :class:`Executor` one candidate at a time and gets a future back; how many
evaluations run at once, on which processes, GPUs or cluster nodes, is the executor's business.
Everything that crosses a process or node boundary is one of the frozen dataclasses here.
"""

from __future__ import annotations

import math
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from kernelevo.candidate import Candidate
from kernelevo.evaluate.verdict import Evaluation, Verdict


class WorkerLost(Exception):
    """The process (or node) judging a candidate went away: its evaluation is re-queued."""


@dataclass(frozen=True)
class ProblemSpec:
    """A problem as a worker anywhere can rebuild it: the file's text travels, not its path,
    so a Ray node without the user's checkout judges the same problem."""

    name: str  # the file's stem: names the temp file a remote worker writes
    source: str
    overrides: tuple[tuple[str, Any], ...]
    device: str
    path: str = ""  # the original file; used where it exists with the same text

    @staticmethod
    def of(problem: Any, device: str) -> ProblemSpec:
        return ProblemSpec(problem.name, problem.source, tuple(sorted(problem.overrides.items())), device,
                           str(problem.path))

    @property
    def key(self) -> tuple[str, str, tuple[tuple[str, Any], ...], str]:
        return (self.name, self.source, self.overrides, self.device)

    def local_path(self, scratch: Path) -> Path:
        """A file holding this problem on this machine."""
        p = Path(self.path) if self.path else None
        try:
            if p is not None and p.read_text() == self.source:
                return p
        except OSError:
            pass
        scratch.mkdir(parents=True, exist_ok=True)
        out = scratch / f"{self.name}.py"
        out.write_text(self.source)
        return out

    def load(self, scratch: Path) -> Any:
        """The problem (kernelevo.problem.Problem) on this machine; a copy goes in a folder of
        ``scratch`` named by its text, so two problems of one name never share a file."""
        from kernelevo.candidate import source_digest
        from kernelevo.problem import load_problem

        return load_problem(self.local_path(scratch / source_digest(self.source)[:16]), dict(self.overrides),
                            device=self.device)


@dataclass(frozen=True)
class HostInfo:
    """What the search needs to know about the machine that judges: the reference's work per size
    (descriptors), the GPU's ceilings (roofline) and what the reference warned about."""

    worker: str  # "local", "local-1", "ray:<node>:<pid>"
    gpu_key: str  # "cpu" or the GPU's fingerprint key
    stats: tuple[tuple[float, float], ...]  # (FLOPs, minimum bytes) per size
    ceilings: tuple[float, float] | None  # (bytes/s, FLOP/s) of the calibration, on a GPU
    calibration: Any  # kernelevo.profile.calibrate.Calibration | None
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class HostResult:
    """One evaluation on one worker, with the notes its evaluator says once per run."""

    evaluation: Evaluation
    worker: str
    gpu_key: str
    run_notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Judgement:
    """A candidate judged on every GPU type the run asked for (one entry on a single machine).
    ``evaluation`` is what the search ranks: correct only when correct everywhere."""

    evaluation: Evaluation
    per_type: tuple[tuple[str, Evaluation], ...]  # (GPU type, its evaluation), in the order asked
    workers: tuple[str, ...]
    gpu_keys: tuple[str, ...]  # the judging GPUs' fingerprint keys, per type
    attempts: int  # evaluations started: more than the types when a worker died mid-way
    warmed: Any = None  # kernelevo.evaluate.warm.Warmed: what was compiled ahead of the GPU


class Slot(Protocol):
    """One evaluation at a time, on one worker (a thread here, a process, a Ray actor)."""

    name: str

    def info(self, spec: ProblemSpec) -> HostInfo: ...

    def evaluate(self, spec: ProblemSpec, candidate: Candidate) -> HostResult:
        """Judge ``candidate``; raise :class:`WorkerLost` when the worker died under it."""
        ...

    def restart(self) -> None:
        """A fresh worker in place of a lost one; raises when none can be had."""
        ...

    def close(self) -> None: ...


class Executor(Protocol):
    """Where a search's evaluations run."""

    @property
    def slots(self) -> int:
        """Evaluations that can run at once: the search keeps this many in flight."""
        ...

    def info(self, spec: ProblemSpec) -> HostInfo: ...

    def submit(self, spec: ProblemSpec, candidate: Candidate) -> Future[Judgement]: ...

    @property
    def run_notes(self) -> tuple[str, ...]: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


def crash(candidate: Candidate, reason: str, device: str = "") -> Evaluation:
    return Evaluation(candidate.name, Verdict.CRASH, reason, device)


def combine(per_type: list[tuple[str, Evaluation]]) -> Evaluation:
    """The evaluation the search ranks, from one per GPU type: the first failure (named by its
    type) when any type failed, else the first type's with the geometric mean of the types'
    speedups, so a kernel fast on one GPU and slow on another ranks by both."""
    if len(per_type) == 1:
        return per_type[0][1]
    for gpu_type, ev in per_type:
        if not ev.ok:
            return replace(ev, reason=f"on {gpu_type}: {ev.reason}")
    first = per_type[0][1]
    notes = (*first.notes, "judged on " + ", ".join(t for t, _ in per_type))

    def geomean(values: list[float | None]) -> float | None:
        if any(v is None or v <= 0 for v in values):
            return None
        return math.exp(sum(math.log(v) for v in values if v) / len(values))

    return replace(first, notes=notes, speedup=geomean([e.speedup for _, e in per_type]),
                   speedup_compiled=geomean([e.speedup_compiled for _, e in per_type]))
