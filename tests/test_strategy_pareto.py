"""The ``pareto`` strategy (after GEPA): its front, its frequency-weighted parents, its reflective
note and its state, by unit; then in the loop against a loopback server, killed and resumed."""

from __future__ import annotations

import json
import random
from math import prod
from pathlib import Path

import pytest

from kernelevo import strategies
from kernelevo.evaluate.verdict import Evaluation, SizeResult, Verdict
from kernelevo.settings import SearchSettings, SettingsError
from kernelevo.store import Store
from kernelevo.strategies.pareto import Pareto
from tests.conftest import PROBLEMS, kill_when_judged
from tests.llm_server import ScriptedServer, fenced
from tests.test_search import kernelevo, run_search, settings, variant

SIZES = ({"batch_size": 8, "dim": 128}, {"batch_size": 64, "dim": 1024}, {"batch_size": 1, "dim": 4096},
         {"batch_size": 256, "dim": 8192})
IMPROVE_ONLY = SearchSettings(strong_share=0.0, stagnation=0)  # every proposal a cheap "improve"
CTX = strategies.Context(evaluated=10, seed_id=None, recent_failures=(), can_tune=False, offline=False)


def judged(cid: int, speedups: tuple[float, ...] | None, parent: int | None = None,
           timing: str = "cuda-events") -> strategies.Judged:
    """A judged candidate as the loop reports it; ``speedups`` None: an incorrect one."""
    sizes = tuple(SizeResult(s) for s in SIZES[:len(speedups or SIZES)])
    gm = prod(speedups) ** (1 / len(speedups)) if speedups else None
    ev = Evaluation("c", Verdict.CORRECT if speedups else Verdict.INCORRECT, "", "dev", timing, sizes, gm)
    return strategies.Judged(cid, parent, "src", "triton", ev, "openai/cheap", "improve", 0.0, cid, gm,
                             speedups or (), None, None)


GENERALIST = (1.5, 1.5, 1.5, 0.5)  # fastest on sizes 0-2
SPECIALIST = (0.5, 0.6, 0.7, 3.0)  # fastest on size 3 only, slower on average than the generalist
DOMINATED = (1.0, 1.0, 1.0, 0.4)  # the generalist is faster everywhere


def specialist_run(opts: Pareto.Options | None = None) -> Pareto:
    p = Pareto(IMPROVE_ONLY, 4, opts)
    p.add(judged(1, DOMINATED))
    p.add(judged(2, GENERALIST))  # drops #1
    p.add(judged(3, SPECIALIST))
    p.add(judged(4, DOMINATED))  # never enters
    p.add(judged(5, GENERALIST))  # a tie with #2: #2 was first
    p.add(judged(6, None, parent=3))  # a failed child of the specialist
    return p


def test_the_specialist_stays_and_the_dominated_go() -> None:
    p = specialist_run()
    assert [m.id for m in p.front] == [2, 3] and p.coverage == 2
    assert p.leads() == {2: 3, 3: 1}
    assert p.best is not None and p.best[0] == 2  # by geometric mean: the generalist
    assert p.tuner_parents(random.Random(0)) == [2, 3]


def test_parents_are_drawn_by_the_sizes_each_leads() -> None:
    p, rng = specialist_run(), random.Random(7)
    asks = [p.sample(rng, CTX) for _ in range(4000)]
    assert {a.kind for a in asks} == {"improve"} and {a.parent for a in asks} == {2, 3}
    share = sum(a.parent == 3 for a in asks) / len(asks)
    assert 0.21 < share < 0.29, share  # leads on 1 size of 4 (sd of the estimate: 0.007)


def test_the_note_quotes_the_weakest_size_and_who_leads_there() -> None:
    p, rng = specialist_run(), random.Random(1)
    by_parent = {}
    while len(by_parent) < 2:
        a = p.sample(rng, CTX)
        by_parent[a.parent] = a
    spec, gen = by_parent[3], by_parent[2]
    assert spec.note.startswith("Your kernel is 0.50x on size 0 (batch_size=8, dim=128) where #2 reaches 1.50x")
    assert "it leads on size 3." in spec.note and len(spec.note) < 200
    assert spec.inspirations == (2,) and spec.failures == (6,)
    assert "0.50x on size 3 (batch_size=256, dim=8192) where #3 reaches 3.00x" in gen.note
    assert "it leads on sizes 0, 1, 2" in gen.note and gen.failures == ()


def test_a_full_front_evicts_the_least_leading_but_never_the_best() -> None:
    p = Pareto(IMPROVE_ONLY, 2, Pareto.Options(max_front=2))
    p.add(judged(1, (3.0, 0.5)))
    p.add(judged(2, (0.5, 3.0)))
    p.add(judged(3, (2.0, 2.0)))  # the best by geometric mean, fastest on no size
    assert [m.id for m in p.front] == [2, 3] and p.best == (3, 2.0)
    assert p.leads() == {2: 1, 3: 1}  # with #1 gone, #3 leads on size 0
    assert p.note(p.front[1]).endswith("where #2 reaches 3.00x; it leads on size 0. Close that gap without "
                                       "losing the sizes it leads.")
    assert p.tuner_parents(random.Random(0))[0] == 3


def test_on_a_cpu_every_tie_leaves_the_first_correct_candidate_alone() -> None:
    p, rng = Pareto(IMPROVE_ONLY, 4), random.Random(0)
    p.add(judged(1, None))
    for cid in (2, 3, 4):
        p.add(judged(cid, (1.0,) * 4, timing="cpu-interpreter"))
    assert [m.id for m in p.front] == [2] and p.best == (2, 1.0)
    asks = [p.sample(rng, CTX) for _ in range(20)]
    assert all(a.parent == 2 and a.note == "" for a in asks)  # nothing measured: nothing to reflect on


def test_state_round_trips_and_the_next_choices_match() -> None:
    s = SearchSettings(strong_share=0.2, stagnation=3, fix_share=0.3)
    a = Pareto(s, 4, Pareto.Options(max_front=3, inspirations=1), tune_share=0.1)
    for j in (judged(1, DOMINATED), judged(2, GENERALIST), judged(3, SPECIALIST), judged(4, None, parent=2),
              judged(5, (1.2, 1.4, 0.9, 1.1))):
        a.add(j)
    rng = random.Random(3)
    ctx = strategies.Context(6, 1, (4,), can_tune=True, offline=False)
    for _ in range(5):
        a.sample(rng, ctx)
    saved = json.loads(json.dumps(a.to_dict()))
    b = strategies.make("pareto", s, 4, saved, {"pareto": {"max_front": 3, "inspirations": 1}}, tune_share=0.1)
    assert isinstance(b, Pareto) and b.to_dict() == saved == a.to_dict()
    ra, rb = random.Random(11), random.Random(11)
    asks_a = [a.sample(ra, ctx) for _ in range(30)]
    assert asks_a == [b.sample(rb, ctx) for _ in range(30)]
    assert len({x.kind for x in asks_a}) >= 3  # the comparison covers more than one kind of move
    extra = judged(7, (2.0, 0.4, 0.4, 0.4))
    assert a.add(extra) == b.add(extra) and a.to_dict() == b.to_dict()
    assert [m.id for m in b.front] == [2, 3, 7]


def test_options_come_from_the_strategy_table_and_are_checked() -> None:
    assert strategies.options("pareto", {}) == Pareto.Options()
    opts = strategies.options("pareto", {"pareto": {"max_front": 2, "inspirations": 0}})
    assert opts == Pareto.Options(max_front=2, inspirations=0)
    p = strategies.make("pareto", IMPROVE_ONLY, 4, tables={"pareto": {"max_front": 1, "inspirations": 0}})
    for j in (judged(2, GENERALIST), judged(3, SPECIALIST)):
        p.add(j)
    assert isinstance(p, Pareto) and [m.id for m in p.front] == [2]
    assert p.sample(random.Random(0), CTX).inspirations == ()
    with pytest.raises(SettingsError, match="unknown setting strategy.pareto.front_size"):
        strategies.options("pareto", {"pareto": {"front_size": 4}})
    with pytest.raises(SettingsError, match="max_front must be int"):
        strategies.options("pareto", {"pareto": {"max_front": "4"}})
    with pytest.raises(SettingsError, match="max_front must be at least 1"):
        strategies.options("pareto", {"pareto": {"max_front": 0}})


def _variants(body: dict, i: int) -> str | dict:
    return "OK" if body.get("max_tokens") == 1 else fenced(variant(i))


def test_a_loopback_run_to_budget(tmp_path: Path) -> None:
    s = settings("", tmp_path, budget=5, concurrency=2, strategy="pareto", strong_share=0.25)
    s = s.updated({"strategy": {"pareto": {"max_front": 4}}})
    with ScriptedServer(_variants) as srv:
        summary = run_search(s.updated({"llm": {"api_base": srv.url}}), tmp_path / "run.db", seed=variant(0))
        prompts = srv.prompts()
    assert summary.evaluated == 5 and summary.stop_reason.startswith("budget")
    with Store(tmp_path / "run.db") as store:
        cands = store.candidates()
        saved = store.state("strategy")
    seed = cands[0]
    assert seed.origin == "seed" and all(c.verdict == "correct" for c in cands)
    assert saved["name"] == "pareto" and not saved["state"]["measured"]
    assert saved["state"]["front"] == [[seed.id, 1.0, [1.0, 1.0]]]  # a CPU: the first correct candidate alone
    assert summary.best_id == seed.id and summary.cells == 1
    assert {c.prompt_kind for c in cands[1:]} <= {"improve", "rethink"} and all(c.parent_id == seed.id
                                                                                 for c in cands[1:])
    assert any(c.prompt_kind == "rethink" for c in cands)  # the strong tier's share
    assert len(prompts) >= 4 and not any("# Guidance from the search" in p for p in prompts)


def test_sigkill_then_resume_restores_the_saved_state(tmp_path: Path) -> None:
    from kernelevo.propose.proposer import Proposer
    from kernelevo.search import Search

    def script(body: dict, i: int) -> str | dict:
        return "OK" if body.get("max_tokens") == 1 else {"content": fenced(variant(i)), "delay": 0.2}

    db = tmp_path / "run.db"
    args = ["optimize", str(PROBLEMS / "softmax_small.py"), "--model", "openai/cheap", "--db", str(db),
            "--device", "cpu", "--budget", "5", "--concurrency", "2", "--strategy", "pareto"]
    with ScriptedServer(script) as srv:
        p = kernelevo(*args, "--api-base", srv.url)
        kill_when_judged(p, db, 2)
        with Store(db) as store:
            saved = store.state("strategy")
            done_before = {c.id: c.evaluation for c in store.candidates("done")}
            correct = {c.id for c in store.candidates("done") if c.verdict == "correct"}
            search = Search(store, lambda c: None, Proposer("", "cpu", None, None, None, None),
                            SearchSettings(strategy="pareto"), 2)
            assert json.loads(json.dumps(search.strategy.to_dict())) == saved["state"]
        assert saved["name"] == "pareto" and len(done_before) >= 2
        assert saved["state"]["front"] and {m[0] for m in saved["state"]["front"]} <= correct
        p = kernelevo(*args, "--api-base", srv.url)
        _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    with Store(db) as store:
        after = store.candidates()
        final = store.state("strategy")["state"]
    assert len(after) == 5 and all(c.status == "done" for c in after)
    assert {c.id: c.evaluation for c in after if c.id in done_before} == done_before  # nothing judged twice
    assert final["front"] == saved["state"]["front"]  # the resumed run kept the front it was killed with
    assert final["tiers"]["proposals"] > saved["state"]["tiers"]["proposals"]
