"""A run database read into plain frozen records: what the report draws, and one summary row per run.

Everything here is read-only (``Store(path, readonly=True)``): a report may be made of a run that is
still going, or of a database in a folder nobody may write. Values are kept as the evaluator stored
them; nothing is re-judged. On a CPU the interpreter's timings are not speed, so every speed here
is None on such a run, never a ratio of interpreter times.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernelevo.evaluate.verdict import Evaluation, size_speedup
from kernelevo.html.suite import print_suite_table
from kernelevo.store import Store, StoredCandidate

__all__ = ["CandidateRow", "CellRow", "Ceilings", "ModelUsage", "ReportError", "RunData", "RunMeta", "SizeRow",
           "SuiteRow", "TypeResult", "load_run", "print_suite_table", "read_run", "suite_rows"]

CPU_TIMING = "cpu-interpreter"


class ReportError(ValueError):
    """A database that cannot be reported on (an empty run); the message is one line."""


@dataclass(frozen=True)
class SizeRow:
    label: str  # "batch_size=5, dim=37"
    speedup: float | None  # against eager PyTorch; None when not measured (every size on a CPU)
    compiled_speedup: float | None  # against torch.compile; None without --compile-baseline
    gbps: float | None  # achieved useful bytes per second / 1e9 (GPU with a calibration)
    tflops: float | None
    roofline: float | None  # fraction of the nearer calibrated ceiling

    @property
    def intensity(self) -> float | None:
        """FLOPs per byte of the op at this size: both achieved rates share the latency, so their
        ratio is the work's own intensity, independent of the kernel."""
        if self.gbps and self.tflops and self.gbps > 0 and self.tflops > 0:
            return self.tflops * 1e12 / (self.gbps * 1e9)
        return None


@dataclass(frozen=True)
class CandidateRow:
    id: int
    parent_id: int | None
    origin: str  # seed | llm | tuner
    model: str | None
    prompt_kind: str | None
    language: str
    verdict: str
    reason: str
    note: str | None
    speedup: float | None
    speedup_compiled: float | None
    sizes: tuple[SizeRow, ...]
    cell: str | None
    cost_usd: float  # of the model call that wrote it
    spent_usd: float  # every model call of the run made by the time it was judged
    evaluated_at: float | None  # epoch seconds
    source: str
    hybrid: bool

    @property
    def correct(self) -> bool:
        return self.verdict == "correct"

    @property
    def made_by(self) -> str:
        return self.origin if not self.model else f"{self.model} ({self.prompt_kind or '?'})"


@dataclass(frozen=True)
class TypeResult:
    """One candidate as one GPU type judged it (a run with ``--gpu-types``: each type judges every candidate,
    and the search ranks by their combination: correct on every type, the geometric mean of their speedups)."""

    candidate: int
    gpu_type: str
    gpu_key: str  # the judging GPU's fingerprint key: where ``kernelevo export`` puts this type's kernels
    verdict: str
    reason: str
    speedup: float | None  # against eager PyTorch on this type; None when not measured (a CPU)
    speedup_compiled: float | None  # against torch.compile on this type

    @property
    def correct(self) -> bool:
        return self.verdict == "correct"


@dataclass(frozen=True)
class CellRow:
    cell: str  # the archive's name: code descriptors, then "wins:..." and the behaviour ones
    elite: int  # the candidate kept in it
    fitness: float | None  # its speedup; None on a CPU, where every correct kernel ranks the same
    members: int  # correct candidates placed in it when judged


@dataclass(frozen=True)
class Ceilings:
    key: str  # the calibration's GPU key
    copy_bytes_per_s: float
    flops_per_s: tuple[tuple[str, float], ...]  # ("fp32", 6.0e13), ...


@dataclass(frozen=True)
class ModelUsage:
    model: str
    calls: int
    failed_calls: int
    tokens_in: int
    tokens_out: int
    cost_usd: float
    priced: bool


@dataclass(frozen=True)
class RunMeta:
    path: str
    problem: str
    problem_path: str
    device: str
    gpu_key: str
    gpu_name: str | None  # from a calibration recorded with a profile
    versions: tuple[tuple[str, str], ...]  # kernelevo, torch, triton, cuda, driver
    overrides: tuple[tuple[str, str], ...]
    strategy: str | None
    created: float | None
    first_evaluated: float | None
    last_evaluated: float | None
    gpu_types: tuple[str, ...] = ()  # --gpu-types: every candidate judged on each; () for one machine


@dataclass(frozen=True)
class RunData:
    meta: RunMeta
    candidates: tuple[CandidateRow, ...]  # judged ones, in the order they were judged
    pending: int
    usage: tuple[ModelUsage, ...]
    cost_usd: float  # every model call, preflight and failed ones included
    cells: tuple[CellRow, ...]
    ceilings: Ceilings | None
    speed_measured: bool  # False on a CPU (the interpreter): no speed chart may be drawn from it
    per_type: tuple[TypeResult, ...] = ()  # each type's own verdicts, by candidate in judged order, then type

    @property
    def gpu_types(self) -> tuple[str, ...]:
        return self.meta.gpu_types

    def on_types(self, cid: int) -> dict[str, TypeResult]:
        """GPU type -> candidate ``cid`` as that type judged it ({} for one never judged there)."""
        return {r.gpu_type: r for r in self.per_type if r.candidate == cid}

    def best_on(self, gpu_type: str) -> TypeResult | None:
        """The fastest candidate correct on ``gpu_type`` by that type's own speedup (on a CPU the first one):
        what ``kernelevo export`` writes for that type, whether or not the other types found it correct."""
        mine = [r for r in self.per_type if r.gpu_type == gpu_type and r.correct]
        return max(mine, key=lambda r: (r.speedup or 0.0, -r.candidate), default=None)

    def top_correct(self, n: int) -> tuple[CandidateRow, ...]:
        """The ``n`` fastest correct candidates by the run's (combined) speedup; the first ones on a CPU."""
        return tuple(sorted(self.correct, key=lambda c: (-(c.speedup or 0.0), c.id))[:n])

    def by_id(self, cid: int) -> CandidateRow | None:
        return next((c for c in self.candidates if c.id == cid), None)

    @property
    def correct(self) -> tuple[CandidateRow, ...]:
        return tuple(c for c in self.candidates if c.correct)

    @property
    def best(self) -> CandidateRow | None:
        """The fastest correct candidate; on a CPU the first correct one (as ``kernelevo show`` says)."""
        return max(self.correct, key=lambda c: (c.speedup or 0.0, -c.id), default=None)

    @property
    def best_compiled(self) -> float | None:
        """The best speedup any correct candidate has against torch.compile."""
        return max((c.speedup_compiled for c in self.correct if c.speedup_compiled), default=None)

    def champions(self) -> tuple[CandidateRow | None, ...]:
        """Per size, the correct candidate fastest there (None where no speed is known)."""
        n = max((len(c.sizes) for c in self.correct), default=0)
        out = []
        for i in range(n):
            timed = [c for c in self.correct if len(c.sizes) > i and c.sizes[i].speedup is not None]
            out.append(max(timed, key=lambda c: (c.sizes[i].speedup or 0.0, -c.id), default=None))
        return tuple(out)

    def lineage(self, cid: int) -> tuple[CandidateRow, ...]:
        """The parent chain ending at ``cid``, oldest first (a cycle or a missing parent ends it)."""
        rows: dict[int, CandidateRow] = {c.id: c for c in self.candidates}
        chain: list[CandidateRow] = []
        seen: set[int] = set()
        cur = rows.get(cid)
        while cur is not None and cur.id not in seen:
            seen.add(cur.id)
            chain.append(cur)
            cur = rows.get(cur.parent_id) if cur.parent_id is not None else None
        return tuple(reversed(chain))


@dataclass(frozen=True)
class SuiteRow:
    """One problem of a suite, KernelBench-style: fast_1 is "a correct kernel beat the baseline"."""

    problem: str
    device: str
    correct_found: bool
    fast_1: bool | None  # the best correct speedup against eager > 1; None with no speed (a CPU run)
    fast_1_compiled: bool | None  # the best against torch.compile > 1; None with no speed or no compile baseline
    best_speedup: float | None  # None on a CPU
    best_compiled: float | None
    evaluations: int
    dollars: float
    db: str = ""


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _label(size: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in size.items()) or "default"


def _sizes(ev: Evaluation | None, measured: bool) -> tuple[SizeRow, ...]:
    if ev is None:
        return ()
    # size_speedup falls back to reference/latency; on the interpreter that ratio is not speed
    timed = measured and ev.timing != CPU_TIMING
    return tuple(SizeRow(_label(s.size), _num(size_speedup(s)) if timed else None,
                         _num(size_speedup(s, "compiled_ms")) if timed else None,
                         _num(s.gbps), _num(s.tflops), _num(s.roofline)) for s in ev.sizes)


def _speed_measured(evals: Iterable[Evaluation], device: str) -> bool:
    timings = {ev.timing for ev in evals if ev.timing}
    if CPU_TIMING in timings:
        return False
    return bool(timings) or device == "cuda"


def _archive_cells(saved: Any) -> dict[str, tuple[int, float]]:
    """Cell -> (elite id, fitness) from the strategy's saved archive(s); {} for strategies without one."""
    state = (saved or {}).get("state") or {}
    archives = [state["archive"]] if isinstance(state.get("archive"), dict) else []
    archives += [i["archive"] for i in state.get("islands", ()) if isinstance(i, dict) and "archive" in i]
    out: dict[str, tuple[int, float]] = {}
    for a in archives:
        for name, e in (a.get("cells") or {}).items():
            if name not in out or float(e["fitness"]) > out[name][1]:
                out[name] = (int(e["id"]), float(e["fitness"]))
    return out


def _cells(rows: Iterable[CandidateRow], saved: Any, measured: bool) -> tuple[CellRow, ...]:
    rows = [c for c in rows if c.correct]
    members: dict[str, int] = {}
    for c in rows:
        if c.cell:
            members[c.cell] = members.get(c.cell, 0) + 1
    # The saved archive is authoritative: while its normaliser warms up, it re-bins early members, so
    # the cell stored with a candidate can be one the archive no longer has.
    kept = _archive_cells(saved)
    if not kept:
        by_id = sorted(rows, key=lambda c: (-(c.speedup or 0.0), c.id))
        for c in by_id:
            if c.cell and c.cell not in kept:
                kept[c.cell] = (c.id, c.speedup or 1.0)
    speed = {c.id: c.speedup for c in rows}
    return tuple(CellRow(name, eid, speed.get(eid, fit) if measured else None, max(members.get(name, 0), 1))
                 for name, (eid, fit) in sorted(kept.items()))


def _ceilings(evals: Iterable[Evaluation]) -> tuple[Ceilings | None, str | None]:
    for ev in evals:
        prof = ev.profile or {}
        c = prof.get("ceilings")
        if isinstance(c, dict) and _num(c.get("copy_bytes_per_s")):
            flops = tuple((str(k), float(v)) for k, v in (c.get("flops_per_s") or {}).items() if _num(v))
            gpu = prof.get("gpu") if isinstance(prof.get("gpu"), dict) else {}
            return Ceilings(str(c.get("key", "")), float(c["copy_bytes_per_s"]), flops), gpu.get("name")
    return None, None


def _row(c: StoredCandidate, cost: float, spent: float, at: float | None, measured: bool) -> CandidateRow:
    ev = c.evaluation
    timed = measured and ev is not None and ev.timing != CPU_TIMING
    return CandidateRow(
        c.id, c.parent_id, c.origin, c.model, c.prompt_kind, c.language, c.verdict or c.status, c.reason or "",
        c.note, _num(c.speedup) if timed else None, _num(ev.speedup_compiled) if timed and ev else None,
        _sizes(ev, measured), c.cell, cost, spent, at, c.source, bool(ev and ev.hybrid))


def _per_type(stored: Mapping[int, Mapping[str, tuple[str, Evaluation]]], done: Iterable[StoredCandidate],
              types: list[str], gpu_key: str, measured: bool) -> tuple[tuple[str, ...], tuple[TypeResult, ...]]:
    """The run's GPU types (those its meta names, then any other a candidate was judged on) and every
    candidate's result on each, in the order the candidates were judged. A run given one type records
    no per-type rows: what it judged there is the run's own evaluation, on the run's GPU."""
    found = sorted({t for per in stored.values() for t in per} - set(types))
    types = [*types, *found]
    out = []
    for c in done:
        per = stored.get(c.id, {})
        if len(types) == 1 and not stored and c.evaluation is not None and c.evaluation.device:
            per = {types[0]: (gpu_key, c.evaluation)}  # judged by the evaluator, not refused before it
        for t in types:
            if t not in per:
                continue
            key, ev = per[t]
            timed = measured and ev.timing != CPU_TIMING
            out.append(TypeResult(c.id, t, key, ev.verdict.value, ev.reason or "", _num(ev.speedup) if timed else None,
                                  _num(ev.speedup_compiled) if timed else None))
    return tuple(types), tuple(out)


def read_run(path: str | Path) -> RunData:
    """Everything the report shows of one run database (StoreError when it is not one)."""
    with Store(path, readonly=True) as store:
        meta = store.meta()
        stored = store.candidates()
        judged_at, calls = store.judged_times(), store.call_times()
        usage = store.llm_usage()
        saved = store.state("strategy")
        done = sorted((c for c in stored if c.status == "done"),
                      key=lambda c: (judged_at.get(c.id, math.inf), c.id))
        costs = {c.id: store.candidate_cost(c.id) if c.origin == "llm" else 0.0 for c in done}
        typed = store.per_type() if meta.get("gpu_types") else {}
    device = str(meta.get("device", "?"))
    evals = [c.evaluation for c in done if c.evaluation is not None]
    measured = _speed_measured(evals, device)
    times, cum = [t for t, _ in calls], []
    for _, d in calls:
        cum.append((cum[-1] if cum else 0.0) + d)
    rows = []
    for c in done:
        at = judged_at.get(c.id)
        k = bisect.bisect_right(times, at) if at is not None else len(times)
        rows.append(_row(c, costs[c.id], cum[k - 1] if k else 0.0, at, measured))
    ceilings, gpu_name = _ceilings(evals)
    versions = {"kernelevo": meta.get("kernelevo"), **(meta.get("versions") or {})}
    stamps = [r.evaluated_at for r in rows if r.evaluated_at is not None]
    types, per_type = _per_type(typed, done, [str(t) for t in meta.get("gpu_types") or ()],
                                str(meta.get("gpu_key", device)), measured)
    info = RunMeta(
        path=str(path), problem=str(meta.get("problem", "?")), problem_path=str(meta.get("problem_path", "")),
        device=device, gpu_key=str(meta.get("gpu_key", device)), gpu_name=gpu_name,
        versions=tuple((k, str(v)) for k, v in versions.items() if v is not None),
        overrides=tuple((str(k), str(v)) for k, v in (meta.get("overrides") or {}).items()),
        strategy=(saved or {}).get("name"), created=_num(meta.get("created")),
        first_evaluated=min(stamps, default=None), last_evaluated=max(stamps, default=None), gpu_types=types)
    models = tuple(ModelUsage(m, int(u["calls"]), int(u["failed_calls"] or 0), int(u["tokens_in"] or 0),
                              int(u["tokens_out"] or 0), float(u["cost_usd"] or 0.0), bool(u["priced"]))
                   for m, u in usage["by_model"].items())
    return RunData(info, tuple(rows), sum(c.status == "pending" for c in stored), models, float(usage["cost_usd"]),
                   _cells(rows, saved, measured), ceilings, measured, per_type)


def load_run(path: str | Path) -> RunData:
    """``read_run`` for a report: a run with nothing judged yet has nothing to show, and says so."""
    p = Path(path)
    if p.is_file() and p.stat().st_size == 0:
        raise ReportError(f"{p}: an empty file, not a kernelevo run database")
    run = read_run(p)
    if not run.candidates:
        raise ReportError(f"{p}: no candidate has been judged in this run yet; nothing to report")
    return run


def suite_row(run: RunData) -> SuiteRow:
    best = run.best
    speed = run.speed_measured
    best_speedup = best.speedup if best is not None and speed else None
    compiled = run.best_compiled if speed else None
    return SuiteRow(
        problem=run.meta.problem, device=run.meta.device, correct_found=best is not None,
        fast_1=None if not speed else best_speedup is not None and best_speedup > 1.0,
        fast_1_compiled=None if not speed or (best is not None and compiled is None)
        else compiled is not None and compiled > 1.0,
        best_speedup=best_speedup, best_compiled=compiled, evaluations=len(run.candidates),
        dollars=run.cost_usd, db=run.meta.path)


def suite_rows(paths: Iterable[str | Path]) -> list[SuiteRow]:
    """One row per run database, in the order given (a run with nothing judged is a row of zeros)."""
    return [suite_row(read_run(p)) for p in paths]
