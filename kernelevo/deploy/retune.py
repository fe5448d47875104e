"""``kernelevo verify --retune``: search again from a regressed op's exported best kernel and
re-export what the search finds, when it is correct and (on a GPU) faster than the exported kernel
measures now. The gate still fails: re-exported files are for a person to review."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kernelevo.settings import Settings

if TYPE_CHECKING:
    from kernelevo.deploy.verify import _OpResult


def _free_db(runs_dir: Path, stem: str) -> Path:
    """``runs_dir/stem.db``, or ``stem-2.db``, ... when taken: a retune starts a fresh run (a resumed
    one would count an old run's candidates against the budget and keep its seed)."""
    path = runs_dir / f"{stem}.db"
    n = 2
    while path.exists():
        path = runs_dir / f"{stem}-{n}.db"
        n += 1
    return path


def retune_op(result: _OpResult, op_dir: Path, key: str, device: str, settings: Settings,
              runs_dir: Path) -> tuple[str | None, str]:
    """Search again from the exported best; export the run when it found a kernel worth exporting.
    Returns (a line for ``retuned``, or None and a note saying why nothing was exported)."""
    from kernelevo.deploy.export import ExportError, export_run
    from kernelevo.problem import ProblemError
    from kernelevo.run import RunError, open_run
    from kernelevo.store import StoreError

    export, problem = result.export, result.problem
    assert export is not None and problem is not None
    best_file = export.manifest.best.file
    db = _free_db(runs_dir, f"verify-{op_dir.name}-{key}")
    try:
        with open_run(problem, device, settings, db, export.sources[best_file], str(export.folder / best_file)) as run:
            run.search()
            correct = [c for c in run.store.candidates() if c.verdict == "correct"]
    except (RunError, StoreError, ProblemError) as e:
        return None, f"{op_dir.name}: retune could not run: {e}"
    if not correct:
        return None, f"{op_dir.name}: retune found no correct kernel in {settings.search.budget} candidates ({db})"
    if device == "cuda":
        fastest = max((c.speedup or 0.0) for c in correct)
        floor = result.best_speedup_now
        if floor is not None and not fastest > floor:
            return None, (f"{op_dir.name}: retune found nothing faster than the exported best measures now "
                          f"({fastest:.3g}x vs {floor:.3g}x; {db})")
    try:
        target, manifest = export_run(db, op_dir)
    except (ExportError, StoreError) as e:
        return None, f"{op_dir.name}: retune's run could not be exported: {e}"
    what = "correct; speed not measured on a CPU" if manifest.correctness_only else \
        f"{manifest.best.speedup:.3g}x" if manifest.best.speedup else "correct"
    return (f"{target}: #{manifest.best.candidate} of {db} ({what}) and {len(manifest.champions)} per-size champions",
            f"{op_dir.name}: re-exported from {db}")
