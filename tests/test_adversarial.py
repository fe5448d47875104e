"""Every known evaluator hack must fail, with the static checks on and, where a runtime
defence exists, with them off; real kernels must pass."""

from __future__ import annotations

import pytest

from kernelevo.candidate import Candidate
from kernelevo.evaluate.verdict import Verdict
from tests.adversarial import HACKS, HANG_AT_IMPORT, HANG_IN_FORWARD, HEADER, Hack
from tests.conftest import CANDIDATES


def _run(evaluators, hack: Hack, static: bool):
    ev = evaluators(hack.problem)
    ev.static_checks = static
    try:
        return ev.evaluate(Candidate.from_source(HEADER + hack.source, hack.name))
    finally:
        ev.static_checks = True


@pytest.mark.parametrize("hack", HACKS, ids=lambda h: h.name)
def test_hack_fails_with_static_checks(evaluators, hack: Hack) -> None:
    result = _run(evaluators, hack, static=True)
    assert result.verdict.value == hack.static, result.reason
    assert result.reason, "a failing verdict must say why"


@pytest.mark.parametrize("hack", [h for h in HACKS if h.runtime], ids=lambda h: h.name)
def test_hack_fails_at_runtime(evaluators, hack: Hack) -> None:
    result = _run(evaluators, hack, static=False)
    assert result.verdict.value == hack.runtime, result.reason
    assert hack.reason in result.reason, result.reason


@pytest.mark.parametrize(
    "problem,candidate",
    [
        ("softmax_small", "softmax_good"),
        ("layernorm_small", "layernorm_good"),
        ("tiny_output", "scale_good"),
        ("mean_small", "mean_good"),
    ],
)
def test_real_kernels_pass(evaluators, problem: str, candidate: str) -> None:
    result = evaluators(problem).evaluate(Candidate.from_file(CANDIDATES / f"{candidate}.py"))
    assert result.verdict is Verdict.CORRECT, result.reason
    assert result.speedup is not None and result.speedup > 0
    assert result.timing == "cpu-interpreter"
    for s in result.sizes:
        assert s.launches and s.launches >= 1
        assert s.latency_ms and s.latency_ms > 0 and s.reference_ms and s.reference_ms > 0


@pytest.mark.parametrize("source", [HANG_IN_FORWARD, HANG_AT_IMPORT], ids=["forward", "import"])
def test_hang_is_a_timeout_and_the_next_candidate_runs(evaluators, source: str) -> None:
    import time

    ev = evaluators("softmax_small", timeout_s=3.0)
    t0 = time.monotonic()
    result = ev.evaluate(Candidate.from_source(HEADER + source, "hang"))
    elapsed = time.monotonic() - t0
    assert result.verdict is Verdict.TIMEOUT, result.reason
    assert elapsed < 3.0 + 3.0, f"a hang must end within the limit plus a few seconds, took {elapsed:.1f} s"
    after = ev.evaluate(Candidate.from_file(CANDIDATES / "softmax_good.py"))
    assert after.verdict is Verdict.CORRECT, after.reason


def test_a_candidate_that_kills_the_zygote_does_not_stop_the_next(evaluators) -> None:
    ev = evaluators("softmax_small")
    ev.static_checks = False
    try:
        src = HEADER + "\nimport os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n" + (
            "\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        return softmax(x)\n"
        )
        first = ev.evaluate(Candidate.from_source(src, "zygote_killer"))
    finally:
        ev.static_checks = True
    assert first.verdict in (Verdict.CORRECT, Verdict.CRASH), first.reason
    after = ev.evaluate(Candidate.from_file(CANDIDATES / "softmax_good.py"))
    assert after.verdict is Verdict.CORRECT, after.reason
