"""Evaluations per minute with 1 and 2 local workers, and through a 2-worker local Ray cluster
(issue: scale and sight). Results go to BENCHMARKS.md.

A scripted model on loopback (``tests/llm_server.py``) answers every call after ``--delay``
seconds (1 s: a fast hosted model) with a correct softmax kernel that differs from the others
in a comment, so every reply is judged and the evaluator is the bottleneck. The rate is taken
between the ``--skip``-th evaluation and the last (the ``evaluated`` times in the run database),
so worker start-up and the reference build are not counted; each configuration runs
``--repeats`` times, in interleaved order, and the median is reported.

On a CPU each evaluation runs Triton's interpreter, a CPU-bound Python loop, so two workers on a
2-core machine compete with each other, the controller and the scripted server for the cores:
the gain measures the executor's overlap, not a GPU's throughput.

    python scripts/bench_executors.py                    # budget 24, 1 s replies, 2 repeats
    python scripts/bench_executors.py --configs local-1,local-2 --budget 40
    python scripts/bench_executors.py --device cuda     # on a GPU: busy fraction, candidates per GPU-minute

On a GPU the variants differ inside the kernel's body, so Triton compiles each one afresh: the
``gpu`` and ``gpu-no-ahead`` rows show what compiling ahead on the CPU buys.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = {
    "local-1": {"executor": "local", "workers": 1},
    "local-2": {"executor": "local", "workers": 2},
    "ray-2": {"executor": "ray", "workers": 2},
    # --device cuda: every visible GPU, with and without compiling ahead on the CPU
    "gpu": {"executor": "local", "workers": 0, "compile_ahead": True},
    "gpu-no-ahead": {"executor": "local", "workers": 0, "compile_ahead": False},
}


def rate(db: Path, skip: int) -> tuple[float, int]:
    """Evaluations per minute between the ``skip``-th judged candidate and the last."""
    with sqlite3.connect(db) as con:
        times = sorted(t for (t,) in con.execute("SELECT evaluated FROM candidates WHERE status='done'"))
    times = times[skip:]
    if len(times) < 2:
        return 0.0, len(times)
    return 60.0 * (len(times) - 1) / (times[-1] - times[0]), len(times)


def one(config: str, problem: Path, seed: str, url: str, budget: int, out: Path, device: str) -> dict[str, Any]:
    from kernelevo.problem import load_problem
    from kernelevo.run import open_run
    from kernelevo.settings import Settings

    s = Settings().updated({
        "llm": {"model": "openai/cheap", "api_base": url, "backoff_s": 0.05},
        "search": {"budget": budget, "concurrency": 4, "novelty": 0.0, "strategy": "sample"},
        "eval": {"timeout_s": 120.0},
        "execute": CONFIGS[config],
    })
    db = out / f"{config}-{time.monotonic_ns()}.db"
    t0 = time.monotonic()
    with open_run(load_problem(problem, device=device), device, s, db, seed, "seed.py") as run:
        summary = run.search()
    return {"db": db, "wall": time.monotonic() - t0, "idle": summary.evaluator_idle, "n": summary.evaluated,
            "workers": summary.workers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problem", default="kernels/softmax/problem.py")
    ap.add_argument("--budget", type=int, default=24)
    ap.add_argument("--delay", type=float, default=1.0, help="seconds the scripted model takes per reply")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip", type=int, default=3, help="evaluations left out of the rate (start-up)")
    ap.add_argument("--configs", default=None, help="default: local-1,local-2,ray-2 (cpu) or gpu,gpu-no-ahead")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = ap.parse_args()
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    args.configs = args.configs or ("local-1,local-2,ray-2" if args.device == "cpu" else "gpu,gpu-no-ahead")
    from tests.llm_server import ScriptedServer, fenced
    from tests.test_search import GOOD, variant

    configs = [c for c in args.configs.split(",") if c]
    if "ray-2" in configs:
        import ray

        ray.init(num_cpus=2, object_store_memory=200 << 20, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    counter = iter(range(1 << 30))

    def script(body: dict[str, Any], i: int) -> str:
        return "OK" if body.get("max_tokens") == 1 else fenced(variant(next(counter)))

    results: dict[str, list[float]] = {c: [] for c in configs}
    idle: dict[str, list[float]] = {c: [] for c in configs}
    gpus: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp, ScriptedServer(script, delay_s=args.delay) as srv:
        for r in range(args.repeats):
            for c in configs if r % 2 == 0 else reversed(configs):
                res = one(c, ROOT / args.problem, GOOD, srv.url, args.budget, Path(tmp), args.device)
                per_min, n = rate(res["db"], args.skip)
                results[c].append(per_min)
                idle[c].append(res["idle"])
                gpus[c] = res["workers"]
                print(f"{c:8s} repeat {r}: {per_min:6.1f} evaluations/min over {n} evaluations, "
                      f"workers {1 - res['idle']:.0%} busy, wall {res['wall']:.1f} s", flush=True)
    import torch
    import triton

    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, torch {torch.__version__}, triton {triton.__version__}"
          + (f", ray {sys.modules['ray'].__version__}" if "ray" in sys.modules else ""))
    print(f"command: python scripts/bench_executors.py {' '.join(sys.argv[1:])}")
    base = statistics.median(results[configs[0]]) if results[configs[0]] else 0.0
    per = "per GPU-minute" if args.device == "cuda" else "per worker-minute"
    print(f"\n| configuration | workers | evaluations/min (median) | runs | {per} | vs {configs[0]} | workers busy |")
    print("|---|---|---|---|---|---|---|")
    for c in configs:
        m = statistics.median(results[c])
        print(f"| {c} | {gpus[c]} | {m:.1f} | {', '.join(f'{x:.1f}' for x in results[c])} | {m / gpus[c]:.1f} | "
              f"{m / base - 1:+.0%} | {1 - statistics.median(idle[c]):.0%} |")


if __name__ == "__main__":
    main()
