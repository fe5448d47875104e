"""Every judge-breaking candidate must fail for the right reason; honest kernels must pass.

Our own cases per class are in tests/adversarial.py; tests/cheats holds more, written as a
red team would write them (each file's docstring says its class and problem)."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path

import pytest

from kernelevo.candidate import Candidate
from kernelevo.evaluate.verdict import Verdict
from tests.adversarial import HACKS, HANG_AT_IMPORT, HANG_IN_FORWARD, HEADER, Hack
from tests.conftest import CANDIDATES, ROOT

CHEATS = sorted((ROOT / "tests" / "cheats").glob("c*.py"))
HONEST = sorted((CANDIDATES / "honest").glob("*.py"))
_PROBLEM = re.compile(r"((?:kernels/\w+/problem|tests/(?:cheats/)?problems/\w+)\.py)")


def _problem_of(path: Path) -> Path:
    m = _PROBLEM.search(path.read_text())
    assert m, f"{path.name} names no problem file in its docstring"
    return ROOT / m.group(1)


@pytest.mark.parametrize("hack", HACKS, ids=lambda h: f"c{h.cls}-{h.name}")
def test_hack_fails_for_the_right_reason(evaluators, hack: Hack) -> None:
    result = evaluators(hack.problem).evaluate(Candidate.from_source(hack.source, hack.name))
    assert result.verdict.value == hack.verdict, result.reason
    assert hack.reason in result.reason, result.reason


# The red team's class-6 cheats look for job files to read at import; there are none to find, so
# they fall back to their honest kernel (correct, with honest timings).
_NOTHING_TO_READ = {"c6_softmax_prefetch_job_tensors.py", "c6_matmul_prefetch_shm_pairs.py"}


@pytest.mark.parametrize("path", CHEATS, ids=lambda p: p.stem)
def test_red_team_cheat_fails(file_evaluators, path: Path) -> None:
    ev = file_evaluators(_problem_of(path))
    result = ev.evaluate(Candidate.from_file(path))
    if path.name in _NOTHING_TO_READ:
        assert result.verdict is Verdict.CORRECT, result.reason
        return
    # A switch above the largest declared size shows only when the extra size lands past it: with
    # the width drawn uniformly up to twice the largest, some seed among a few does (seeds are
    # part of the verdict, so this is deterministic).
    seeds = iter(range(1, 9)) if path.name.startswith("c2_") else iter(())
    while result.verdict is Verdict.CORRECT and (seed := next(seeds, None)) is not None:
        ev.settings = replace(ev.settings, seed=seed)
        try:
            result = ev.evaluate(Candidate.from_file(path))
        finally:
            ev.settings = replace(ev.settings, seed=-1)
    assert result.verdict in (Verdict.INCORRECT, Verdict.REJECTED), (result.verdict, result.reason)
    assert result.reason


@pytest.mark.parametrize("path", HONEST, ids=lambda p: p.stem)
def test_honest_third_party_style_kernel_passes(file_evaluators, path: Path) -> None:
    result = file_evaluators(_problem_of(path)).evaluate(Candidate.from_file(path))
    assert result.verdict is Verdict.CORRECT, result.reason
    assert not result.hybrid and result.torch_share is not None and result.torch_share <= 0.25


@pytest.mark.parametrize(
    "problem,candidate",
    [
        ("softmax_small", "softmax_good"),
        ("layernorm_small", "layernorm_good"),
        ("tiny_output", "scale_good"),
        ("mean_small", "mean_good"),
        ("matmul_small", "matmul_good"),
        ("batchnorm_train", "batchnorm_good"),
    ],
)
def test_real_kernels_pass(evaluators, problem: str, candidate: str) -> None:
    result = evaluators(problem).evaluate(Candidate.from_file(CANDIDATES / f"{candidate}.py"))
    assert result.verdict is Verdict.CORRECT, result.reason
    assert result.speedup is None and all(s.latency_ms and s.latency_ms > 0 for s in result.sizes)  # timed, not ranked
    assert result.timing == "cpu-interpreter"
    for s in result.sizes:
        assert s.launches and s.launches >= 1
        assert s.latency_ms and s.latency_ms > 0 and s.reference_ms and s.reference_ms > 0


@pytest.mark.parametrize("source", [HANG_IN_FORWARD, HANG_AT_IMPORT], ids=["forward", "import"])
def test_hang_is_a_timeout_and_the_next_candidate_runs(evaluators, source: str) -> None:
    ev = evaluators("softmax_small", timeout_s=3.0)
    t0 = time.monotonic()
    result = ev.evaluate(Candidate.from_source(source, "hang"))
    elapsed = time.monotonic() - t0
    assert result.verdict is Verdict.TIMEOUT, result.reason
    assert elapsed < 3.0 + 3.0, f"a hang must end within the limit plus a few seconds, took {elapsed:.1f} s"
    after = ev.evaluate(Candidate.from_file(CANDIDATES / "softmax_good.py"))
    assert after.verdict is Verdict.CORRECT, after.reason


def test_a_candidate_that_kills_the_zygote_does_not_stop_the_next(evaluators) -> None:
    ev = evaluators("softmax_small")
    src = HEADER + "\nimport os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n" + (
        "\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        return softmax(x)\n"
    )
    first = ev.evaluate(Candidate.from_source(src, "zygote_killer"))
    assert first.verdict is Verdict.RUNTIME_ERROR or first.verdict is Verdict.REJECTED, first.reason
    after = ev.evaluate(Candidate.from_file(CANDIDATES / "softmax_good.py"))
    assert after.verdict is Verdict.CORRECT, after.reason
