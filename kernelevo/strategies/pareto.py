"""``pareto``: a Pareto front over per-size speedups, after GEPA (Agrawal et al. 2025, "GEPA:
Reflective Prompt Evolution Can Outperform Reinforcement Learning").

GEPA keeps every candidate that is best somewhere rather than one overall best, draws parents in
proportion to how many training instances each is best on, and mutates "reflectively": the
proposer is told in words where the parent falls short. Here the instances are the problem's sizes:

- the front holds the correct candidates nothing beats: one is dropped once another is at least
  as fast on every size and faster on one, so a kernel that wins only on the largest size survives
  a generalist that is faster on average;
- an ``improve`` parent is drawn from the front with weight = the number of sizes on which it is
  the fastest (a tie counts for each tied member): GEPA's instance-wise frequency;
- the note (the prompt's "Guidance from the search") quotes the parent's weakest size against the
  member that leads there, and shows that leader as inspiration;
- cheap or strong is :class:`~kernelevo.propose.tiers.TierPolicy`'s choice; its stagnation rule
  counts new bests by geometric-mean speedup, and ``rethink`` and ``tune`` start from that best.

On a CPU no speed is measured and every correct candidate's speedups are 1.0, so all vectors tie.
A tie does not enter the front (the member there is already at least as fast everywhere): the front
is the first correct candidate, every ``improve`` builds on it, and no note is written, as there
is no weakness to quote. That is the ``sample`` baseline plus failure feedback; ``pareto`` only
differs where speed is measured.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Any

from kernelevo.propose.tiers import TierPolicy, TierState
from kernelevo.settings import SearchSettings, SettingsError
from kernelevo.strategies.base import Added, Ask, Context, Judged

RECENT_CHILDREN = 64  # failed children remembered, to warn the next prompt on their parent (as map-elites)
LABEL_CHARS = 60  # a size's parameters in the note, cut so the note stays one line


@dataclass(frozen=True)
class Member:
    id: int
    fitness: float  # geometric-mean speedup
    speedups: tuple[float, ...]  # per size


def covers(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` is at least as fast as ``b`` on every size."""
    return all(x >= y for x, y in zip(a, b, strict=False))  # one run's vectors are one length


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` is at least as fast as ``b`` on every size and faster on one."""
    return covers(a, b) and any(x > y for x, y in zip(a, b, strict=False))


def _label(size: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v}" for k, v in size.items())
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…"


class Pareto:
    name = "pareto"

    @dataclass(frozen=True)
    class Options:
        max_front: int = 16  # members kept; past it, the one leading on fewest sizes goes (never the best)
        inspirations: int = 2  # other members shown: the leaders where the parent is weakest first

        def __post_init__(self) -> None:  # runs for every [strategy.pareto] table too (dataclasses.replace)
            if self.max_front < 1:
                raise SettingsError(f"strategy.pareto.max_front must be at least 1, got {self.max_front}")
            if self.inspirations < 0:
                raise SettingsError(f"strategy.pareto.inspirations must be 0 or more, got {self.inspirations}")

    def __init__(self, settings: SearchSettings, n_sizes: int, opts: Pareto.Options | None = None, *,
                 tune_share: float = 0.0) -> None:
        self.opts = opts or Pareto.Options()
        self.policy = TierPolicy(settings.strong_share, settings.stagnation, settings.fix_share, tune_share=tune_share)
        self.tiers = TierState()
        self.front: list[Member] = []  # in the order they entered: ties in a draw or an eviction go to the oldest
        self._best: Member | None = None  # by geometric mean; kept even if it falls off the front
        self.labels: list[str] = []  # each size's parameters, from the first correct evaluation
        self.measured = False  # a correct candidate was timed: speedups are speeds, not the CPU's 1.0
        self.failed_children: deque[tuple[int, int]] = deque(maxlen=RECENT_CHILDREN)  # (parent, child)

    # -- the seam ---------------------------------------------------------------------------------
    def add(self, judged: Judged) -> Added:
        if not judged.correct:
            if judged.parent_id is not None:
                self.failed_children.append((judged.parent_id, judged.id))
            return Added()
        assert judged.fitness is not None
        if not self.labels:
            self.labels = [_label(s.size) for s in judged.evaluation.sizes]
        self.measured = self.measured or judged.evaluation.timing != "cpu-interpreter"
        m = Member(judged.id, judged.fitness, tuple(judged.speedups))
        new_best = self._best is None or m.fitness > self._best.fitness  # a tie keeps the earlier best
        if new_best:
            self._best = m
            self.tiers = self.policy.improved(self.tiers, judged.evaluated)
        self._insert(m)
        return Added(None, new_best)  # no cell: the prompt would call it an "archive cell"

    def sample(self, rng: random.Random, ctx: Context) -> Ask:
        choice, self.tiers = self.policy.choose(self.tiers, ctx.evaluated, rng, have_elites=bool(self.front),
                                                have_failures=bool(ctx.recent_failures), can_tune=ctx.can_tune)
        if choice.kind == "write" and ctx.seed_id is not None:  # the seed is still being judged: start from it
            return Ask("improve", choice.tier, ctx.seed_id)
        if choice.kind == "fix":
            return Ask("fix", choice.tier, rng.choice(ctx.recent_failures[:3]))
        if choice.kind == "improve":
            parent = self.front[rng.choices(range(len(self.front)), weights=self._weights())[0]]
        elif choice.kind in ("rethink", "tune"):
            parent = self._best or self.front[0]
        else:
            return Ask(choice.kind, choice.tier, ctx.seed_id if choice.kind == "sample" else None)
        weak = self._weak(parent)
        leaders = [o.id for _, o in weak] + [o.id for o in sorted(self.front, key=lambda o: -o.fitness)]
        insp = tuple(i for i in dict.fromkeys(leaders) if i != parent.id)[:self.opts.inspirations]
        failures = tuple(c for p, c in reversed(self.failed_children) if p == parent.id)[:2] \
            if choice.kind == "improve" else ()
        note = self.note(parent) if choice.kind != "tune" else ""  # a tuner move reads no prompt
        return Ask(choice.kind, choice.tier, parent.id, insp, failures, note)

    def tuner_parents(self, rng: random.Random) -> list[int]:
        leads = self.leads()
        order = ([self._best.id] if self._best else []) + \
            [o.id for o in sorted(self.front, key=lambda o: (-leads[o.id], -o.fitness))]
        return list(dict.fromkeys(order))

    @property
    def best(self) -> tuple[int, float] | None:
        return (self._best.id, self._best.fitness) if self._best else None

    @property
    def coverage(self) -> int:
        return len(self.front)

    # -- the front --------------------------------------------------------------------------------
    def _insert(self, m: Member) -> bool:
        # An equal vector counts as covered, so on a CPU (all 1.0) the first correct candidate stays alone.
        if any(covers(o.speedups, m.speedups) for o in self.front):
            return False
        self.front = [o for o in self.front if not dominates(m.speedups, o.speedups)] + [m]
        while len(self.front) > self.opts.max_front:
            # The one a parent draw would pick least (leading on fewest sizes), then the slowest; never
            # the best, which may lead on no size yet is what rethink and tune build on.
            leads, keep = self.leads(), self._best.id if self._best else None
            self.front.remove(min((o for o in self.front if o.id != keep), key=lambda o: (leads[o.id], o.fitness)))
        return m in self.front

    def _top(self, i: int) -> float:
        return max(o.speedups[i] for o in self.front)

    def leads(self) -> dict[int, int]:
        """How many sizes each member is the fastest on (ties count for each): GEPA's frequency."""
        n = min((len(o.speedups) for o in self.front), default=0)
        tops = [self._top(i) for i in range(n)]
        return {o.id: sum(o.speedups[i] >= tops[i] for i in range(n)) for o in self.front}

    def _weights(self) -> list[int]:
        leads = self.leads()
        w = [leads[o.id] for o in self.front]
        return w if any(w) else [1] * len(w)  # only without sizes: no member leads anywhere

    def _weak(self, p: Member) -> list[tuple[int, Member]]:
        """The sizes where another member is faster than ``p``, worst ratio first, with that member."""
        out: list[tuple[float, int, Member]] = []
        for i, mine in enumerate(p.speedups):
            rivals = [o for o in self.front if o.id != p.id and i < len(o.speedups)]
            if rivals:
                lead = max(rivals, key=lambda o: o.speedups[i])  # the oldest among equals
                if lead.speedups[i] > mine and lead.speedups[i] > 0:
                    out.append((mine / lead.speedups[i], i, lead))
        return [(i, o) for _, i, o in sorted(out, key=lambda t: (t[0], t[1]))]

    def _size(self, i: int) -> str:
        return f"size {i} ({self.labels[i]})" if i < len(self.labels) and self.labels[i] else f"size {i}"

    def note(self, p: Member) -> str:
        """The reflective note for parent ``p``: its weakest size, who leads there, where it leads."""
        if not self.measured or not p.speedups:  # on a CPU every speedup is 1.0: nothing to reflect on
            return ""
        weak = self._weak(p)
        led = [i for i in range(len(p.speedups)) if not self.front or p.speedups[i] >= self._top(i)]
        if not weak:
            i = min(range(len(p.speedups)), key=lambda k: p.speedups[k])
            return (f"Your kernel is the fastest so far on every size; its slowest is {self._size(i)} at "
                    f"{p.speedups[i]:.2f}x.")
        i, o = weak[0]
        where = ("it leads on size" + ("s " if len(led) > 1 else " ") + ", ".join(map(str, led))) if led \
            else "it leads on no size"
        keep = " without losing the sizes it leads" if led else ""
        return (f"Your kernel is {p.speedups[i]:.2f}x on {self._size(i)} where #{o.id} reaches "
                f"{o.speedups[i]:.2f}x; {where}. Close that gap{keep}.")

    # -- state ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        def member(m: Member) -> list[Any]:
            return [m.id, m.fitness, list(m.speedups)]
        return {"front": [member(m) for m in self.front], "best": member(self._best) if self._best else None,
                "labels": list(self.labels), "measured": self.measured, "tiers": self.tiers.to_dict(),
                "failed_children": [list(x) for x in self.failed_children]}

    def load(self, state: dict[str, Any]) -> None:
        def member(x: list[Any]) -> Member:
            return Member(int(x[0]), float(x[1]), tuple(float(v) for v in x[2]))
        self.front = [member(x) for x in state.get("front", ())]
        self._best = member(state["best"]) if state.get("best") else None
        self.labels = [str(x) for x in state.get("labels", ())]
        self.measured = bool(state.get("measured", False))
        self.tiers = TierState.from_dict(state.get("tiers"))
        self.failed_children = deque(((int(p), int(c)) for p, c in state.get("failed_children", ())),
                                     maxlen=RECENT_CHILDREN)
