"""``plan``: plan first, then implement (after Autocomp).

The strong model picks one optimisation from a menu (tiling, fusion, vectorised loads, a persistent
grid, split-K, shared-memory staging, autotune configs, ...) for a parent and writes a plan in
prose; the cheap model implements it, ``implementations`` times; a beam of the ``beam`` fastest
programs found so far are the parents of the next plans (each gets a plan before any gets a
second, the fastest first). Autocomp's point, kept
here: the expensive model spends its tokens on *what* to try (a few lines), the cheap one on the
code, and each plan is scored by the best of its implementations.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from kernelevo.settings import SearchSettings, SettingsError
from kernelevo.strategies.base import Added, Ask, Context, Judged

MENU = ("tiling (block sizes, 2-D tiles)", "operator fusion", "vectorised or coalesced loads",
        "a persistent grid", "split-K or split reductions", "shared-memory staging",
        "autotune configs", "software pipelining (num_stages)", "fewer passes over memory (online algorithms)",
        "a different parallelisation (rows per program, warps per row)")


@dataclass(frozen=True)
class PlanOptions:
    beam: int = 3  # programs kept as parents of the next plans
    implementations: int = 2  # cheap-model attempts at each plan

    def __post_init__(self) -> None:
        if self.beam < 1 or self.implementations < 1:
            raise SettingsError(f"[strategy.plan]: beam and implementations must be at least 1, got "
                                f"{self.beam} and {self.implementations}")


class Plan:
    name = "plan"
    Options = PlanOptions

    def __init__(self, settings: SearchSettings, n_sizes: int, opts: PlanOptions | None = None,
                 *, tune_share: float = 0.0) -> None:
        self.o = opts or PlanOptions()
        self.beam: list[tuple[int, float]] = []  # (id, fitness), fastest first
        self.plans: list[dict[str, Any]] = []  # {"parent", "text", "left", "children", "best"}
        self.asked: list[tuple[int | None, int]] = []  # implement asks awaiting a child: (parent, plan index)
        self.planned_count = 0

    # -- the seam ---------------------------------------------------------------------------------
    def planned(self, parent: int | None, text: str, cost_usd: float) -> None:
        """A plan arrived from the strong model: queue its implementations."""
        self.plans.append({"parent": parent, "text": text, "left": self.o.implementations, "children": [],
                           "best": None})

    def add(self, judged: Judged) -> Added:
        for k, (parent, index) in enumerate(self.asked):
            if parent == judged.parent_id:  # the oldest implement ask of this parent wrote it
                del self.asked[k]
                plan = self.plans[index]
                plan["children"].append(judged.id)
                if judged.fitness is not None:
                    plan["best"] = max(plan["best"] or 0.0, judged.fitness)
                break
        if judged.fitness is None:
            return Added()
        new_best = not self.beam or judged.fitness > self.beam[0][1]
        self.beam = sorted([*self.beam, (judged.id, judged.fitness)], key=lambda e: (-e[1], e[0]))[:self.o.beam]
        return Added(None, new_best)

    def sample(self, rng: random.Random, ctx: Context) -> Ask:
        for index, plan in enumerate(self.plans):
            if plan["left"] > 0:
                plan["left"] -= 1
                self.asked.append((plan["parent"], index))
                return Ask("improve", "cheap", plan["parent"],
                           note=f"Implement this plan (from the strong model), and only it:\n{plan['text']}")
        parents = [i for i, _ in self.beam] or ([ctx.seed_id] if ctx.seed_id is not None else [])
        if not parents:
            return Ask("fix", "cheap", ctx.recent_failures[0]) if ctx.recent_failures else Ask("write", "strong")
        # Beam search: every kept program gets a plan before any gets a second; the fastest first.
        made = {p: sum(1 for plan in self.plans if plan["parent"] == p) for p in parents}
        parent = min(parents, key=lambda p: (made[p], parents.index(p)))
        self.planned_count += 1
        return Ask("plan", "strong", parent, note="; ".join(MENU))

    def tuner_parents(self, rng: random.Random) -> list[int]:
        return [i for i, _ in self.beam]

    @property
    def best(self) -> tuple[int, float] | None:
        return self.beam[0] if self.beam else None

    @property
    def coverage(self) -> int:
        return len(self.beam)

    # -- state ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"beam": [list(e) for e in self.beam], "plans": self.plans, "asked": [list(a) for a in self.asked],
                "planned": self.planned_count}

    def load(self, state: dict[str, Any]) -> None:
        self.beam = [(int(i), float(f)) for i, f in state.get("beam", [])]
        self.plans = list(state.get("plans", []))
        self.asked = [(None if p is None else int(p), int(i)) for p, i in state.get("asked", [])]
        self.planned_count = int(state.get("planned", 0))
