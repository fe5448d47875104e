"""Benchmarks of the search controller (issue: the search). Results go to BENCHMARKS.md.

1. Controller overhead per proposal: the controller thread's own time (planning, prompts,
   database writes, archive updates) per proposal, with a real evaluator and a loopback model.
2. Prompt size in tokens per proposal on KernelBench level-1 problems (parent + two inspirations
   + two failures), counted with litellm's tokenizer for the given model.
3. Evaluator idle fraction: a scripted model that answers in 1 s, the real evaluator, N calls in flight.

    python scripts/bench_search.py --kernelbench /path/to/KernelBench --budget 40
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TRITON_INTERPRET", "1")

from kernelevo.evaluate.verdict import Evaluation, SizeResult, Verdict  # noqa: E402
from kernelevo.problem import load_problem  # noqa: E402
from kernelevo.propose.llm import LLMClient  # noqa: E402
from kernelevo.propose.prompt import Shown, build_messages  # noqa: E402
from kernelevo.run import open_run  # noqa: E402
from kernelevo.settings import LLMSettings, Settings  # noqa: E402
from tests.llm_server import ScriptedServer, fenced  # noqa: E402

GOOD = (ROOT / "tests" / "candidates" / "softmax_good.py").read_text()


def variant(k: int) -> str:
    return GOOD.replace("row = tl.program_id(0)", f"row = tl.program_id(0)  # variant {k}")


def loop_run(budget: int, delay_s: float, concurrency: int) -> object:
    def script(body: dict, i: int) -> str | dict:
        if body.get("max_tokens") == 1:
            return "OK"
        return {"content": fenced(variant(i)), "delay": delay_s}

    with ScriptedServer(script) as srv, tempfile.TemporaryDirectory() as tmp:
        s = Settings().updated({
            "llm": {"model": "openai/cheap", "strong_model": "openai/strong", "api_base": srv.url},
            "search": {"budget": budget, "concurrency": concurrency, "novelty": 0.0},  # comment-only variants
        })
        prob = load_problem(ROOT / "tests" / "problems" / "softmax_small.py")
        with open_run(prob, "cpu", s, Path(tmp) / "run.db", None, "") as run:
            return run.search()


def prompt_tokens(kernelbench: Path, model: str, limit: int) -> list[tuple[str, int]]:
    """Tokens of an 'improve' prompt for level-1 problems, with a long parent (the shipped matmul
    seed, ~100 lines), two inspirations and two failures with error excerpts."""
    llm = LLMClient(LLMSettings())
    parent_src = (ROOT / "kernels" / "matmul" / "seed.py").read_text()
    sizes = tuple(SizeResult({"N": n}, 1e-6, 1e-5, 0.5 * i + 0.1, 0.01, 0.4, 1)
                  for i, n in enumerate((512, 1024, 4096)))
    ok = Evaluation("p", Verdict.CORRECT, "", "cuda", "cuda-events", sizes, 1.2)
    err = "Traceback (most recent call last):\n"
    err += "\n".join(f'  File "candidate.py", line {i}, in f' for i in range(30))
    bad = Evaluation("f", Verdict.RUNTIME_ERROR, "size N=512, draw 0: IndexError: out of range", "cuda", error=err)
    insp = [Shown(i, (ROOT / "kernels" / op / "seed.py").read_text(), ok, "triton|k1|loop1|dot") for i, op in
            ((3, "matmul_bias_gelu"), (4, "layernorm"))]
    fails = [Shown(5, "", bad), Shown(6, "", bad)]
    out = []
    for path in sorted((kernelbench / "KernelBench" / "level1").glob("*.py"))[:limit]:
        msgs = build_messages("improve", path.read_text(), "cpu", Shown(2, parent_src, ok), insp, fails)
        out.append((path.name, llm.count_tokens(model, msgs)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernelbench", type=Path, help="a KernelBench checkout (for prompt sizes)")
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--model", default="gpt-4o", help="tokenizer for prompt sizes")
    args = ap.parse_args()
    import torch
    import triton

    print(f"python {platform.python_version()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"{os.cpu_count()} CPUs")

    print("\n## Controller overhead and evaluator idle time (softmax_small, real evaluator, loopback model)")
    for delay in (0.0, 1.0):
        s = loop_run(args.budget, delay, args.concurrency)
        print(f"- model answers in {delay:g} s, {args.concurrency} in flight, budget {args.budget}: "
              f"wall {s.elapsed_s:.1f} s, {s.proposals} proposals, controller {s.controller_ms:.2f} ms/proposal, "
              f"evaluator idle {s.evaluator_idle:.1%} ({s.stop_reason})")

    if args.kernelbench:
        rows = prompt_tokens(args.kernelbench, args.model, 100)
        toks = [t for _, t in rows]
        print(f"\n## Prompt tokens per 'improve' proposal, KernelBench level 1 ({len(rows)} problems, {args.model} "
              "tokenizer, parent = shipped matmul seed, 2 inspirations, 2 failures)")
        print(f"- median {statistics.median(toks):.0f}, max {max(toks)} ({rows[toks.index(max(toks))][0]}), "
              f"min {min(toks)}")


if __name__ == "__main__":
    main()
