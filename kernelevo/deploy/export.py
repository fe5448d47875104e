"""``kernelevo export``: a run's winners as files a model can load, with the facts that make
them trustworthy.

Layout of an export folder (one per op)::

    <out>/problem.py            the problem the kernels were verified against (shared)
    <out>/<gpu-key>/best.py     the best kernel over all sizes
    <out>/<gpu-key>/size<i>.py  the champion of each size (the fastest there), when it differs
    <out>/<gpu-key>/manifest.json

One folder per GPU type, so exporting a run from a second GPU type adds beside the first and
never overwrites it. A CPU run exports under ``cpu`` marked ``correctness_only``: its kernels
are right, but nothing about their speed is known, so no loader may choose them by speed.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import torch

from kernelevo.candidate import source_digest
from kernelevo.deploy.manifest import MANIFEST, KernelEntry, Manifest
from kernelevo.deploy.signature import TensorArg, size_signature
from kernelevo.evaluate.verdict import size_speedup
from kernelevo.problem import Problem, ProblemError, flatten_outputs, load_problem
from kernelevo.store import Store, StoredCandidate


class ExportError(ValueError):
    """A run that cannot be exported; the message is one line."""


def _best(cands: list[StoredCandidate], measured: bool) -> StoredCandidate:
    correct = [c for c in cands if c.verdict == "correct" and c.evaluation is not None]
    if not correct:
        raise ExportError("the run has no correct candidate to export")
    if not measured:
        return min(correct, key=lambda c: c.id)  # no speed on a CPU: the first correct one
    return max(correct, key=lambda c: (c.speedup or 0.0, -c.id))


def _champions(cands: list[StoredCandidate], n_sizes: int) -> list[StoredCandidate | None]:
    """Per size, the correct candidate measured fastest there."""
    out: list[StoredCandidate | None] = []
    correct = [c for c in cands if c.verdict == "correct" and c.evaluation and len(c.evaluation.sizes) == n_sizes]
    for i in range(n_sizes):
        scored = [(size_speedup(c.evaluation.sizes[i]) or 0.0, -c.id, c) for c in correct if c.evaluation]
        out.append(max(scored)[2] if scored and max(scored)[0] > 0 else None)
    return out


def _problem(path: Path, overrides: dict[str, Any], measured: bool) -> Problem | None:
    try:
        return load_problem(path, overrides, device="cuda" if measured else "cpu")
    except ProblemError:
        return None  # the tolerances and input types are informative; the kernels are what matter


def _inputs(problem: Problem | None, size: dict[str, Any]) -> list[str] | None:
    """What a verified size's call looks like, e.g. ``["float32[4096, 8192]"]``: the dtypes a loader
    may run the kernel on are these."""
    if problem is None:
        return None
    try:
        sig = size_signature(problem, size)
    except Exception:  # noqa: BLE001 - a size that no longer builds here: the manifest says nothing
        return None
    return [f"{a.dtype.removeprefix('torch.')}{list(a.shape)}" if isinstance(a, TensorArg) else a for a in sig.inputs]


def _mode_independent(problem: Problem | None) -> bool:
    """Whether the problem's Model gives the same outputs and state in eval mode as in training
    mode (the judge's), at its smallest declared size, on this CPU: a LayerNorm does, a BatchNorm
    or a Dropout does not."""
    if problem is None:
        return False
    try:
        sizes = sorted(problem.declared or problem.sizes, key=lambda s: sum(v for v in s.values()
                                                                           if isinstance(v, int)))
        ns = problem.namespace(sizes[0] if sizes else {})
        torch.manual_seed(0)
        model = ns.Model(*ns.get_init_inputs())
        inputs = ns.get_inputs()
        runs = []
        for train in (True, False):
            m = copy.deepcopy(model).train(train)
            torch.manual_seed(1)
            with torch.no_grad():
                out = list(flatten_outputs(m(*copy.deepcopy(inputs))))
            runs.append((out, m.state_dict()))
    except Exception:  # noqa: BLE001 - unknown: only the judged mode is used
        return False
    (out_t, st_t), (out_e, st_e) = runs
    same = len(out_t) == len(out_e) and all(
        torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b for a, b in zip(out_t, out_e, strict=True))
    return same and all(torch.equal(st_t[k], st_e[k]) for k in st_t)


def _run_id(db: Path, meta: dict[str, Any]) -> str:
    """Names the run across machines: the database's name and the moment the run began."""
    created = meta.get("created")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created)) if isinstance(created, (int, float)) else "unknown"
    return f"{db.stem}@{stamp}"


def export_run(db: Path, out: Path | None = None) -> tuple[Path, Manifest]:
    """Write the run's best kernel and per-size champions under ``out`` (default ``kernels/<op>``);
    a run judged on several GPU types exports each (:func:`export_all`) and returns the first."""
    return export_all(db, out)[0]


def _as_judged_on(cands: list[StoredCandidate], per_type: dict[int, dict[str, tuple[str, Any]]],
                  gpu_type: str) -> tuple[list[StoredCandidate], str | None]:
    """The run's candidates as one GPU type judged them (its verdicts and speedups), and that
    type's GPU key. A candidate that type never judged (a static refusal) keeps its own verdict."""
    from dataclasses import replace

    key = None
    out = []
    for c in cands:
        mine = per_type.get(c.id, {}).get(gpu_type)
        if mine is None:
            out.append(c if c.verdict != "correct" else replace(c, verdict="unjudged"))
            continue
        key, ev = mine
        out.append(replace(c, verdict=ev.verdict.value, reason=ev.reason, speedup=ev.speedup, evaluation=ev))
    return out, key


def export_all(db: Path, out: Path | None = None) -> list[tuple[Path, Manifest]]:
    """One export per GPU type the run was judged on (``--gpu-types``), each under its GPU key and
    ranked by that type's own speedups: the fastest kernel on an H100 need not be the A100's."""
    with Store(db, readonly=True) as store:
        meta = store.meta()
        cands = store.candidates()
        per_type = store.per_type()
    types = list(meta.get("gpu_types") or [])
    if not types:
        return [_export(db, out, meta, cands, str(meta.get("gpu_key") or meta.get("device") or "unknown"))]
    done = []
    for t in types:
        judged, key = _as_judged_on(cands, per_type, t)
        if key is None:
            raise ExportError(f"{db}: no candidate was judged on GPU type {t}")
        done.append(_export(db, out, {**meta, "gpu_type": t}, judged, key))
    return done


def _export(db: Path, out: Path | None, meta: dict[str, Any], cands: list[StoredCandidate],
            gpu_key: str) -> tuple[Path, Manifest]:
    op = meta.get("problem")
    problem_path = Path(meta.get("problem_path", ""))
    if not op or not problem_path.name:
        raise ExportError(f"{db}: the run records no problem; was it made by kernelevo optimize?")
    try:
        problem_source = problem_path.read_text()
    except OSError:
        raise ExportError(f"{db}: the run's problem file {problem_path} is gone; the kernels cannot be "
                          "exported without the problem they were verified against") from None
    if source_digest(problem_source)[:16] != meta.get("problem_digest"):  # Problem.digest
        raise ExportError(f"{problem_path}: changed since the run verified its kernels against it; run "
                          "optimize again (or check the kernels) before exporting")
    measured = meta.get("device") == "cuda"
    best = _best(cands, measured)
    assert best.evaluation is not None
    n = len(best.evaluation.sizes)
    champions = _champions(cands, n) if measured else [None] * n
    folder = (out or Path("kernels") / op)
    target = folder / gpu_key
    shared = folder / "problem.py"
    if shared.exists() and shared.read_text() != problem_source:
        raise ExportError(f"{shared}: a different problem is exported here already; give another --out")
    target.mkdir(parents=True, exist_ok=True)
    shared.write_text(problem_source)

    def entry(c: StoredCandidate, name: str, sizes: list[int]) -> KernelEntry:
        (target / name).write_text(c.source)
        ev = c.evaluation
        return KernelEntry(name, c.id, source_digest(c.source), sizes, ev.speedup if ev else None,
                           ev.speedup_compiled if ev else None)

    best_sizes = [i for i, c in enumerate(champions) if c is None or c.id == best.id]
    best_entry = entry(best, "best.py", best_sizes if measured else list(range(n)))
    others: dict[int, list[int]] = {}
    for i, c in enumerate(champions):
        if c is not None and c.id != best.id:
            others.setdefault(c.id, []).append(i)
    by_id = {c.id: c for c in cands}
    champion_entries = [entry(by_id[cid], f"size{'_'.join(map(str, idx))}.py", idx) for cid, idx in others.items()]
    sizes = []
    prob = _problem(problem_path, meta.get("overrides") or {}, measured)
    for i, s in enumerate(best.evaluation.sizes):
        sizes.append({"size": s.size, "inputs": _inputs(prob, s.size), "max_abs_err": s.max_abs_err,
                      "max_rel_err": s.max_rel_err,
                      "speedup": s.speedup if measured else None, "compiled_speedup": s.compiled_speedup if measured
                      else None, "latency_ms": s.latency_ms if measured else None,
                      "champion": (champions[i].id if champions[i] is not None else best.id)})
    atol, rtol = (prob.atol, prob.rtol) if prob is not None else (None, None)
    manifest = Manifest(
        op=op, gpu_key=gpu_key, correctness_only=not measured, problem_file="../problem.py",
        problem_sha256=source_digest(problem_source), overrides=meta.get("overrides") or {},
        atol=atol, rtol=rtol, sizes=sizes, best=best_entry, champions=champion_entries,
        mode_independent=_mode_independent(_problem(problem_path, meta.get("overrides") or {}, False)),
        versions=meta.get("versions") or {}, run={"id": _run_id(db, meta), "db": str(db.resolve()),
                                                   "gpu_type": meta.get("gpu_type"),
                                                   "created": meta.get("created"),
                                                   "exported": time.time(), "kernelevo": meta.get("kernelevo")},
    )
    (target / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=1, default=str) + "\n")
    listed = {e.file for e in manifest.entries}
    for stale in target.glob("size*.py"):  # champions of an earlier export of this GPU type
        if stale.name not in listed:
            stale.unlink()
    return target, manifest
