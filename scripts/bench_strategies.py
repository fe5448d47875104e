"""Every registered search strategy on the same problems and budget (issue: search strategies as
plug-ins). Results go to BENCHMARKS.md.

Per strategy and problem: best speedup after 25/50/75/100% of the budget and against dollars,
cells covered (``Summary.cells``: the strategy's coverage), proposals rejected before the
evaluator as duplicates ("identical to ...") or as not novel ("too close to ..."), evaluations,
model calls by tier, dollars and wall time.

Two modes:

- ``--model M [--strong-model S] [--api-base URL] [--config FILE]``: a real model. Prices come from
  the config's ``[prices."provider/model"]`` or litellm's map. With ``--device cuda`` this is the
  comparison that means something.
- Otherwise the loopback OpenAI-compatible server (``tests/llm_server.py``) replays a corpus of
  kernel variants, the same deck in the same order for every strategy: the problem's seed kernel
  (a shipped ``kernels/<op>/seed.py``), copies of it with other launch constants (rejected as not
  novel, on purpose), the seed verbatim and the parent echoed back (rejected as duplicates), correct
  alternative implementations (``tests/candidates/``, a structural mutation of the seed), and wrong
  ones (an off-by-one, numerically unstable and host-computing cheats from ``tests/cheats/``). Replies
  do not depend on the prompt except that "echo" and "retune" entries read the parent it shows. This
  shows the mechanics (tiers, costs, cells, rejections), not the quality of a strategy; on a CPU no
  speed is measured (every correct kernel ranks 1.0), so the speed columns read "n/a (CPU)".

    python scripts/bench_strategies.py                       # loopback corpus, 2 small problems, budget 8
    python scripts/bench_strategies.py --model openai/qwen2.5-coder --api-base http://localhost:8000/v1 \\
        --device cuda --problems kernels/softmax/problem.py --budget 50
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import re
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHEAP, STRONG = "openai/cheap", "openai/strong"
# Loopback prices, dollars per million tokens (a small and a large hosted model's list prices):
# the server counts 4 characters a token, so dollars follow prompt and reply lengths.
LOOPBACK_PRICES = {CHEAP: {"input_per_mtok": 0.15, "output_per_mtok": 0.60},
                   STRONG: {"input_per_mtok": 3.00, "output_per_mtok": 15.00}}
DEFAULT_PROBLEMS = ["tests/problems/softmax_small.py", "tests/problems/layernorm_small.py"]
QUARTERS = (0.25, 0.5, 0.75, 1.0)
NA_CPU = "n/a (CPU)"

MECHANICS_NOTE = (
    "Loopback corpus: a scripted server replays the same deck of kernel variants to every strategy. "
    "This shows the mechanics of each strategy (tiers, dollars, cells, novelty and duplicate "
    "rejection), not its quality: replies do not depend on the prompt beyond echoing or retuning "
    "the parent it shows.")
CPU_NOTE = ("No GPU: Triton runs in its interpreter and no speed is measured, so every correct kernel "
            "ranks 1.0 and the speed columns read \"n/a (CPU)\".")


# -- the loopback corpus -----------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "different" | "constants" | "wrong" | "duplicate"
    source: str = ""  # empty: dynamic, built from the parent shown in the prompt
    dynamic: str = ""  # "echo" (the parent verbatim) | "retune" (the parent with other launch constants)


def _read(rel: str) -> str:
    return (ROOT / rel).read_text()


def _sub(src: str, old: str, new: str) -> str:
    if old not in src:
        raise KeyError(old)
    return src.replace(old, new)


_CONST = re.compile(r"^([A-Z][A-Z0-9_]*(?:BLOCK|WARPS|STAGES|TILE|GROUP)[A-Z0-9_]*\s*=\s*)(\d+)", re.M)
_LAUNCH = re.compile(r"\b(num_warps|num_stages)=(\d+)\b")


def retune(src: str, step: int = 1) -> str | None:
    """The module with its launch constants changed the way a model 'tunes' a kernel (what the
    offline tuner does for free, and what novelty rejection refuses); None when it has none."""
    def other(m: re.Match[str]) -> str:
        n = int(m.group(2))
        new = n >> step if n >> step >= 1 else n << step
        return f"{m.group(1)}{new}" if m.re is _CONST else f"{m.group(1)}={new}"
    out = _LAUNCH.sub(other, _CONST.sub(other, src))
    return out if out != src else None


def _adapt_layernorm(src: str) -> str:
    """A kernels/layernorm-style ModelNew (own ``weight``/``bias``) with the small test problem's
    parameter names (``ln.weight``/``ln.bias``), so its state dict loads."""
    src = _sub(src, "        self.weight = nn.Parameter(torch.ones(dim))\n"
                    "        self.bias = nn.Parameter(torch.zeros(dim))\n", "        self.ln = nn.LayerNorm(dim)\n")
    return src.replace("self.weight", "self.ln.weight").replace("self.bias", "self.ln.bias")


def _softmax_corpus() -> tuple[str, list[Entry]]:
    seed = _read("kernels/softmax/seed.py")
    good = _read("tests/candidates/softmax_good.py")
    three = _sub(seed, "        m_new = tl.maximum(m, tl.max(x, axis=0))\n"
                       "        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)\n"
                       "        m = m_new\n",
                 "        m = tl.maximum(m, tl.max(x, axis=0))\n"
                 "    # Sweep 1b: the sum of exp(x - m), once the row's max is known (three sweeps, no rescaling).\n"
                 "    for start in range(0, n_cols, BLOCK):\n"
                 "        offs = start + cols\n"
                 "        x = tl.load(x_row + offs, mask=offs < n_cols, other=-float(\"inf\")).to(tl.float32)\n"
                 "        s += tl.sum(tl.exp(x - m), axis=0)\n")
    return seed, [
        Entry("softmax_good (one block per row)", "different", good),
        Entry("honest/softmax__looped_online", "different", _read("tests/candidates/honest/softmax__looped_online.py")),
        Entry("seed as three sweeps (max, sum, normalise)", "different", three),
        Entry("seed, MAX_BLOCK/NUM_WARPS halved", "constants", retune(seed) or ""),
        Entry("seed, MAX_BLOCK/NUM_WARPS quartered", "constants", retune(seed, 2) or ""),
        Entry("parent retuned (its launch constants)", "constants", dynamic="retune"),
        Entry("off-by-one mask (honest/softmax_small__tutorial_precompiled_guarded, offs < n_cols - 1)", "wrong",
              _sub(_read("tests/candidates/honest/softmax_small__tutorial_precompiled_guarded.py"),
                   "in_row = offs < n_cols", "in_row = offs < n_cols - 1")),
        Entry("cheats/c10_softmax_no_max_subtraction", "wrong",
              _read("tests/cheats/c10_softmax_no_max_subtraction.py")),
        Entry("cheats/c1_softmax_torch_decomposed", "wrong", _read("tests/cheats/c1_softmax_torch_decomposed.py")),
        Entry("parent echoed verbatim", "duplicate", dynamic="echo"),
        Entry("seed verbatim", "duplicate", seed),
    ]


def _layernorm_corpus() -> tuple[str, list[Entry]]:
    seed = _adapt_layernorm(_read("kernels/layernorm/seed.py"))
    good = _read("tests/candidates/layernorm_good.py")
    fma = _sub(_sub(seed, "        y = (x - mean) * rstd * w + b\n",
                    "        scale = w * rstd\n        y = x * scale + (b - mean * scale)\n"),
               "    acc = tl.zeros([BLOCK], dtype=tl.float32)\n    for start in range(0, n_cols, BLOCK):\n"
               "        offs = start + cols\n"
               "        acc += tl.load(x_row + offs, mask=offs < n_cols, other=0.0).to(tl.float32)\n"
               "    mean = tl.sum(acc, axis=0) / n_cols\n",
               "    total = 0.0\n    for start in range(0, n_cols, BLOCK):\n        offs = start + cols\n"
               "        total += tl.sum(tl.load(x_row + offs, mask=offs < n_cols, other=0.0).to(tl.float32), axis=0)\n"
               "    mean = total / n_cols\n")
    return seed, [
        Entry("layernorm_good (one block per row)", "different", good),
        Entry("honest/layernorm_small__attorch_autotune", "different",
              _read("tests/candidates/honest/layernorm_small__attorch_autotune.py")),
        Entry("seed with scalar per-chunk sums and an FMA normalise", "different", fma),
        Entry("seed, MAX_BLOCK/NUM_WARPS halved", "constants", retune(seed) or ""),
        Entry("seed, MAX_BLOCK/NUM_WARPS quartered", "constants", retune(seed, 2) or ""),
        Entry("parent retuned (its launch constants)", "constants", dynamic="retune"),
        Entry("off-by-one variance (honest/layernorm__eps_to_fp32, / (n_cols - 1))", "wrong",
              _sub(_adapt_layernorm(_read("tests/candidates/honest/layernorm__eps_to_fp32.py")),
                   "var = tl.sum(xc * xc, axis=0) / n_cols", "var = tl.sum(xc * xc, axis=0) / (n_cols - 1)")),
        Entry("cheats/c10_layernorm_one_pass_variance (ln.* names)", "wrong",
              _adapt_layernorm(_read("tests/cheats/c10_layernorm_one_pass_variance.py"))),
        Entry("cheats/c1_layernorm_numpy_host (ln.* names)", "wrong",
              _adapt_layernorm(_read("tests/cheats/c1_layernorm_numpy_host.py"))),
        Entry("parent echoed verbatim", "duplicate", dynamic="echo"),
        Entry("seed verbatim", "duplicate", seed),
    ]


def _generic_corpus(problem: Path) -> tuple[str, list[Entry]] | None:
    """A problem folder with a shipped seed.py: the seed's own variants and honest alternatives."""
    seed_path = problem.parent / "seed.py"
    if not seed_path.is_file():
        return None
    seed, op = seed_path.read_text(), problem.parent.name
    entries = [Entry(f"honest/{p.stem}", "different", p.read_text())
               for p in sorted((ROOT / "tests" / "candidates" / "honest").glob(f"{op}__*.py"))]
    entries += [Entry("seed, launch constants halved", "constants", retune(seed) or ""),
                Entry("parent retuned (its launch constants)", "constants", dynamic="retune"),
                Entry("seed with a syntax error", "wrong", seed.replace("def ", "def def ", 1)),
                Entry("parent echoed verbatim", "duplicate", dynamic="echo"),
                Entry("seed verbatim", "duplicate", seed)]
    return seed, entries


CORPORA = {"tests/problems/softmax_small.py": _softmax_corpus, "tests/problems/layernorm_small.py": _layernorm_corpus,
           "kernels/softmax/problem.py": _softmax_corpus}


def _rel(problem: Path) -> str:
    try:
        return str(problem.resolve().relative_to(ROOT))
    except ValueError:
        return str(problem)


def corpus_for(problem: Path) -> tuple[str, list[Entry]]:
    """(seed source, corpus entries) for a problem; entries whose base file changed are dropped."""
    build = CORPORA.get(_rel(problem))
    try:
        got = build() if build else _generic_corpus(problem)
    except (KeyError, FileNotFoundError) as e:
        raise SystemExit(f"{problem}: the loopback corpus cannot be built ({e!r} changed); use --model") from None
    if got is None:
        raise SystemExit(f"{problem}: no loopback corpus for this problem (no seed.py beside it); use --model")
    seed, entries = got
    return seed, [e for e in entries if e.source or e.dynamic]


def deck(entries: list[Entry], seed: int, problem: str) -> list[Entry]:
    """The replay order: each kind shuffled with the seed, then dealt round-robin across kinds, so
    a small budget sees every kind."""
    rng = random.Random(f"{seed}:{problem}")
    by_kind: dict[str, list[Entry]] = {}
    for e in entries:
        by_kind.setdefault(e.kind, []).append(e)
    for group in by_kind.values():
        rng.shuffle(group)
    order = [k for k in ("different", "constants", "wrong", "duplicate") if k in by_kind]
    out: list[Entry] = []
    while any(by_kind[k] for k in order):
        out += [by_kind[k].pop(0) for k in order if by_kind[k]]
    return out


_PARENT = re.compile(r"^# (?:Parent \(#\d+\)|Seed kernel)\n```python\n(.*?)\n```\n## Its evaluation", re.S | re.M)


class Replayer:
    """The loopback server's script: the deck in order, one entry per code request."""

    def __init__(self, cards: list[Entry], seed_source: str):
        self.cards, self.seed_source = cards, seed_source
        self.served: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any], index: int) -> str | dict[str, Any]:
        from tests.llm_server import fenced

        if body.get("max_tokens") == 1:  # preflight
            return "OK"
        prompt = "\n".join(m.get("content") or "" for m in body.get("messages", []) if m.get("role") == "user")
        if "Do not write code." in prompt:  # a plan request: prose for another call to implement
            return "Fuse the two sweeps over a row into one pass.\nKeep the row in registers when it fits."
        with self._lock:
            card = self.cards[len(self.served) % len(self.cards)]
            self.served.append(card.name)
        source = card.source
        if card.dynamic:
            m = _PARENT.search(prompt)
            parent = m.group(1) + "\n" if m else self.seed_source
            source = parent if card.dynamic == "echo" else (retune(parent) or retune(self.seed_source) or parent)
        return fenced(source, f"Here is the kernel ({card.kind} variant).")


# -- one run -----------------------------------------------------------------------------------

def _checkpoints(budget: int) -> list[int]:
    """Evaluation counts at 25/50/75/100% of the budget (fewer points when the budget is tiny)."""
    return sorted({max(1, math.ceil(budget * q)) for q in QUARTERS})


def measure(db: Path, budget: int) -> dict[str, Any]:
    """Curves and rejection counts read back from the run's database."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        done = con.execute("SELECT verdict, reason, speedup, evaluated, evaluation FROM candidates "
                           "WHERE status = 'done' ORDER BY evaluated, id").fetchall()
        calls = con.execute("SELECT created, cost_usd, tier FROM llm_calls ORDER BY id").fetchall()
    finally:
        con.close()
    curve = []
    for k in _checkpoints(budget):
        upto = done[:k]
        t = upto[-1][3] if upto else 0.0
        speeds = [r[2] for r in upto if r[0] == "correct" and r[2]]
        curve.append({"evaluations": len(upto), "best_speedup": max(speeds) if speeds else None,
                      "correct": sum(r[0] == "correct" for r in upto),
                      "cost_usd": round(sum(c[1] for c in calls if c[0] <= t), 6)})
    # A candidate the evaluator never ran has an evaluation without a device: a duplicate, a proposal
    # too close to a correct one, or a reply with no usable module.
    before = [r for r in done if not json.loads(r[4] or "{}").get("device")]
    reasons = [r[1] or "" for r in before if r[0] == "rejected"]
    tiers: dict[str, int] = {}
    for c in calls:
        tiers[c[2]] = tiers.get(c[2], 0) + 1
    dup = sum(r.startswith("identical to") for r in reasons)
    close = sum(r.startswith("too close to") for r in reasons)
    return {
        "curve": curve, "duplicates": dup, "not_novel": close, "unusable": len(before) - dup - close,
        "judged": len(done) - len(before),
        "rejected_by_judge": sum(r[0] == "rejected" for r in done) - len(reasons),
        "calls": tiers,
    }


def run_one(problem_path: Path, strategy: str, args: argparse.Namespace, seed_source: str | None,
            cards: list[Entry] | None) -> dict[str, Any]:
    """One strategy on one problem in a fresh temporary database: a real model, or the loopback
    server replaying ``cards``."""
    from kernelevo.problem import load_problem
    from kernelevo.run import RunError, open_run
    from kernelevo.settings import Settings
    from tests.llm_server import ScriptedServer

    base = Settings.load(args.config)
    search = {"budget": args.budget, "concurrency": args.concurrency, "seed": args.seed, "strategy": strategy}
    replayer = Replayer(cards, seed_source or "") if cards is not None else None
    print(f"-- {strategy} on {problem_path.name} ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-strategies-") as tmp, contextlib.ExitStack() as stack:
        t0 = time.monotonic()
        if replayer is not None:
            server = stack.enter_context(ScriptedServer(replayer))
            settings = base.updated({"search": search, "prices": LOOPBACK_PRICES,
                                     "llm": {"model": CHEAP, "strong_model": STRONG, "api_base": server.url}})
        else:
            llm = {"model": args.model, **({"strong_model": args.strong_model} if args.strong_model else {}),
                   **({"api_base": args.api_base} if args.api_base else {})}
            settings = base.updated({"search": search, "llm": llm})
        db = Path(tmp) / "run.db"
        try:
            with open_run(load_problem(problem_path), args.device, settings, db, seed_source, "seed") as run:
                summary = run.search()
                warnings = list(run.warnings)
        except RunError as e:
            raise SystemExit(f"{strategy} on {problem_path}: {e}") from None
        wall = time.monotonic() - t0
        got = measure(db, args.budget)
    return {
        "strategy": strategy, "problem": _rel(problem_path), "budget": args.budget,
        "evaluated": summary.evaluated, "judged": got["judged"], "verdicts": dict(sorted(summary.verdicts.items())),
        "cells": summary.cells, "duplicates": got["duplicates"], "not_novel": got["not_novel"],
        "unusable": got["unusable"], "rejected_by_judge": got["rejected_by_judge"], "calls": got["calls"],
        "best_speedup": summary.best_speedup if summary.speed_measured else None,
        "speed_measured": summary.speed_measured, "cost_usd": round(summary.cost_usd, 6),
        "curve": got["curve"], "search_s": summary.elapsed_s, "wall_s": round(wall, 2),
        "stop_reason": summary.stop_reason, "warnings": warnings, "replayed": replayer.served if replayer else None,
    }


# -- the report --------------------------------------------------------------------------------

def _speed(x: float | None, measured: bool) -> str:
    if not measured:
        return NA_CPU
    return "-" if x is None else f"{x:.3f}x"


def _per_dollar(r: dict[str, Any], measured: bool) -> str:
    if not measured:
        return NA_CPU
    return f"{r['best_speedup']:.3f}x at ${r['cost_usd']:.4f}" if r["best_speedup"] else "-"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


LEGEND = (
    "evals: candidates counted against the budget (the seed and rejections included); judged: those the evaluator "
    "ran; cells: Summary.cells, the strategy's own coverage (archive cells; islands: distinct cells over islands; "
    "pareto: the front; plan: its beam; sample: 1); dup / not novel: refused before the evaluator (\"identical to\" / "
    "\"too close to\"); unusable: replies with no module to judge; judge-rej: refused by the judge; calls: model "
    "calls by tier (preflight aside); search s: the search loop; wall s: the run with its evaluator's start (the "
    "first run also pays cold imports).")
COUNTS = ("evaluated", "judged", "cells", "duplicates", "not_novel", "unusable", "rejected_by_judge")
COUNT_HEADERS = ["evals", "judged", "cells", "dup", "not novel", "unusable", "judge-rej"]


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    ks = "/".join(str(k) for k in _checkpoints(args.budget))
    for problem in dict.fromkeys(r["problem"] for r in results):
        rows = [r for r in results if r["problem"] == problem]
        measured = all(r["speed_measured"] for r in rows)
        out.append(f"\n## {problem} (budget {args.budget}, seed {args.seed}, concurrency {args.concurrency})")
        out += _table(
            ["strategy", *COUNT_HEADERS, "correct", "calls cheap/strong", "$ total", "search s", "wall s"],
            [[r["strategy"], *(str(r[k]) for k in COUNTS), str(r["verdicts"].get("correct", 0)),
              f"{r['calls'].get('cheap', 0)}/{r['calls'].get('strong', 0)}", f"{r['cost_usd']:.4f}",
              f"{r['search_s']:.1f}", f"{r['wall_s']:.1f}"] for r in rows])
        out.append("")
        out += _table(
            ["strategy", f"best after {ks} evals", f"$ after {ks} evals", "best per $ (at 100%)",
             f"correct after {ks}"],
            [[r["strategy"],
              NA_CPU if not measured else " / ".join(_speed(c["best_speedup"], True) for c in r["curve"]),
              " / ".join(f"{c['cost_usd']:.4f}" for c in r["curve"]), _per_dollar(r, measured),
              " / ".join(str(c["correct"]) for c in r["curve"])] for r in rows])
        out.append(f"stop: {'; '.join(sorted({r['stop_reason'] for r in rows}))}")
        out += [f"warning: {w}" for w in dict.fromkeys(w for r in rows for w in r["warnings"])]
    if len({r["problem"] for r in results}) > 1:
        out.append("\n## All problems")
        totals = []
        for strategy in dict.fromkeys(r["strategy"] for r in results):
            rs = [r for r in results if r["strategy"] == strategy]
            totals.append([strategy, *(str(sum(r[k] for r in rs)) for k in COUNTS),
                           f"{sum(r['cost_usd'] for r in rs):.4f}", f"{sum(r['wall_s'] for r in rs):.1f}"])
        out += _table(["strategy", *COUNT_HEADERS, "$ total", "wall s"], totals)
    out.append(f"\n{LEGEND}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--problems", nargs="+", default=DEFAULT_PROBLEMS,
                    help="problem files (space- or comma-separated); default: %(default)s")
    ap.add_argument("--budget", type=int, default=8, help="evaluations per strategy and problem (default 8)")
    ap.add_argument("--strategies", default="", help="comma-separated (default: every registered strategy)")
    ap.add_argument("--seed", type=int, default=0, help="the search's seed and the corpus deck's shuffle (default 0)")
    ap.add_argument("--concurrency", type=int, default=1, help="proposals in flight (default 1)")
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout instead of the tables")
    ap.add_argument("--model", default="",
                    help="a real cheap-tier model (litellm name); without it: the loopback corpus")
    ap.add_argument("--strong-model", default="", help="the strong tier (default: --model)")
    ap.add_argument("--api-base", default="", help="an OpenAI-compatible server for --model")
    ap.add_argument("--config", default=None, help="a kernelevo TOML config (prices, [strategy.<name>] tables)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when one is visible")
    args = ap.parse_args()
    if args.budget < 1 or args.concurrency < 1:
        ap.error("--budget and --concurrency must be at least 1")

    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before Triton is imported
    import triton

    from kernelevo import strategies

    names = strategies.names()
    if args.strategies:
        wanted = [strategies.ALIASES.get(s.strip(), s.strip()) for s in args.strategies.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in strategies.REGISTRY]
        if unknown:
            ap.error(f"unknown strategies {', '.join(unknown)}; registered: {', '.join(names)}")
        names = list(dict.fromkeys(wanted))
    problems = [Path(p) for arg in args.problems for p in arg.split(",") if p]
    for p in problems:
        if not p.is_file():
            ap.error(f"{p}: no such problem file")

    loopback = not args.model
    head = [f"python {platform.python_version()}, torch {torch.__version__}, triton {triton.__version__}, "
            f"{os.cpu_count()} CPUs, device {args.device}",
            f"strategies: {', '.join(names)} (registry: {', '.join(strategies.names())})",
            "mode: " + ("loopback corpus (tests/llm_server.py), models openai/cheap $0.15/$0.60 and openai/strong "
                        "$3/$15 per Mtok" if loopback else f"model {args.model}"
                        + (f", strong {args.strong_model}" if args.strong_model else "")
                        + (f", api-base {args.api_base}" if args.api_base else ""))]
    notes = ([MECHANICS_NOTE] if loopback else []) + ([CPU_NOTE] if args.device == "cpu" else [])
    corpora: dict[str, Any] = {}
    results: list[dict[str, Any]] = []
    from kernelevo.strategies.novelty import similarity

    for problem in problems:
        if loopback:
            seed_source, entries = corpus_for(problem)
            cards = deck(entries, args.seed, _rel(problem))
            corpora[_rel(problem)] = [{"name": e.name, "kind": e.kind,
                                       "tokens_like_seed": None if e.dynamic else round(similarity(e.source,
                                                                                                   seed_source), 3)}
                                      for e in cards]
        else:
            seed_file = problem.parent / "seed.py"
            seed_source = seed_file.read_text() if seed_file.is_file() else None
            if seed_source is None and _rel(problem) in CORPORA:
                seed_source = corpus_for(problem)[0]
            cards = None
        for name in names:
            results.append(run_one(problem, name, args, seed_source, cards))

    if args.json:
        print(json.dumps({"versions": head[0], "mode": "loopback" if loopback else "model", "notes": notes,
                          "corpus": corpora, "results": results}, indent=1))
        return
    print("\n".join(head))
    for n in notes:
        print(f"NOTE: {n}")
    for problem, cards_info in corpora.items():
        print(f"\ncorpus for {problem}, in replay order (token similarity to the seed, constants aside; "
              "novelty rejects >= 0.98 against any correct kernel):")
        for i, c in enumerate(cards_info, 1):
            sim = "parent-dependent" if c["tokens_like_seed"] is None else f"{c['tokens_like_seed']:.3f}"
            print(f"  {i:2d}. [{c['kind']}] {c['name']} ({sim})")
    print("\n".join(report(results, args)))


if __name__ == "__main__":
    main()
