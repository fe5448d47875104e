"""The seam between the loop and a search strategy, in SkyDiscover's shape: ``add`` what was
judged, ``sample`` what to propose next, and state for an exact resume.

The loop (``kernelevo.search``) knows nothing of a strategy's insides: it tells the strategy about
every judged candidate — failed ones too, with parent, source, evaluation, model and cost — asks it
for the next proposal, and saves its state in the same transaction as each evaluation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from kernelevo.archive import BehaviourDescriptors, CodeDescriptors
from kernelevo.evaluate.verdict import Evaluation


@dataclass(frozen=True)
class Judged:
    """A candidate the loop has judged (or refused before judging: an unusable reply, a duplicate)."""

    id: int
    parent_id: int | None
    source: str
    language: str
    evaluation: Evaluation
    model: str | None  # None: the offline tuner or the seed
    prompt_kind: str | None
    cost_usd: float  # of the model call that wrote it
    evaluated: int  # evaluations in the run, this one included
    fitness: float | None  # geometric-mean speedup (1.0 for any correct candidate on a CPU); None: not correct
    speedups: tuple[float, ...]  # per size (1.0 each on a CPU)
    code: CodeDescriptors | None  # None when not correct
    behaviour: BehaviourDescriptors | None

    @property
    def correct(self) -> bool:
        return self.fitness is not None


@dataclass(frozen=True)
class Context:
    """What the loop knows that a strategy may want when choosing."""

    evaluated: int
    seed_id: int | None
    recent_failures: tuple[int, ...]  # newest first, unusable replies left out
    can_tune: bool  # an offline tuner is available for "tune" moves
    offline: bool  # no model at all: only tuner moves can be made


@dataclass(frozen=True)
class Ask:
    """What to propose next: the prompt kind, which tier writes it, from which parent, with which
    elites as inspiration and which failed children shown; ``note`` is extra text for the prompt."""

    kind: str  # "write" | "improve" | "fix" | "rethink" | "tune" | "sample"
    tier: str  # "cheap" | "strong" | "tuner"
    parent: int | None = None
    inspirations: tuple[int, ...] = ()
    failures: tuple[int, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Added:
    """What adding a judged candidate did: the cell it was placed in (None: none) and whether it is
    the new best."""

    cell: str | None = None
    new_best: bool = False


@runtime_checkable
class Strategy(Protocol):
    """A search strategy. One file each under ``kernelevo/strategies/``, one line in the registry."""

    name: str

    def add(self, judged: Judged) -> Added:
        """Learn from a judged candidate (every one, failed ones included)."""
        ...

    def sample(self, rng: random.Random, ctx: Context) -> Ask:
        """What to propose next."""
        ...

    def tuner_parents(self, rng: random.Random) -> list[int]:
        """Candidates worth a tuner move, most promising first (the offline tuner walks these)."""
        ...

    @property
    def best(self) -> tuple[int, float] | None:
        """The best candidate's id and fitness, if any is correct."""
        ...

    @property
    def coverage(self) -> int:
        """Cells (or niches) occupied: how diverse the kept candidates are."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (JSON-serialisable)."""
        ...
