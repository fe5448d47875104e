"""The ``adaptive`` strategy: its improvement signal steers exploration and the strong-model share,
its state resumes exactly, and it runs the loop end to end (loopback model server, CPU)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from kernelevo import strategies
from kernelevo.archive import BehaviourDescriptors, CodeDescriptors
from kernelevo.evaluate.verdict import Evaluation, Verdict
from kernelevo.settings import SearchSettings, SettingsError
from kernelevo.store import Store
from kernelevo.strategies.adaptive import EXPLOIT_NOTE, EXPLORE_NOTE, Adaptive, AdaptiveOptions
from tests.conftest import PROBLEMS, kill_when_judged
from tests.llm_server import ScriptedServer, fenced
from tests.test_search import kernelevo, run_search, settings, variant

N_SIZES = 2
CTX = strategies.Context(evaluated=0, seed_id=None, recent_failures=(), can_tune=False, offline=False)


def judged(i: int, fitness: float | None, parent: int | None = None, cell: int = 0) -> strategies.Judged:
    """A judged candidate; ``cell`` picks distinct code descriptors (so distinct archive cells)."""
    ok = fitness is not None
    code = CodeDescriptors("triton", cell % 4, (cell // 4) % 3, bool(cell & 16), bool(cell & 32), bool(cell & 64),
                           0, None, None)
    ev = Evaluation("proposal", Verdict.CORRECT if ok else Verdict.INCORRECT, "" if ok else "wrong", "cpu")
    return strategies.Judged(i, parent, f"# {i}", "triton", ev, "openai/cheap", "improve", 0.0, i, fitness,
                             (fitness,) * N_SIZES if ok else (), code if ok else None,
                             BehaviourDescriptors((True,) * N_SIZES, 0, None) if ok else None)


def shares(s: Adaptive, rng: random.Random, n: int = 2000, ctx: strategies.Context = CTX) -> tuple[float, float]:
    """Measured (explore share, strong share) over ``n`` proposals."""
    asks = [s.sample(rng, ctx) for _ in range(n)]
    return sum(a.kind == "rethink" for a in asks) / n, sum(a.tier == "strong" for a in asks) / n


def improving() -> Adaptive:
    """Twenty candidates, each 10% faster than the last, in new cells: steady progress."""
    s = Adaptive(SearchSettings(), N_SIZES)
    for i in range(1, 21):
        assert s.add(judged(i, 1.1 ** i, cell=i)).new_best
    return s


def test_improvements_exploit_and_stagnation_explores_with_the_strong_model() -> None:
    s = improving()
    rng = random.Random(7)
    explore, strong = shares(s, rng)
    assert explore < 0.25 and strong < 0.15, (explore, strong)
    # Exploiting means improving the best; exploring means rethinking some cell's elite.
    asks = [s.sample(rng, CTX) for _ in range(200)]
    assert all(a.parent == 20 and a.note == EXPLOIT_NOTE for a in asks if a.kind == "improve")
    assert {a.kind for a in asks} == {"improve", "rethink"}
    elites = {e.id for e in s.archive.cells.values()}
    assert all(a.note == EXPLORE_NOTE and a.parent in elites and a.parent not in a.inspirations
               for a in asks if a.kind == "rethink")
    assert len({a.parent for a in asks if a.kind == "rethink"}) > 3  # random cells, not only the best

    for i in range(21, 121):  # a long stagnation: failures and slower kernels in occupied cells
        s.add(judged(i, None, parent=20) if i % 2 else judged(i, 0.5, cell=(i % 20) + 1))
    explore2, strong2 = shares(s, rng)
    assert explore2 > 0.6 and strong2 > 0.4, (explore2, strong2)
    assert explore2 > explore + 0.4 and strong2 > strong + 0.3

    # A new best after the stagnation brings exploitation back.
    s.add(judged(200, 1.1 ** 25, cell=90))
    explore3, strong3 = shares(s, rng)
    assert explore3 < 0.3 and strong3 < 0.2, (explore3, strong3)


def test_the_strong_share_is_a_quota_and_failures_are_repaired_by_the_cheap_model() -> None:
    s = Adaptive(SearchSettings(fix_share=0.5), N_SIZES, AdaptiveOptions(strong_min=0.25, strong_max=0.25))
    s.add(judged(1, 1.0))
    ctx = strategies.Context(5, None, (9, 8, 7, 6), can_tune=False, offline=False)
    asks = [s.sample(random.Random(i), ctx) for i in range(40)]
    assert [a.tier for a in asks].count("strong") == 10  # exactly one in four, whatever the draws
    assert all(a.tier == "strong" for a in asks[3::4])
    fixes = [a for a in asks if a.kind == "fix"]
    assert fixes and all(a.tier == "cheap" and a.parent in (9, 8, 7) for a in fixes)
    # Nothing correct yet: build on the seed while it is judged, else write from scratch.
    fresh = Adaptive(SearchSettings(), N_SIZES)
    seeded = strategies.Context(0, 1, (), can_tune=False, offline=False)
    first = fresh.sample(random.Random(0), seeded)
    assert (first.kind, first.parent) == ("improve", 1)
    assert fresh.sample(random.Random(0), CTX).kind == "write"


def test_state_round_trips_through_json_and_continues_identically() -> None:
    s = improving()
    for i in range(21, 40):
        s.add(judged(i, None, parent=20) if i % 3 else judged(i, 0.9, cell=i))
    rng = random.Random(3)
    for _ in range(7):
        s.sample(rng, CTX)
    saved = json.loads(json.dumps(s.to_dict()))
    restored = Adaptive(SearchSettings(), N_SIZES)
    restored.load(saved)
    assert restored.to_dict() == saved
    assert (restored.signal, restored.credit, restored.best, restored.coverage) == (s.signal, s.credit, s.best,
                                                                                    s.coverage)
    ctx = strategies.Context(40, None, (39, 38), can_tune=True, offline=False)
    a, b = random.Random(11), random.Random(11)
    first = [s.sample(a, ctx) for _ in range(300)]
    assert first == [restored.sample(b, ctx) for _ in range(300)]
    assert len(Counter(x.kind for x in first)) >= 3  # the comparison covers several kinds of move
    assert restored.tuner_parents(a)[0] == 20 and len(restored.tuner_parents(a)) == restored.coverage


def test_options_come_from_the_strategy_table_and_bad_ones_are_refused() -> None:
    opts = strategies.options("adaptive", {"adaptive": {"decay": 0.5, "strong_max": 1, "explore_min": 0.2}})
    assert opts == AdaptiveOptions(decay=0.5, strong_max=1.0, explore_min=0.2)
    assert strategies.options("adaptive", {}) == AdaptiveOptions()
    made = strategies.make("adaptive", SearchSettings(), N_SIZES, tables={"adaptive": {"decay": 0.5}})
    assert isinstance(made, Adaptive) and made.o.decay == 0.5
    with pytest.raises(SettingsError, match="strategy.adaptive.decai"):
        strategies.options("adaptive", {"adaptive": {"decai": 0.5}})
    with pytest.raises(SettingsError, match="must be float"):
        strategies.options("adaptive", {"adaptive": {"decay": "fast"}})
    with pytest.raises(SettingsError, match="explore_min"):
        strategies.options("adaptive", {"adaptive": {"explore_min": 0.8, "explore_max": 0.5}})
    with pytest.raises(SettingsError, match="decay"):
        strategies.options("adaptive", {"adaptive": {"decay": 1.0}})


def test_a_loopback_run_reaches_its_budget_with_the_adaptive_strategy(tmp_path: Path) -> None:
    def script(body: dict, i: int) -> str:
        return "OK" if body.get("max_tokens") == 1 else fenced(variant(i))

    with ScriptedServer(script) as srv:
        summary = run_search(settings(srv.url, tmp_path, budget=5, concurrency=2, strategy="adaptive"),
                             tmp_path / "run.db")
        prompts = srv.prompts()
        models = {r["model"] for r in srv.requests if r.get("max_tokens") != 1}
    assert summary.evaluated == 5 and summary.stop_reason.startswith("budget"), summary
    assert summary.best_id is not None and summary.cells >= 1
    with Store(tmp_path / "run.db") as store:
        saved = store.state("strategy")
        cands = store.candidates()
    assert saved["name"] == "adaptive" and saved["state"]["signal"] > 0  # the correct kernels were credited
    assert saved["state"]["proposals"] >= 4 and saved["state"]["strong"] >= 1
    assert {"cheap", "strong"} <= {m.split("/")[-1] for m in models}  # nothing correct at first: strong at its ceiling
    assert all(c.verdict == "correct" for c in cands)
    later = [c for c in cands if c.parent_id is not None]
    assert later and all(c.prompt_kind in ("improve", "rethink") for c in later)
    assert any(EXPLOIT_NOTE in p or EXPLORE_NOTE in p for p in prompts)  # the mode reaches the prompt


def test_sigkill_then_resume_restores_the_adaptive_state_exactly(tmp_path: Path) -> None:
    def script(body: dict, i: int) -> str | dict:
        return "OK" if body.get("max_tokens") == 1 else {"content": fenced(variant(i)), "delay": 0.2}

    db = tmp_path / "run.db"
    args = ["optimize", str(PROBLEMS / "softmax_small.py"), "--model", "openai/cheap", "--db", str(db),
            "--device", "cpu", "--budget", "6", "--concurrency", "2", "--strategy", "adaptive"]
    with ScriptedServer(script) as srv:
        p = kernelevo(*args, "--api-base", srv.url)
        kill_when_judged(p, db, 3)

        from kernelevo.propose.proposer import Proposer
        from kernelevo.search import Search

        with Store(db) as store:
            saved = store.state("strategy")
            before = {c.id: (c.verdict, c.evaluation, c.digest) for c in store.candidates("done")}
            s = settings(srv.url, tmp_path, strategy="adaptive").search
            search = Search(store, lambda c: None, Proposer("", "cpu", None, None, None, None), s, 2)
        assert saved["name"] == "adaptive" and len(before) >= 3
        assert isinstance(search.strategy, Adaptive) and search.strategy.coverage >= 1
        assert json.loads(json.dumps(search.strategy.to_dict())) == saved["state"]

        p = kernelevo(*args, "--api-base", srv.url)
        out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    with Store(db) as store:
        after = store.candidates()
        final = store.state("strategy")
    assert all(c.status == "done" for c in after) and len(after) == 6
    assert {c.id: (c.verdict, c.evaluation, c.digest) for c in after if c.id in before} == before
    # The resumed run went on from the restored archive: a fresh one would crown a later candidate
    # (on a CPU every correct kernel scores 1.0 and the first keeps the crown).
    assert final["name"] == "adaptive" and final["state"]["proposals"] >= saved["state"]["proposals"]
    assert final["state"]["archive"]["best"]["id"] == saved["state"]["archive"]["best"]["id"]
