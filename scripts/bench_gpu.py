"""GPU benchmarks (issue: GPU truth). Needs a CUDA GPU; results go to BENCHMARKS.md.

1. Timing stability: each shipped seed evaluated 10 times; per size, the spread of the 10
   medians ((max - min) / median), for sizes of 50 µs or more (target < 1%).
2. Agreement on the largest size of each shipped op (target within 5%): our event-time median
   against our own summed kernel time (the profiler, every stream), Nsight Compute's
   gpu__time_duration summed over one call's launches (clocks not locked), and
   ``triton.testing.do_bench`` of the same forward.
3. Seeds against torch eager and torch.compile, and each one's fraction of the calibrated
   bandwidth or FLOP/s.
4. Evaluator throughput: Triton candidates fully evaluated (compile, check, time) per GPU-minute,
   from an offline-tuner run on a shipped op (target >= 60).

    python scripts/bench_gpu.py [--ops softmax layernorm ...] [--repeats 10] [--budget 60]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import triton  # noqa: E402

from kernelevo.candidate import Candidate  # noqa: E402
from kernelevo.evaluate.evaluator import Evaluator  # noqa: E402
from kernelevo.evaluate.verdict import Evaluation  # noqa: E402
from kernelevo.problem import Problem, load_problem  # noqa: E402
from kernelevo.profile.finalist import profile_finalist  # noqa: E402
from kernelevo.profile.gpu import gpu_fingerprint, software_fingerprint  # noqa: E402
from kernelevo.run import open_run  # noqa: E402
from kernelevo.settings import EvalSettings, Settings  # noqa: E402

KERNELS = ROOT / "kernels"


def seed_runs(op: str, times: int = 1, settings: EvalSettings | None = None) -> tuple[Problem, list[Evaluation]]:
    """The shipped seed of ``op`` evaluated ``times`` times by one evaluator."""
    problem = load_problem(KERNELS / op / "problem.py", device="cuda")
    with Evaluator(problem, "cuda", settings) as ev:
        return problem, [ev.evaluate(Candidate.from_file(KERNELS / op / "seed.py")) for _ in range(times)]


def stability(ops: list[str], repeats: int) -> None:
    print(f"\n## 1. Timing stability: each seed evaluated {repeats} times (sizes >= 50 µs)")
    print("| op | size | median of medians ms | spread of medians | within 1% |")
    print("|---|---|---|---|---|")
    for op in ops:
        problem, runs = seed_runs(op, repeats)
        if any(not r.ok for r in runs):
            print(f"| {op} | - | - | - | {runs[0].verdict.value}: {runs[0].reason} |")
            continue
        for i, size in enumerate(problem.sizes):
            meds = [r.sizes[i].latency_ms for r in runs]
            m = statistics.median(meds)
            if m < 0.05:
                continue
            spread = (max(meds) - min(meds)) / m
            print(f"| {op} | {problem.label(size)} | {m:.4f} | {spread:.2%} | {'yes' if spread < 0.01 else 'NO'} |")


def do_bench_ms(problem: Problem, size: dict, op: str) -> float:
    """``triton.testing.do_bench`` of the seed's forward on one draw (it flushes L2 between calls too)."""
    import importlib.util

    module = problem.namespace(size)
    spec = importlib.util.spec_from_file_location(f"seed_{op}", KERNELS / op / "seed.py")
    seed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed)
    torch.manual_seed(0)
    ref = module.Model(*module.get_init_inputs()).cuda()
    model = seed.ModelNew(*module.get_init_inputs()).cuda()
    model.load_state_dict(ref.state_dict())
    inputs = [x.cuda() if isinstance(x, torch.Tensor) else x for x in module.get_inputs()]
    with torch.no_grad():
        return float(triton.testing.do_bench(lambda: model(*inputs), warmup=100, rep=500))


def agreement(ops: list[str]) -> None:
    print("\n## 2. Agreement on the largest size: our event median vs our summed kernel time, Nsight Compute "
          "(sum over one call's launches, clocks not locked) and triton.testing.do_bench")
    print("| op | size | ours ms | kernels ms | ncu ms | do_bench ms | vs kernels | vs ncu | vs do_bench |")
    print("|---|---|---|---|---|---|---|---|---|")

    def rel(a: float, b: float | None) -> str:
        return f"{(a - b) / b:+.1%}" if b else "-"

    for op in ops:
        problem, (r,) = seed_runs(op)
        source = (KERNELS / op / "seed.py").read_text()
        size = problem.sizes[-1] if problem.sizes else {}
        if not r.ok:
            print(f"| {op} | {problem.label(size)} | {r.verdict.value}: {r.reason} |")
            continue
        ours, kern = r.sizes[-1].latency_ms, r.sizes[-1].kernel_ms
        ncu = profile_finalist(problem, size, source, clock_control="none")
        total = None if isinstance(ncu, str) else sum(n.duration_ns or 0 for n in ncu) / 1e6
        bench = do_bench_ms(problem, size, op)
        print(f"| {op} | {problem.label(size)} | {ours:.4f} | {kern if kern is None else f'{kern:.4f}'} | "
              f"{ncu if total is None else f'{total:.4f}'} | {bench:.4f} | {rel(ours, kern)} | {rel(ours, total)} | "
              f"{rel(ours, bench)} |")


def versus_baselines(ops: list[str]) -> None:
    print("\n## 3. Seeds vs torch eager and torch.compile, with roofline fraction per size")
    print("| op | size | seed ms | eager ms | compile ms | vs eager | vs compile | roofline | GB/s | TFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for op in ops:
        problem, (r,) = seed_runs(op, settings=EvalSettings(compile_baseline=True, timeout_s=600))
        if not r.ok:
            print(f"| {op} | - | {r.verdict.value}: {r.reason} |")
            continue
        for s in r.sizes:
            comp = f"{s.compiled_ms:.4f}" if s.compiled_ms else "-"
            vs_c = f"{s.compiled_speedup:.2f}x" if s.compiled_speedup else "-"
            print(f"| {op} | {problem.label(s.size)} | {s.latency_ms:.4f} | {s.reference_ms:.4f} | {comp} | "
                  f"{s.speedup:.2f}x ±{s.speedup_spread:.0%} | {vs_c} | "
                  f"{'-' if s.roofline is None else f'{s.roofline:.0%}'} | {s.gbps} | {s.tflops} |")
        print(f"| {op} | geomean | | | | {r.speedup:.2f}x | "
              f"{'-' if r.speedup_compiled is None else f'{r.speedup_compiled:.2f}x'} | | | |")


def throughput(op: str, budget: int) -> None:
    print(f"\n## 4. Evaluator throughput: offline tuner on {op}, budget {budget}")
    problem = load_problem(KERNELS / op / "problem.py", device="cuda")
    seed = (KERNELS / op / "seed.py").read_text()
    s = Settings().updated({"search": {"budget": budget}})
    with tempfile.TemporaryDirectory() as tmp, open_run(problem, "cuda", s, Path(tmp) / "run.db", seed, op) as run:
        t0 = time.monotonic()
        summary = run.search()
        wall = time.monotonic() - t0
    print(f"- {summary.evaluated} candidates in {wall:.1f} s: {summary.evaluated / wall * 60:.0f} per GPU-minute "
          f"(verdicts {json.dumps(summary.verdicts)}, best {summary.best_speedup})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", nargs="*", default=sorted(p.parent.name for p in KERNELS.glob("*/problem.py")))
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--budget", type=int, default=60)
    ap.add_argument("--only", nargs="*", choices=["stability", "agreement", "baselines", "throughput"])
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA GPU")
    gpu, sw = gpu_fingerprint(), software_fingerprint()
    print(f"{gpu.name} ({gpu.key}), driver {sw.driver}, CUDA {sw.cuda}, torch {torch.__version__}, "
          f"triton {triton.__version__}, python {platform.python_version()}")
    only = set(args.only or ["stability", "agreement", "baselines", "throughput"])
    if "stability" in only:
        stability(args.ops, args.repeats)
    if "agreement" in only:
        agreement(args.ops)
    if "baselines" in only:
        versus_baselines(args.ops)
    if "throughput" in only:
        throughput("softmax", args.budget)


if __name__ == "__main__":
    main()
