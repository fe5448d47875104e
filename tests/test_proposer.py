"""One reply at a time, against the loopback server: cut-off replies, syntax errors worth a fix,
and nothing a reply does ends the run."""

from __future__ import annotations

import pytest

from kernelevo.evaluate.verdict import Verdict
from kernelevo.propose import proposer as proposer_mod
from kernelevo.propose.llm import LLMClient
from kernelevo.propose.proposer import Proposer
from kernelevo.propose.tiers import Choice
from kernelevo.settings import LLMSettings
from tests.conftest import CANDIDATES, PROBLEMS
from tests.llm_server import ScriptedServer, fenced

GOOD = (CANDIDATES / "softmax_good.py").read_text()
WRITE = Choice("cheap", "write")


def _proposer(url: str, cap: int = 32768) -> Proposer:
    llm = LLMClient(LLMSettings(api_base=url, backoff_s=0.01, max_tokens=1000))
    return Proposer((PROBLEMS / "softmax_small.py").read_text(), "cpu", llm, "openai/m", None, None,
                    max_tokens_cap=cap)


def test_a_cut_off_reply_is_a_failure_that_says_so_and_raises_the_limit() -> None:
    cut = {"content": fenced(GOOD) + "\nAnd a second, longer version:\n```python\n" + GOOD[:400],
           "finish_reason": "length"}
    with ScriptedServer(lambda body, i: cut if i == 0 else fenced(GOOD)) as srv:
        p = _proposer(srv.url, cap=1500)
        first = p.execute(p.plan(WRITE, None))
        second = p.execute(p.plan(WRITE, None))
        third = p.execute(p.plan(WRITE, None))
        limits = [r["max_tokens"] for r in srv.requests]
    assert first.failure is not None and first.failure.verdict is Verdict.REJECTED
    assert first.failure.reason.startswith("your reply was cut off at 1000 tokens")  # not the earlier draft
    assert second.failure is None and second.source == GOOD.strip("\n") + "\n"
    assert limits == [1000, 1500, 1500]  # doubled for the next call, up to the cap
    assert third.failure is None


def test_a_syntax_error_is_a_candidate_for_the_fix_prompt() -> None:
    broken = GOOD.replace("def forward(self, x: torch.Tensor) -> torch.Tensor:", "def forward(self, x)")
    assert broken != GOOD
    with ScriptedServer(lambda body, i: fenced(broken)) as srv:
        p = _proposer(srv.url)
        prop = p.execute(p.plan(WRITE, None))
    assert prop.fixable and prop.failure is not None and prop.failure.verdict is Verdict.COMPILE_ERROR
    assert prop.source == broken.strip("\n") + "\n"  # the module, not the whole reply: the fix starts here
    assert prop.failure.reason.startswith("syntax error at line")


@pytest.mark.parametrize("error", [SystemError("error return without exception set"), RecursionError("deep")])
def test_nothing_raised_while_reading_a_reply_ends_the_run(monkeypatch, error: Exception) -> None:
    def boom(reply: str, parent: str | None) -> str:
        raise error

    monkeypatch.setattr(proposer_mod, "parse_reply", boom)
    with ScriptedServer(lambda body, i: fenced(GOOD)) as srv:
        p = _proposer(srv.url)
        prop = p.execute(p.plan(WRITE, None))
    assert prop.failure is not None and prop.failure.verdict is Verdict.REJECTED and prop.call is not None
    assert prop.failure.reason.startswith(f"the reply could not be read ({type(error).__name__}")


def test_a_tier_draws_each_of_its_models_once_before_any_twice() -> None:
    import random

    from kernelevo.propose.models import ModelChooser

    chooser = ModelChooser(["a", "b", "c"], ["s"])
    rng = random.Random(0)
    drawn = [chooser.pick("cheap", rng) for _ in range(9)]
    for k in range(3):  # each round of three holds all three, in a random order
        assert sorted(drawn[3 * k:3 * k + 3]) == ["a", "b", "c"], drawn
    assert drawn[:3] != drawn[3:6] or drawn[3:6] != drawn[6:9]  # the order is drawn, not fixed
    assert chooser.pick("strong", rng) == "s"
    resumed = ModelChooser(["a", "b", "c"], ["s"])
    resumed.load(chooser.to_dict())
    assert [resumed.pick("cheap", random.Random(1)) for _ in range(3)].count("a") == 1
