"""Which model answers a proposal: a fixed tier ensemble, or a bandit over every configured model.

- ``tiers`` (default, after AlphaEvolve's ensemble): the strategy names a tier; one of that tier's
  models (``llm.model`` plus ``llm.models`` for the cheap tier, ``llm.strong_model`` plus
  ``llm.strong_models`` for the strong one) is drawn: the least-called first, ties at random, so every
  model of a tier answers once before any answers twice (a uniform draw left one of three models
  unasked in 12% of nine-call runs) and the counts, saved with the run, make it resume exactly.
- ``bandit`` (after ShinkaEvolve): the tier is ignored and UCB1 picks among all configured models
  by improvement per dollar: an arm's value is the improvement its candidates brought (relative
  speedup over the parent; on a CPU, where no speed is measured, 1 for a correct candidate) divided
  by the dollars its calls cost, scaled by the best arm's value so the exploration bonus keeps its
  meaning whatever the prices. Unpriced models count as one micro-dollar a call.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

CHOOSERS = ("tiers", "bandit")
_MIN_COST = 1e-6  # dollars a call, so an unpriced (or free, local) model's value stays finite


@dataclass
class Arm:
    pulls: int = 0  # calls made with this model
    rewarded: int = 0  # of which judged (a reward arrived)
    gain: float = 0.0  # summed improvement of its candidates
    cost_usd: float = 0.0


@dataclass
class ModelChooser:
    cheap: list[str]
    strong: list[str]
    mode: str = "tiers"
    exploration: float = 1.0  # UCB1's c: 1 is the textbook bonus
    arms: dict[str, Arm] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in CHOOSERS:
            raise ValueError(f"llm.chooser must be one of {', '.join(CHOOSERS)}, got {self.mode!r}")
        self.cheap = list(dict.fromkeys(m for m in self.cheap if m))
        self.strong = list(dict.fromkeys(m for m in self.strong if m)) or list(self.cheap)
        for m in self.models:
            self.arms.setdefault(m, Arm())

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys([*self.cheap, *self.strong]))

    def pick(self, tier: str, rng: random.Random) -> str:
        if self.mode == "tiers" or len(self.models) == 1:
            pool = self.strong if tier == "strong" else self.cheap
            fewest = min(self.arms[m].pulls for m in pool)
            least = [m for m in pool if self.arms[m].pulls == fewest]
            model = least[0] if len(least) == 1 else rng.choice(least)
        else:
            model = self._ucb(rng)
        self.arms[model].pulls += 1
        return model

    def _ucb(self, rng: random.Random) -> str:
        untried = [m for m in self.models if self.arms[m].pulls == 0]
        if untried:
            return untried[0]
        values = {m: a.gain / max(a.cost_usd, _MIN_COST * max(a.rewarded, 1)) for m, a in self.arms.items()
                  if m in self.models}
        top = max(values.values())
        total = sum(self.arms[m].pulls for m in self.models)
        scores = {m: (values[m] / top if top > 0 else 0.0)
                  + self.exploration * math.sqrt(2 * math.log(total) / self.arms[m].pulls) for m in self.models}
        best = max(scores.values())
        return rng.choice(sorted(m for m, s in scores.items() if s >= best - 1e-12))

    def reward(self, model: str | None, gain: float, cost_usd: float) -> None:
        """A judged candidate of ``model``: its improvement (>= 0) and the dollars of its call."""
        if model is None or model not in self.arms:
            return
        arm = self.arms[model]
        arm.rewarded += 1
        arm.gain += max(0.0, gain)
        arm.cost_usd += max(0.0, cost_usd)

    def to_dict(self) -> dict[str, Any]:
        return {m: [a.pulls, a.rewarded, a.gain, a.cost_usd] for m, a in self.arms.items()}

    def load(self, state: dict[str, Any] | None) -> None:
        for m, (pulls, rewarded, gain, cost) in (state or {}).items():
            self.arms[m] = Arm(int(pulls), int(rewarded), float(gain), float(cost))
