"""``sample``: the baseline a search strategy has to beat — independent proposals from the seed.

No archive and no parents but the seed: every proposal is a fresh sample of "make this faster".
The strong model is called for the same fixed share of proposals as in ``map-elites`` (and on
stagnation), so the two differ only in what they build on.
"""

from __future__ import annotations

import random
from typing import Any

from kernelevo.propose.tiers import TierPolicy, TierState
from kernelevo.settings import SearchSettings
from kernelevo.strategies.base import Added, Ask, Context, Judged


class Sample:
    name = "sample"

    def __init__(self, settings: SearchSettings, n_sizes: int, *, tune_share: float = 0.0) -> None:
        self.tiers = TierState()
        self.policy = TierPolicy(settings.strong_share, settings.stagnation, fix_share=0.0)
        self._best: tuple[int, float] | None = None
        self._correct = 0

    def add(self, judged: Judged) -> Added:
        if not judged.correct:
            return Added()
        assert judged.fitness is not None
        self._correct += 1
        if self._best is None or judged.fitness > self._best[1]:
            self._best = (judged.id, judged.fitness)
            self.tiers = self.policy.improved(self.tiers, judged.evaluated)
            return Added(None, True)
        return Added()

    def sample(self, rng: random.Random, ctx: Context) -> Ask:
        # Only the tier comes from the policy (the strong model's share and stagnation rule, as in
        # map-elites); what is asked is always a fresh sample from the seed.
        choice, self.tiers = self.policy.choose(self.tiers, ctx.evaluated, rng, have_elites=self._best is not None,
                                                have_failures=False)
        return Ask("sample", choice.tier, ctx.seed_id)

    def tuner_parents(self, rng: random.Random) -> list[int]:
        return [self._best[0]] if self._best else []

    @property
    def best(self) -> tuple[int, float] | None:
        return self._best

    @property
    def coverage(self) -> int:
        return 1 if self._best else 0

    def to_dict(self) -> dict[str, Any]:
        return {"tiers": self.tiers.to_dict(), "best": list(self._best) if self._best else None,
                "correct": self._correct}

    def load(self, state: dict[str, Any]) -> None:
        self.tiers = TierState.from_dict(state.get("tiers"))
        self._best = tuple(state["best"]) if state.get("best") else None  # type: ignore[assignment]
        self._correct = int(state.get("correct", 0))
