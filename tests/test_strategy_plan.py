"""The plan strategy (Autocomp): the strong model writes a plan from the menu, the cheap model
implements it, a beam of the fastest programs are the next plans' parents; its state resumes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from kernelevo import strategies
from kernelevo.evaluate.verdict import Evaluation, Verdict
from kernelevo.settings import SearchSettings, SettingsError
from kernelevo.store import Store
from tests.llm_server import ScriptedServer, fenced
from tests.test_search import GOOD, run_search, settings, variant

PLAN_TEXT = "tiling (block sizes, 2-D tiles)\nProcess two rows per program; keep the row in registers."


def _judged(cid: int, parent: int | None, fitness: float | None) -> strategies.Judged:
    ev = Evaluation(f"#{cid}", Verdict.CORRECT if fitness else Verdict.INCORRECT, "", "cpu")
    return strategies.Judged(cid, parent, "", "triton", ev, "m", "improve", 0.0, cid, fitness,
                             (fitness,) if fitness else (), None, None)


def test_a_plan_then_its_implementations_then_a_plan_from_the_beam() -> None:
    s = strategies.make("plan", SearchSettings(), 1, tables={"plan": {"beam": 2, "implementations": 2}})
    ctx = strategies.Context(0, 1, (), can_tune=False, offline=False)
    rng = random.Random(0)
    first = s.sample(rng, ctx)
    assert (first.kind, first.tier, first.parent) == ("plan", "strong", 1) and "persistent grid" in first.note
    s.planned(1, PLAN_TEXT, 0.01)
    asks = [s.sample(rng, ctx) for _ in range(2)]
    assert all(a.kind == "improve" and a.tier == "cheap" and a.parent == 1 and PLAN_TEXT in a.note for a in asks)
    s.add(_judged(1, None, 1.0))
    s.add(_judged(2, 1, 1.5))
    s.add(_judged(3, 1, None))
    assert s.plans[0]["children"] == [2, 3] and s.plans[0]["best"] == 1.5
    assert s.best == (2, 1.5) and [i for i, _ in s.beam] == [2, 1]
    nxt = s.sample(rng, ctx)
    assert nxt.kind == "plan" and nxt.parent == 2  # the beam's best plans next
    again = strategies.make("plan", SearchSettings(), 1, json.loads(json.dumps(s.to_dict())))
    assert again.to_dict() == s.to_dict() and again.sample(rng, ctx) == s.sample(random.Random(0), ctx)


def test_plan_options_are_checked() -> None:
    assert strategies.options("plan", {"plan": {"beam": 5}}).beam == 5
    with pytest.raises(SettingsError, match="beam and implementations must be at least 1"):
        strategies.options("plan", {"plan": {"implementations": 0}})
    with pytest.raises(SettingsError, match="unknown setting"):
        strategies.options("plan", {"plan": {"width": 2}})


def test_a_run_makes_a_plan_call_then_implementation_calls(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []

    def script(body: dict, i: int) -> str:
        if body.get("max_tokens") == 1:
            return "OK"
        prompt = body["messages"][-1]["content"]
        if "Do not write code" in prompt:
            seen.append((body["model"], "plan"))
            return PLAN_TEXT
        seen.append((body["model"], "implement" if "Implement this plan" in prompt else "other"))
        return fenced(variant(i))

    db = tmp_path / "run.db"
    with ScriptedServer(script) as srv:
        run_search(settings(srv.url, tmp_path, budget=4, concurrency=1, strategy="plan"), db, seed=GOOD)
    assert seen[0] == ("strong", "plan") and seen[1:3] == [("cheap", "implement")] * 2, seen
    with Store(db) as store:
        state = store.state("strategy")
    assert state["name"] == "plan" and state["state"]["plans"][0]["text"] == PLAN_TEXT
    assert len(state["state"]["plans"][0]["children"]) == 2


def test_map_elites_parent_mix_is_a_setting() -> None:
    opts = strategies.options("map-elites", {"map-elites": {"p_best": 1.0, "p_cell": 0.0}})
    assert (opts.p_best, opts.p_cell) == (1.0, 0.0)
    with pytest.raises(SettingsError, match="sum to at most 1"):
        strategies.options("map-elites", {"map-elites": {"p_best": 0.8, "p_cell": 0.5}})
    assert strategies.options("archive", {}).p_best == 0.35  # the old name, LEVI's mix
