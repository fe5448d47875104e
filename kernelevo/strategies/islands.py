"""``islands``: several MAP-Elites archives evolving apart, after OpenEvolve's island model.

OpenEvolve keeps ``num_islands`` populations, evolves them in turn (``next_island``), lets a child
join the island it was bred on, and every ``migration_interval`` generations copies each island's
top programs to its ring neighbours. Here:

- an island is a :class:`~kernelevo.strategies.map_elites.MapElites` archive (cells, champions,
  its own failed children); ``sample`` asks the islands in turn, round robin — a counter in the
  state, not a random draw, so a resumed run asks the same island next;
- a child joins the island that asked for it: the island that last sampled its parent and has not
  yet had a child of it back (a queue per parent, since asks for the same parent from two islands
  may be in flight at once); once the queue is down to one island, that island keeps the parent's
  later children. A candidate with no parent (the seed, a "write" from scratch), or whose parent no
  island knows, joins every island, so each island starts from the seed;
- every ``migrate_every`` evaluations (failed ones count, as each costs the evaluator; counted
  here, one per ``add``, not read from ``Judged.evaluated``, which a failure judged before the
  evaluator gets one too high) the ``migrants`` best elites of each island are copied to the next
  island — one direction only, where OpenEvolve sends to both neighbours — all chosen before any
  is placed, so an elite moves one hop per migration. A copy keeps its id (OpenEvolve renames its
  copies), so a target that already holds it is skipped;
- the model tiers (strong-model quota, stagnation) are the run's, shared by all islands: "one in
  ten" stays one in ten of all proposals, and stagnation means the best of all islands stalled.

A resumed run keeps the number of islands it was saved with; ``migrate_every`` and ``migrants``
are read from the settings each time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from kernelevo.propose.tiers import TierPolicy, TierState
from kernelevo.settings import SearchSettings, SettingsError
from kernelevo.strategies.base import Added, Ask, Context, Judged
from kernelevo.strategies.map_elites import MapElites


@dataclass(frozen=True)
class IslandsOptions:
    islands: int = 4  # archives evolving apart
    migrate_every: int = 10  # evaluations between ring migrations
    migrants: int = 1  # elites each island copies to the next per migration

    def __post_init__(self) -> None:
        # Checked here because apply_table builds the dataclass: a bad value fails at startup.
        for key, low in (("islands", 1), ("migrate_every", 1), ("migrants", 0)):
            if getattr(self, key) < low:
                raise SettingsError(f"strategy.islands.{key} must be at least {low}, got {getattr(self, key)}")


class Islands:
    name = "islands"
    Options = IslandsOptions

    def __init__(self, settings: SearchSettings, n_sizes: int, opts: IslandsOptions | None = None, *,
                 tune_share: float = 0.0) -> None:
        self.s, self.n_sizes, self.tune_share = settings, n_sizes, tune_share
        self.opts = opts or IslandsOptions()
        self.islands = [self._island() for _ in range(self.opts.islands)]
        self.tiers = TierState()
        self.policy = TierPolicy(settings.strong_share, settings.stagnation, settings.fix_share, tune_share=tune_share)
        self.turn = 0  # proposals asked: the next island is turn % len(islands)
        self.judged = 0  # candidates added (evaluations, failed ones included)
        self.migrated_at = 0  # self.judged at the last migration
        self.migrations = 0
        self._best: tuple[int, float] | None = None
        # candidate -> islands its next children join, oldest ask first (see the module docstring)
        self.homes: dict[int, list[int]] = {}

    def _island(self) -> MapElites:
        return MapElites(self.s, self.n_sizes, tune_share=self.tune_share)

    # -- the seam ---------------------------------------------------------------------------------
    def island_of(self, parent: int | None) -> list[int]:
        """The islands a child of ``parent`` would join now (every island: no parent, or unknown)."""
        q = self.homes.get(parent) if parent is not None else None
        return [q[0]] if q else list(range(len(self.islands)))

    def add(self, judged: Judged) -> Added:
        targets = self.island_of(judged.parent_id)
        q = self.homes.get(judged.parent_id) if judged.parent_id is not None else None
        if q and len(q) > 1:  # this child answers the oldest ask; the last island stays the home
            q.pop(0)
        if len(targets) == 1:  # a fix of this one, or a child of it, goes where it went
            self.homes.setdefault(judged.id, list(targets))  # unless an island already asked from it (the seed)
        added = [self.islands[i].add(judged) for i in targets]
        new_best = judged.fitness is not None and (self._best is None or judged.fitness > self._best[1])
        if new_best:
            assert judged.fitness is not None
            self._best = (judged.id, judged.fitness)
            self.tiers = self.policy.improved(self.tiers, judged.evaluated)
        self.judged += 1
        if self.judged - self.migrated_at >= self.opts.migrate_every:
            self.migrate()
            self.migrated_at = self.judged
        return Added(added[0].cell, new_best)

    def migrate(self) -> None:
        """Ring migration: each island's best elites are copied to the next island."""
        n = len(self.islands)
        if n < 2 or self.opts.migrants == 0:
            return
        # Chosen from every island before any is placed: an elite travels one hop per migration.
        moves = [(i, sorted(isl.archive.cells.values(), key=lambda e: (-e.fitness, e.id))[:self.opts.migrants])
                 for i, isl in enumerate(self.islands)]
        for i, elites in moves:
            target = self.islands[(i + 1) % n].archive
            held = {e.id for e in target.cells.values()}
            for e in elites:
                if e.id not in held:
                    target.add(e)
        self.migrations += 1

    def sample(self, rng: random.Random, ctx: Context) -> Ask:
        k = self.turn % len(self.islands)
        self.turn += 1
        island = self.islands[k]
        island.tiers = self.tiers  # the tiers are the run's: lend them to the island for this choice
        ask = island.sample(rng, ctx)
        self.tiers = island.tiers
        if ask.parent is not None:
            self.homes.setdefault(ask.parent, []).append(k)
        return ask

    def tuner_parents(self, rng: random.Random) -> list[int]:
        first = self.islands[self.turn % len(self.islands)].tuner_parents(rng)[:1]
        rest = sorted((e for isl in self.islands for e in isl.archive.cells.values()), key=lambda e: (-e.fitness, e.id))
        return list(dict.fromkeys([*first, *(e.id for e in rest)]))

    @property
    def best(self) -> tuple[int, float] | None:
        return self._best

    @property
    def coverage(self) -> int:
        """Distinct cells over all islands (an elite copied by migration counts once)."""
        return len({c for isl in self.islands for c in isl.archive.cells})

    # -- state ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        # Each island's own tiers are unused (the run's are lent to it), so they are not saved.
        islands = [{"archive": isl.archive.to_dict(), "failed_children": [list(x) for x in isl.failed_children]}
                   for isl in self.islands]
        return {"islands": islands, "tiers": self.tiers.to_dict(), "turn": self.turn, "judged": self.judged,
                "migrated_at": self.migrated_at, "migrations": self.migrations,
                "best": list(self._best) if self._best else None,
                "homes": [[c, list(q)] for c, q in self.homes.items()]}  # pairs: JSON keys would turn to strings

    def load(self, state: dict[str, Any]) -> None:
        self.islands = []
        for saved in state["islands"]:
            isl = self._island()
            isl.load(saved)
            self.islands.append(isl)
        self.tiers = TierState.from_dict(state.get("tiers"))
        self.turn, self.judged, self.migrated_at = int(state["turn"]), int(state["judged"]), int(state["migrated_at"])
        self.migrations = int(state.get("migrations", 0))
        best = state.get("best")
        self._best = (int(best[0]), float(best[1])) if best else None
        self.homes = {int(c): [int(i) for i in q] for c, q in state.get("homes", ())}
