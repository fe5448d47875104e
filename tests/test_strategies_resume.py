"""A SIGKILL mid-run, then a resume, restores the state of the strategies whose own test files do
not kill a run (plan) exactly, and the resumed run finishes its budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kernelevo.settings import Settings
from kernelevo.store import Store
from tests.conftest import CANDIDATES, PROBLEMS, kill_when_judged
from tests.llm_server import ScriptedServer, fenced
from tests.test_search import kernelevo as cli
from tests.test_search import variant


def _script(body: dict, i: int) -> str | dict:
    if body.get("max_tokens") == 1:
        return "OK"
    if "Do not write code" in body["messages"][-1]["content"]:
        return {"content": "autotune configs\nTry BLOCK 256 and 1024 with 4 and 8 warps.", "delay": 0.1}
    return {"content": fenced(variant(i)), "delay": 0.1}


@pytest.mark.parametrize("name", ["plan"])  # sample was here too: ~25 s of CI each, and CI is near its 20 min
def test_sigkill_then_resume_restores_the_strategy_exactly(tmp_path: Path, name: str) -> None:
    from kernelevo.propose.proposer import Proposer
    from kernelevo.search import Search

    db = tmp_path / "run.db"
    args = ["optimize", str(PROBLEMS / "softmax_small.py"), "--model", "openai/cheap", "--db", str(db), "--device",
            "cpu", "--budget", "5", "--concurrency", "2", "--strategy", name,
            "--seed-kernel", str(CANDIDATES / "softmax_good.py")]
    with ScriptedServer(_script) as srv:
        p = cli(*args, "--api-base", srv.url)
        kill_when_judged(p, db, 2)
        s = Settings().updated({"search": {"strategy": name}})
        with Store(db) as store:
            saved = store.state("strategy")
            search = Search(store, lambda c: None, Proposer("", "cpu", None, None, None, None), s.search, 2)
            assert saved["name"] == name
            assert json.loads(json.dumps(search.strategy.to_dict())) == saved["state"]
        p = cli(*args, "--api-base", srv.url)
        out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    with Store(db) as store:
        after = store.candidates()
        final = store.state("strategy")
    assert len([c for c in after if c.status == "done"]) >= 5 and not [c for c in after if c.status == "pending"]
    assert final["name"] == name
    if name == "plan":  # plans made before the kill are still there after it, and implemented
        assert len(final["state"]["plans"]) >= max(1, len(saved["state"]["plans"]))
        assert final["state"]["plans"][0]["text"].startswith("autotune configs")
