"""Which model writes the next proposal, and what it is asked for.

After LEVI: the cheap model makes most proposals; the strong model is called for a share of
them (a deterministic quota, so "one in ten" means one in ten, resumed runs included) and
whenever the best has not improved for a while, and it is asked for a different algorithm.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class TierState:
    proposals: int = 0  # proposals planned (all tiers)
    strong: int = 0  # of which strong
    tuned: int = 0  # of which tuner moves
    best_at: int = 0  # evaluations counted when the best last improved
    strong_at: int = -(10**9)  # evaluations counted when the strong model was last called

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any] | None) -> TierState:
        return TierState(**d) if d else TierState()


@dataclass(frozen=True)
class Choice:
    tier: str  # "cheap" | "strong" | "tuner"
    kind: str  # "write" | "improve" | "fix" | "rethink" | "tune" | "sample"


class TierPolicy:
    def __init__(self, strong_share: float = 0.1, stagnation: int = 8, fix_share: float = 0.25,
                 tune_share: float = 0.0):
        if not 0.0 <= strong_share <= 1.0:
            raise ValueError(f"strong_share must be in [0, 1], got {strong_share}")
        self.strong_share = strong_share
        self.stagnation = stagnation
        self.fix_share = fix_share
        self.tune_share = tune_share

    def stagnant(self, state: TierState, evaluated: int) -> bool:
        """No new best for ``stagnation`` evaluations, and no strong call within that window either."""
        return (self.stagnation > 0 and evaluated - state.best_at >= self.stagnation
                and evaluated - state.strong_at >= self.stagnation)

    def choose(self, state: TierState, evaluated: int, rng: random.Random, *, have_elites: bool,
               have_failures: bool, can_tune: bool = False) -> tuple[Choice, TierState]:
        n = state.proposals + 1
        quota = math.floor(n * self.strong_share + 1e-9) > state.strong
        if quota or (have_elites and self.stagnant(state, evaluated)):
            kind = "rethink" if have_elites else ("fix" if have_failures else "write")
            return Choice("strong", kind), replace(state, proposals=n, strong=state.strong + 1, strong_at=evaluated)
        if can_tune and have_elites and rng.random() < self.tune_share:
            return Choice("tuner", "tune"), replace(state, proposals=n, tuned=state.tuned + 1)
        if have_failures and (not have_elites or rng.random() < self.fix_share):
            return Choice("cheap", "fix"), replace(state, proposals=n)
        return Choice("cheap", "improve" if have_elites else "write"), replace(state, proposals=n)

    @staticmethod
    def improved(state: TierState, evaluated: int) -> TierState:
        return replace(state, best_at=evaluated)
