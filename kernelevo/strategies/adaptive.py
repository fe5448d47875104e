"""``adaptive``: a MAP-Elites archive whose exploration and strong-model share follow progress,
after AdaEvolve (SkyDiscover; Cemri et al., 2026).

AdaEvolve steers its search with an *accumulated improvement signal*. Here it is a decayed sum,
updated once per judged candidate (failed ones included)::

    signal = decay * signal + gain

``gain`` is the relative gain of a new best, ``(f - f_best) / f_best`` capped at ``gain_cap`` (the
first correct candidate counts the cap), or ``cell_credit`` for a candidate that opens a new
cell, else 0. Unlike AdaEvolve's code, the signal decays on every candidate rather than only on
improvements, so a run of failures lowers it. Stagnation is ``s = 1 / (1 + signal / half_signal)``:
1 when nothing has improved for a long time, near 0 while gains keep coming (AdaEvolve's
``1 / (1 + sqrt(G))`` with linear instead of squared gains). It sets two rates:

- exploration ``explore_min + (explore_max - explore_min) * s``: the chance that a proposal is
  a "rethink" of a random cell's elite instead of an "improve" of the best;
- strong share ``strong_min + (strong_max - strong_min) * s``: the share of proposals the strong
  model writes, paid out by a deterministic quota (a share of 0.2 is one proposal in five).

Cheap proposals still repair recent failures (``search.fix_share``) and make tuner moves;
``search.strong_share`` and ``search.stagnation`` are not used: the signal replaces them.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Any

from kernelevo.archive import Archive, Entry
from kernelevo.settings import SearchSettings, SettingsError
from kernelevo.strategies.base import Added, Ask, Context, Judged

RECENT_CHILDREN = 64  # failed children remembered, to warn the next prompt on their parent
EXPLORE_NOTE = ("Progress has stalled: this parent was drawn from a random niche of the archive, not the best. "
                "Try a different approach rather than a parameter tweak.")
EXPLOIT_NOTE = "Progress is steady: this parent is the best kernel so far. Refine what makes it fast."


@dataclass(frozen=True)
class AdaptiveOptions:
    """``[strategy.adaptive]``."""

    decay: float = 0.9  # share of the signal kept per judged candidate: a gain fades to 1/3 in ~10
    half_signal: float = 0.1  # signal at which both rates sit halfway between floor and ceiling
    gain_cap: float = 1.0  # a relative gain counts at most this (and the first correct candidate this)
    cell_credit: float = 0.05  # gain credited for opening a new cell: diversity is progress too
    explore_min: float = 0.1  # exploration while improvements keep coming (AdaEvolve's intensity_min)
    explore_max: float = 0.7  # exploration under long stagnation (AdaEvolve's intensity_max)
    strong_min: float = 0.05  # strong-model share while improvements keep coming
    strong_max: float = 0.5  # strong-model share under long stagnation

    def __post_init__(self) -> None:
        # Checked here so a bad [strategy.adaptive] table fails at startup, not mid-run.
        bad = [k for k, ok in (("decay", 0 <= self.decay < 1), ("half_signal", self.half_signal > 0),
                               ("gain_cap", self.gain_cap > 0), ("cell_credit", self.cell_credit >= 0),
                               ("explore_min", 0 <= self.explore_min <= self.explore_max <= 1),
                               ("strong_min", 0 <= self.strong_min <= self.strong_max <= 1)) if not ok]
        if bad:
            raise SettingsError(f"strategy.adaptive: bad {', '.join(bad)}: need 0 <= decay < 1, half_signal > 0, "
                                "gain_cap > 0, cell_credit >= 0, 0 <= *_min <= *_max <= 1")


class Adaptive:
    name = "adaptive"
    Options = AdaptiveOptions  # what kernelevo.strategies.options fills from [strategy.adaptive]

    def __init__(self, settings: SearchSettings, n_sizes: int, opts: AdaptiveOptions | None = None, *,
                 tune_share: float = 0.0) -> None:
        self.s = settings
        self.o = opts or AdaptiveOptions()
        self.tune_share = tune_share
        self.archive = Archive(n_sizes, settings.warmup, settings.bins)
        self.signal = 0.0  # nothing has improved yet: start exploring, with the strong model at its ceiling
        self.credit = 0.0  # strong-model quota earned and not yet spent
        self.proposals = 0
        self.strong = 0
        self.failed_children: deque[tuple[int, int]] = deque(maxlen=RECENT_CHILDREN)  # (parent, child)

    # -- the signal -------------------------------------------------------------------------------
    @property
    def stagnation(self) -> float:
        """1 under long stagnation, towards 0 while improvements keep coming."""
        return 1.0 / (1.0 + self.signal / self.o.half_signal)

    @property
    def explore_rate(self) -> float:
        return self.o.explore_min + (self.o.explore_max - self.o.explore_min) * self.stagnation

    @property
    def strong_share(self) -> float:
        return self.o.strong_min + (self.o.strong_max - self.o.strong_min) * self.stagnation

    # -- the seam ---------------------------------------------------------------------------------
    def add(self, judged: Judged) -> Added:
        gain, added = 0.0, Added()
        if not judged.correct:
            if judged.parent_id is not None:
                self.failed_children.append((judged.parent_id, judged.id))
        else:
            assert judged.fitness is not None and judged.code is not None and judged.behaviour is not None
            prev, cells = self.archive.best, len(self.archive)
            res = self.archive.add(Entry(judged.id, judged.fitness, judged.speedups, judged.code, judged.behaviour))
            if res.new_best:
                gain = self.o.gain_cap if prev is None else min(self.o.gain_cap, judged.fitness / prev.fitness - 1)
            elif len(self.archive) > cells:
                gain = self.o.cell_credit
            added = Added(res.cell, res.new_best)
        self.signal = self.o.decay * self.signal + gain
        return added

    def sample(self, rng: random.Random, ctx: Context) -> Ask:
        self.proposals += 1
        self.credit += self.strong_share
        tier = "cheap"
        if self.credit >= 1.0 - 1e-9:  # the quota: spread strong calls evenly, resumed runs included
            self.credit -= 1.0
            self.strong += 1
            tier = "strong"
        best = self.archive.best
        failures = ctx.recent_failures
        if best is None:  # nothing correct yet: repair a failure, else build on the seed or write anew
            if failures:
                return Ask("fix", tier, rng.choice(failures[:3]))
            return Ask("improve", tier, ctx.seed_id) if ctx.seed_id is not None else Ask("write", tier)
        if tier == "cheap" and failures and rng.random() < self.s.fix_share:
            return Ask("fix", tier, rng.choice(failures[:3]))
        if tier == "cheap" and ctx.can_tune and rng.random() < self.tune_share:
            return Ask("tune", "tuner", best.id)
        if rng.random() < self.explore_rate:
            parent = self.archive.cells[rng.choice(sorted(self.archive.cells))]  # sorted: a resumed run draws alike
            return Ask("rethink", tier, parent.id, self._inspirations(rng, parent.id), note=EXPLORE_NOTE)
        warn = tuple(c for p, c in reversed(self.failed_children) if p == best.id)[:2]
        return Ask("improve", tier, best.id, self._inspirations(rng, best.id), warn, EXPLOIT_NOTE)

    def _inspirations(self, rng: random.Random, parent: int) -> tuple[int, ...]:
        pool = sorted({e.id for e in self.archive.cells.values()} - {parent})
        return tuple(rng.sample(pool, min(max(self.s.inspirations, 0), len(pool))))

    def tuner_parents(self, rng: random.Random) -> list[int]:
        order = [self.archive.best] if self.archive.best else []
        order += sorted(self.archive.cells.values(), key=lambda e: (-e.fitness, e.id))
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
        return {"archive": self.archive.to_dict(), "signal": self.signal, "credit": self.credit,
                "proposals": self.proposals, "strong": self.strong,
                "failed_children": [list(x) for x in self.failed_children]}

    def load(self, state: dict[str, Any]) -> None:
        self.archive = Archive.from_dict(state["archive"])
        self.signal = float(state["signal"])
        self.credit = float(state["credit"])
        self.proposals = int(state["proposals"])
        self.strong = int(state["strong"])
        self.failed_children = deque((tuple(x) for x in state["failed_children"]), maxlen=RECENT_CHILDREN)
