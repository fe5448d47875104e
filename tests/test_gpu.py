"""GPU checks (skipped without CUDA): the shipped seeds pass and are timed with device events."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernelevo.candidate import Candidate
from kernelevo.evaluate.evaluator import Evaluator
from kernelevo.evaluate.verdict import Verdict
from kernelevo.problem import load_problem
from tests.adversarial import HEADER

KERNELS = Path(__file__).parents[1] / "kernels"
OPS = sorted(p.parent.name for p in KERNELS.glob("*/problem.py"))


@pytest.mark.gpu
@pytest.mark.parametrize("op", OPS)
def test_shipped_seed_is_correct_on_gpu(op: str) -> None:
    problem = load_problem(KERNELS / op / "problem.py", device="cuda")
    with Evaluator(problem, "cuda") as ev:
        result = ev.evaluate(Candidate.from_file(KERNELS / op / "seed.py"))
    assert result.verdict is Verdict.CORRECT, result.reason
    assert result.timing == "cuda-events" and result.speedup and result.speedup > 0


@pytest.mark.gpu
def test_side_stream_work_is_timed_and_checked() -> None:
    src = HEADER + (
        "\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n"
        "        s = torch.cuda.Stream()\n"
        "        with torch.cuda.stream(s):\n"
        "            return softmax(x)\n"
    )
    problem = load_problem(Path(__file__).parent / "problems" / "softmax_small.py", device="cuda")
    with Evaluator(problem, "cuda") as ev:
        result = ev.evaluate(Candidate.from_source(src, "side_stream"))
    assert result.verdict is Verdict.CORRECT, result.reason
    assert all(s.latency_ms and s.latency_ms > 0.001 for s in result.sizes)
