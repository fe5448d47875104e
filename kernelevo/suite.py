"""A suite: many problems in one invocation, one database each, sharing the workers, a total
evaluation budget and a cost cap (a KernelBench level, or the hot ops ``hotspots`` wrote).

Problems run one after another on the same executor: its workers stay warm, and each run's
budget and dollar cap are what the suite has left. A problem that cannot be loaded is reported
and skipped; it does not cost the others their run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from kernelevo.settings import Settings

SKIP_NAMES = ("seed.py", "__init__.py", "conftest.py")


class SuiteError(ValueError):
    """Paths that name no problem; the message is one line."""


def discover(paths: Iterable[Path]) -> list[Path]:
    """Problem files from files and folders: a folder gives each ``*.py`` directly in it (a
    KernelBench level) and each ``*/problem.py`` below it (kernelevo's own layout), sorted."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            files = [f for f in p.glob("*.py") if f.name not in SKIP_NAMES and not f.name.startswith("_")]
            files += list(p.glob("*/problem.py"))
            if not files:
                raise SuiteError(f"{p}: no problem files (*.py or */problem.py) in this folder")
            found += sorted(files, key=lambda f: (_level_order(f), str(f)))
        elif p.is_file():
            found.append(p)
        else:
            raise SuiteError(f"{p}: no such problem file or folder")
    unique = list(dict.fromkeys(f.resolve() for f in found))
    return [Path(f) for f in unique]


def _level_order(f: Path) -> int:
    """KernelBench numbers its problems ("12_Matmul.py"): 2 before 12."""
    head = f.stem.split("_", 1)[0]
    return int(head) if head.isdigit() else 1 << 30


def db_name(problem: Path, name: str, device: str) -> str:
    """``softmax-cpu.db`` for kernels/softmax/problem.py, ``12_Matmul-cuda.db`` for a KernelBench file."""
    stem = problem.parent.name if problem.name == "problem.py" else name
    return f"{stem}-{device}.db"


@dataclass(frozen=True)
class Share:
    """What one problem's run may spend, given what the suite has spent."""

    budget: int  # the database's evaluation budget (its earlier evaluations included)
    max_cost_usd: float  # 0: no cap


def share(settings: Settings, done_here: int, done_total: int, spent_total: float, total_budget: int) -> Share | None:
    """This problem's budget and cap, or None when the suite has nothing left for it.
    ``done_here``: evaluations already in its database; ``done_total``/``spent_total``: the
    whole suite's, resumed ones included."""
    s = settings.search
    left = total_budget - done_total if total_budget > 0 else s.budget
    budget = min(s.budget, done_here + left)
    cost = 0.0
    if s.max_cost_usd > 0:
        cost = s.max_cost_usd - spent_total
        if cost <= 0:
            return None
    if budget <= done_here:
        return None
    return Share(budget, cost)


def with_share(settings: Settings, sh: Share, spent_here: float) -> Settings:
    """Settings for one run: a run's cost cap counts its own database's dollars, so the suite's
    remainder is added to what this database has already spent."""
    cap = spent_here + sh.max_cost_usd if sh.max_cost_usd > 0 else 0.0
    return replace(settings, search=replace(settings.search, budget=sh.budget, max_cost_usd=cap))
