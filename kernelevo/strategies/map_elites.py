"""``map-elites`` (the default): a MAP-Elites archive after LEVI.

Each correct candidate goes to a cell keyed by descriptors of its code and behaviour
(:mod:`kernelevo.archive`); a cell keeps its fastest member, and the best and per-size champions
are kept too. Parents come from the best, a random cell or a per-size champion; two elites of
other cells are shown as inspiration, and the parent's recent failed children as warnings. The
cheap model makes most proposals; the strong model is called for a fixed share of them and on
stagnation, asked for a different algorithm (:class:`~kernelevo.propose.tiers.TierPolicy`).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Any

from kernelevo.archive import P_BEST, P_CELL, Archive, Entry
from kernelevo.propose.tiers import TierPolicy, TierState
from kernelevo.settings import SearchSettings, SettingsError
from kernelevo.strategies.base import Added, Ask, Context, Judged

RECENT_CHILDREN = 64  # failed children remembered per run, to warn the next prompt on their parent


@dataclass(frozen=True)
class MapElitesOptions:
    p_best: float = P_BEST  # share of parents taken from the best
    p_cell: float = P_CELL  # ... from a random occupied cell; the rest from a per-size champion

    def __post_init__(self) -> None:
        if not (0 <= self.p_best and 0 <= self.p_cell and self.p_best + self.p_cell <= 1):
            raise SettingsError(f"[strategy.map-elites]: p_best and p_cell must be >= 0 and sum to at most 1, "
                                f"got {self.p_best} and {self.p_cell}")


class MapElites:
    name = "map-elites"
    Options = MapElitesOptions

    def __init__(self, settings: SearchSettings, n_sizes: int, opts: MapElitesOptions | None = None, *,
                 tune_share: float = 0.0) -> None:
        self.s = settings
        self.o = opts or MapElitesOptions()
        self.archive = Archive(n_sizes, settings.warmup, settings.bins)
        self.tiers = TierState()
        self.policy = TierPolicy(settings.strong_share, settings.stagnation, settings.fix_share, tune_share=tune_share)
        self.failed_children: deque[tuple[int, int]] = deque(maxlen=RECENT_CHILDREN)  # (parent, child)

    # -- the seam ---------------------------------------------------------------------------------
    def add(self, judged: Judged) -> Added:
        if not judged.correct:
            if judged.parent_id is not None:
                self.failed_children.append((judged.parent_id, judged.id))
            return Added()
        assert judged.fitness is not None and judged.code is not None and judged.behaviour is not None
        res = self.archive.add(Entry(judged.id, judged.fitness, judged.speedups, judged.code, judged.behaviour))
        if res.new_best:
            self.tiers = self.policy.improved(self.tiers, judged.evaluated)
        return Added(res.cell, res.new_best)

    def sample(self, rng: random.Random, ctx: Context) -> Ask:
        best = self.archive.best
        choice, self.tiers = self.policy.choose(self.tiers, ctx.evaluated, rng, have_elites=best is not None,
                                                have_failures=bool(ctx.recent_failures), can_tune=ctx.can_tune)
        if choice.kind == "write" and ctx.seed_id is not None:  # the seed is still being judged: start from it
            return Ask("improve", choice.tier, ctx.seed_id)
        if choice.kind == "fix":
            return Ask("fix", choice.tier, rng.choice(ctx.recent_failures[:3]))
        if choice.kind in ("improve", "rethink", "tune"):
            entry, insp, _ = self.archive.sample(rng, self.s.inspirations, self.o.p_best, self.o.p_cell)
            if choice.kind in ("rethink", "tune"):
                entry = best
            parent = entry.id if entry else None
            failures = tuple(c for p, c in reversed(self.failed_children) if p == parent)[:2] \
                if choice.kind == "improve" else ()
            return Ask(choice.kind, choice.tier, parent, tuple(e.id for e in insp if e.id != parent), failures)
        return Ask(choice.kind, choice.tier, ctx.seed_id if choice.kind == "sample" else None)

    def tuner_parents(self, rng: random.Random) -> list[int]:
        entry, _, _ = self.archive.sample(rng, 0, self.o.p_best, self.o.p_cell)
        order = [entry] if entry else []
        order += sorted(self.archive.cells.values(), key=lambda e: -e.fitness)
        return list(dict.fromkeys(e.id for e in order))

    @property
    def best(self) -> tuple[int, float] | None:
        b = self.archive.best
        return (b.id, b.fitness) if b else None

    @property
    def coverage(self) -> int:
        return len(self.archive)

    # -- state ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"archive": self.archive.to_dict(), "tiers": self.tiers.to_dict(),
                "failed_children": [list(x) for x in self.failed_children]}

    def load(self, state: dict[str, Any]) -> None:
        self.archive = Archive.from_dict(state["archive"])
        self.tiers = TierState.from_dict(state.get("tiers"))
        self.failed_children = deque((tuple(x) for x in state.get("failed_children", ())), maxlen=RECENT_CHILDREN)
