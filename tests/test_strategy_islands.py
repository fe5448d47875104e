"""The ``islands`` strategy: ring migration, children on their parent's island, exact resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from kernelevo import strategies
from kernelevo.archive import BehaviourDescriptors, CodeDescriptors
from kernelevo.evaluate.verdict import Evaluation, Verdict
from kernelevo.settings import SearchSettings, Settings, SettingsError
from kernelevo.store import Store
from kernelevo.strategies.base import Context, Judged
from kernelevo.strategies.islands import Islands, IslandsOptions
from tests.conftest import PROBLEMS, kill_when_judged
from tests.llm_server import ScriptedServer, fenced
from tests.test_search import kernelevo as cli
from tests.test_search import run_search, settings, variant

CTX = Context(evaluated=1, seed_id=None, recent_failures=(), can_tune=False, offline=False)


def judged(cid: int, parent: int | None, evaluated: int, fitness: float | None = 1.0, kernels: int = 1) -> Judged:
    """A judged candidate; ``kernels`` puts it in a cell of its own, ``fitness=None`` fails it."""
    ok = fitness is not None
    ev = Evaluation(f"c{cid}", Verdict.CORRECT if ok else Verdict.INCORRECT, "" if ok else "wrong", "cpu")
    code = CodeDescriptors("triton", kernels, 0, False, False, False, 64, 4, None) if ok else None
    beh = BehaviourDescriptors((True, True), 0, None) if ok else None
    return Judged(cid, parent, f"# {cid}", "triton", ev, "openai/cheap", "improve", 0.0, evaluated, fitness,
                  (fitness, fitness) if fitness else (), code, beh)


def held(s: Islands) -> list[set[int]]:
    """The candidate ids each island's archive holds."""
    return [{e.id for e in isl.archive.cells.values()} for isl in s.islands]


def make(**opts: int) -> Islands:
    return Islands(SearchSettings(warmup=0), 2, IslandsOptions(**opts))


def test_elites_migrate_one_hop_around_the_ring_and_children_join_their_parents_island() -> None:
    s = make(islands=3, migrate_every=4, migrants=1)
    s.add(judged(1, None, 1))  # the seed: no parent, so every island starts from it
    assert held(s) == [{1}, {1}, {1}]
    rng = random.Random(0)
    asks = [s.sample(rng, CTX) for _ in range(3)]  # round robin: islands 0, 1, 2 each ask from the seed
    assert [a.parent for a in asks] == [1, 1, 1]
    s.add(judged(2, 1, 2, fitness=2.0, kernels=2))  # answers island 0's ask
    s.add(judged(3, 2, 3, fitness=1.5, kernels=3))  # a child of #2 stays on #2's island
    assert held(s) == [{1, 2, 3}, {1}, {1}]
    s.add(judged(4, 1, 4, fitness=1.2, kernels=2))  # answers island 1's ask; the 4th evaluation migrates
    assert s.migrations == 1
    # island 0's best (#2) went to island 1, island 1's (#4) to island 2; island 2's seed was already on island 0
    assert held(s) == [{1, 2, 3}, {1, 2}, {1, 4}]
    assert 2 not in held(s)[2]  # one hop per migration: not passed on by the island that just received it
    for k in (5, 6, 7):  # failed children of #2: remembered on #2's island only
        s.add(judged(k, 2, k, fitness=None))
    assert 2 not in held(s)[2] and s.migrations == 1
    assert [c for _, c in s.islands[0].failed_children] == [5, 6, 7] and not s.islands[1].failed_children
    s.add(judged(8, 4, 8, fitness=None))  # a failed child of #4 joins island 1, and the 8th evaluation migrates
    assert s.migrations == 2 and 2 in held(s)[2] and [c for _, c in s.islands[1].failed_children] == [8]
    assert s.best == (2, 2.0) and s.coverage == 3  # seed's cell, kernels=2's, kernels=3's


def test_state_round_trips_through_json_to_the_same_choices() -> None:
    s = make(islands=3, migrate_every=3, migrants=2)
    rng = random.Random(5)
    s.add(judged(1, None, 1))
    n = 1
    for k in range(2, 12):  # a history with asks, children, failures and migrations
        ask = s.sample(rng, CTX)
        n += 1
        s.add(judged(k, ask.parent, n, fitness=None if k % 4 == 0 else 1.0 + k / 10, kernels=1 + k % 3))
    saved = json.loads(json.dumps(s.to_dict()))
    restored = make(islands=5, migrate_every=3, migrants=2)  # the saved state's islands win: a run keeps its islands
    restored.load(saved)
    assert len(restored.islands) == 3 and restored.to_dict() == s.to_dict() and restored.migrations >= 3
    r1, r2 = random.Random(9), random.Random(9)
    ctx = Context(n, None, (11, 7), can_tune=True, offline=False)
    for k in range(12, 24):
        a, b = s.sample(r1, ctx), restored.sample(r2, ctx)
        assert a == b
        s.add(j := judged(k, a.parent, k, fitness=1.0, kernels=k % 4))
        restored.add(j)
    assert restored.to_dict() == s.to_dict() and s.tuner_parents(r1) == restored.tuner_parents(r2)


def test_options_come_from_the_strategy_islands_table() -> None:
    assert strategies.options("islands", {"islands": {"islands": 3}}) == IslandsOptions(islands=3)
    assert strategies.options("islands", {}) == IslandsOptions(4, 10, 1)
    with pytest.raises(SettingsError, match="unknown setting strategy.islands.islandz"):
        strategies.options("islands", {"islands": {"islandz": 3}})
    with pytest.raises(SettingsError, match="islands.migrate_every must be at least 1"):
        strategies.options("islands", {"islands": {"migrate_every": 0}})
    made = strategies.make("islands", SearchSettings(), 2, tables={"islands": {"islands": 2}}, tune_share=0.1)
    assert isinstance(made, Islands) and len(made.islands) == 2 and "islands" in strategies.names()


def _script(body: dict, i: int) -> str | dict:
    return "OK" if body.get("max_tokens") == 1 else {"content": fenced(variant(i)), "delay": 0.1}


def test_a_loopback_run_reaches_its_budget_with_islands(tmp_path: Path) -> None:
    s = settings("", tmp_path, budget=5, concurrency=2, strategy="islands", strong_share=0.0)
    s = s.updated({"strategy": {"islands": {"islands": 3, "migrate_every": 2}}})
    with ScriptedServer(_script) as srv:
        summary = run_search(s.updated({"llm": {"api_base": srv.url}}), tmp_path / "run.db", seed=variant(0))
    assert summary.evaluated == 5 and summary.stop_reason.startswith("budget")
    with Store(tmp_path / "run.db") as store:
        saved = store.state("strategy")
        cands = store.candidates()
    assert saved["name"] == "islands"
    state = saved["state"]
    assert len(state["islands"]) == 3 and state["migrations"] == 2 and state["migrated_at"] == 4
    assert state["turn"] == summary.proposals  # one island asked per proposal
    assert all(c.parent_id == cands[0].id for c in cands[1:])  # the seed is on every island: all build on it


def test_sigkill_then_resume_restores_the_islands_exactly(tmp_path: Path) -> None:
    from kernelevo.propose.proposer import Proposer
    from kernelevo.search import Search

    db, cfg = tmp_path / "run.db", tmp_path / "k.toml"
    cfg.write_text("[strategy.islands]\nislands = 3\nmigrate_every = 2\n")
    args = ["optimize", str(PROBLEMS / "softmax_small.py"), "--model", "openai/cheap", "--db", str(db), "--device",
            "cpu", "--budget", "6", "--concurrency", "3", "--strategy", "islands", "--config", str(cfg)]
    with ScriptedServer(_script) as srv:
        p = cli(*args, "--api-base", srv.url)
        kill_when_judged(p, db, 2)
        s = Settings.load(cfg).updated({"search": {"strategy": "islands"}})
        with Store(db) as store:
            saved = store.state("strategy")
            search = Search(store, lambda c: None, Proposer("", "cpu", None, None, None, None), s.search, 2,
                            strategy_tables=s.strategy)
            assert saved["name"] == "islands" and 2 <= saved["state"]["judged"] < 6
            assert json.loads(json.dumps(search.strategy.to_dict())) == saved["state"]
        p = cli(*args, "--api-base", srv.url)
        out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    with Store(db) as store:
        after = store.candidates()
        final = store.state("strategy")["state"]
    assert len(after) == 6 and all(c.status == "done" for c in after)
    # Migrations at the 2nd, 4th and 6th evaluation, across the kill: the count went on, it did not restart.
    assert final["judged"] == 6 and final["migrations"] == 3 and final["migrated_at"] == 6
    assert final["turn"] >= saved["state"]["turn"]  # proposals asked before the kill are not asked again
