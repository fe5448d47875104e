"""Benchmark the evaluator's own cost on a CPU-only machine (Triton interpreter).

1. Overhead per candidate: the wall time of ``Evaluator.evaluate`` for a trivial kernel on a
   tiny 3-size problem, minus the time the same forward calls (every checked draw, stress draw,
   the extra size and every timed call, from the same seed) take when run directly in this
   process (what the interpreter spends on the kernel). Target: under 1 s.
2. A check of each shipped problem (3 CPU sizes) with its seed kernel, end to end through the
   command line (``kernelevo check``, process start included) and through ``evaluate`` alone.
   Target: under 10 s.

Usage: python scripts/bench_evaluator.py [--repeats 5] [--ops softmax matmul ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from kernelevo.candidate import Candidate  # noqa: E402
from kernelevo.evaluate.evaluator import Evaluator  # noqa: E402
from kernelevo.problem import load_problem  # noqa: E402
from kernelevo.settings import EvalSettings  # noqa: E402

TINY_PROBLEM = """
import torch
import torch.nn as nn

n = 64


class Model(nn.Module):
    def forward(self, x):
        return torch.relu(x)


def get_inputs():
    return [torch.randn(n)]


def get_init_inputs():
    return []


SIZES = [{"n": 7}, {"n": 64}, {"n": 100}]
"""

TRIVIAL_KERNEL = """
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _relu_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(y_ptr + offs, tl.maximum(tl.load(x_ptr + offs, mask=mask), 0.0), mask=mask)


class ModelNew(nn.Module):
    def forward(self, x):
        y = torch.empty_like(x)
        _relu_kernel[(triton.cdiv(x.numel(), 128),)](x, y, x.numel(), BLOCK=128)
        return y
"""


def _kernel_time_in_process(src_path: Path, ev: Evaluator, seed: int) -> float:
    """Seconds the interpreter spends on the forward calls one evaluation with ``seed`` makes:
    every planned call (declared sizes and the extra one) and every timed call."""
    import importlib.util

    from kernelevo.evaluate.plan import make_plan

    spec = importlib.util.spec_from_file_location("bench_candidate", src_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    s = ev.settings
    plan = make_plan(ev.reference, seed, s.torch_compute_share, s.extra_size_bytes, s.extra_size)
    total = 0.0
    for sp in plan.sizes:
        model = mod.ModelNew(*sp.init_inputs)
        model.load_state_dict(sp.state_a)
        calls = [c.inputs for c in sp.calls]
        if not sp.extra:
            calls += [sp.draw(i) for i in range(s.cpu_warmup + s.cpu_reps)]
        model(*calls[0])  # first call rewrites the kernel's AST; the worker pays that too
        t0 = time.perf_counter()
        for inputs in calls:
            model(*inputs)
        total += time.perf_counter() - t0
    return total


def bench_overhead(repeats: int) -> None:
    settings = EvalSettings(seed=12345)  # one plan for every repeat, so the kernel's share is known
    with tempfile.TemporaryDirectory() as tmp:
        prob_path, cand_path = Path(tmp) / "problem.py", Path(tmp) / "cand.py"
        prob_path.write_text(TINY_PROBLEM)
        cand_path.write_text(TRIVIAL_KERNEL)
        t0 = time.perf_counter()
        problem = load_problem(prob_path)
        ev = Evaluator(problem, "cpu", settings)  # starts the zygote, then builds the reference
        t_ref = time.perf_counter() - t0
        ev._zygote_ready().wait_ready()
        t_zygote = time.perf_counter() - t0
        cand = Candidate.from_file(cand_path)
        ev.evaluate(cand)  # the first evaluation also starts the reference's worker: once per evaluator
        walls = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = ev.evaluate(cand)
            walls.append(time.perf_counter() - t0)
            assert result.ok, result.reason
        kernel = _kernel_time_in_process(cand_path, ev, settings.seed)
        ev.close()
    wall = statistics.median(walls)
    print("## Evaluator overhead per candidate (trivial kernel, 3 tiny sizes)")
    print(f"- Evaluator() (reference built; zygote importing meanwhile): {t_ref * 1000:.0f} ms")
    print(f"- until the zygote is warm too (once per evaluator): {t_zygote * 1000:.0f} ms")
    print(f"- evaluate() wall, median of {repeats}: {wall * 1000:.0f} ms "
          f"(min {min(walls) * 1000:.0f}, max {max(walls) * 1000:.0f})")
    print(f"- of which the interpreter running the kernel (every checked and timed call): {kernel * 1000:.0f} ms")
    print(f"- overhead per candidate: {(wall - kernel) * 1000:.0f} ms")


def bench_shipped(ops: list[str], repeats: int) -> None:
    print("\n## Check of each shipped problem with its seed kernel (CPU sizes)")
    print("| op | sizes | evaluate() median s | `kernelevo check` wall s | verdict |")
    print("|---|---|---|---|---|")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for op in ops:
        problem_path, seed_path = ROOT / "kernels" / op / "problem.py", ROOT / "kernels" / op / "seed.py"
        problem = load_problem(problem_path)
        with Evaluator(problem, "cpu") as ev:
            ev._zygote_ready().wait_ready()
            cand = Candidate.from_file(seed_path)
            walls, verdict = [], ""
            for _ in range(repeats):
                t0 = time.perf_counter()
                verdict = ev.evaluate(cand).verdict.value
                walls.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kernelevo", "check", str(problem_path), str(seed_path), "--json"],
                       check=True, capture_output=True, env=env)
        cli = time.perf_counter() - t0
        print(f"| {op} | {len(problem.sizes)} | {statistics.median(walls):.2f} | {cli:.2f} | {verdict} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ops", nargs="*", default=None, help="shipped ops (default: all in kernels/)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"torch {torch.__version__}, triton {__import__('triton').__version__}, "
          f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    bench_overhead(args.repeats)
    ops = args.ops or sorted(p.parent.name for p in (ROOT / "kernels").glob("*/problem.py"))
    bench_shipped(ops, max(1, args.repeats // 2))


if __name__ == "__main__":
    main()
