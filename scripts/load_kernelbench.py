"""Load every KernelBench problem with kernelevo's loader and build its reference at reduced sizes on the CPU.

For each problem file of the chosen levels this computes shrink overrides, then runs
``load_problem(path, overrides)`` and ``build_reference(problem)`` in a forked child process
(``torch.set_num_threads(2)``, an address-space limit, a wall-clock limit), and prints one line:
``ok``/``FAIL``, the file, the seconds, the size rung used and the overrides (or the reason).
A summary per level follows; ``--json`` writes every record, failed attempts included.

Self-check (on by default, ``--no-self-check`` skips it): the reference model is then judged as
if it were a candidate, the way the evaluator's worker runs one (constructed under another RNG
state, weights loaded from the case's ``state_dict``, draws in order on copies of their inputs,
buffers compared, the timing draw called 4 times on a fresh model). A perfect candidate fails
wherever the reference does, so an issue there means the problem cannot be solved as loaded:
forwards that draw random numbers (Dropout in training mode, ``torch.randn`` in ``forward``),
state kept outside parameters and buffers, inputs updated in place (checked on a fresh draw).
It also flags problems whose expected output is the same for every draw (a constant passes).
Such lines are printed under the ``ok`` line as ``self-check: ...``; the file still counts as loaded.

Shrinking heuristic (from the file's ``ast``; nothing of the file is run to compute it):

1. Candidates are the top-level assigned globals whose value is a constant expression (literals
   and operators only, e.g. ``2048 * 2`` or ``[1024] * 16``) giving an int or a list/tuple of ints;
   ``a = b = 8`` and ``d, h, w = (16, 32, 32)`` count too (the last assignment of a name wins).
   Globals computed from other globals (``bias_shape = (out_channels, 1, 1)``) are not
   overridden: the loader re-runs the module with the overrides, so they follow.
2. Batch-like names (``batch_size``, ``batch``, ``bs``, ``b``, ``B``) become ``min(value, 2)``.
   If that fails and another global holds the batch's value, the rung is retried with the batch
   shrunk like that one (rule 3): files may rely on the equality (HingeLoss broadcasts
   ``(batch, 32768) * (batch,)``), though mostly it is chance (``batch_size = in_channels = 64``).
3. Every other int above the rung's cap is halved until it is at most the cap, rounding, and
   kept odd if it was odd (cap 64: 8192 -> 64, 224 -> 56, 4095 -> 63, 393216 -> 48). The map depends
   on the value only, so globals equal before stay equal. Ints at or below the cap (kernel
   sizes, strides, paddings, dilations, small channel counts, layer counts) are left alone;
   list/tuple elements are shrunk the same way.
4. Divisibility: "divisor" globals (names with group, head, patch, window, block_len, chunk)
   are shrunk first; a shrunk global that the divisor's old value divided is rounded up to a
   multiple of the divisor's new value (never above its old value): with cap 64, ViT's
   ``image_size=224`` with ``patch_size=16`` becomes 64, not 56.
5. Rungs: cap 32 ("tiny"), cap 64 ("small"), cap 256 ("medium", keeps 224x224 images for
   models with a hard-coded ``Linear(512*7*7, ...)``), then the batch only ("batch"); each
   rung may be followed by its "+tied" variant (rule 2). A rung is tried only if the previous
   one failed with an error that a size may cure (not a timeout, not a missing module); every
   failure is kept in the JSON and printed under a FAIL line (and with ``-v`` under ok lines).

Usage: python scripts/load_kernelbench.py /tmp/KernelBench [--levels 1 2 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import multiprocessing as mp
import re
import resource
import sys
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from kernelevo.evaluate.compare import Tolerance, compare_outputs, compare_tensor  # noqa: E402
from kernelevo.problem import Problem, ProblemError, flatten_outputs, load_problem  # noqa: E402
from kernelevo.reference import Reference, build_reference, digest  # noqa: E402

BATCH_NAMES = re.compile(r"^(batch(_size)?|bs|b|B)$")
DIVISOR_NAMES = re.compile(r"group|head|patch|window|block_len|chunk", re.IGNORECASE)
RUNGS: tuple[tuple[str, int | None], ...] = (("tiny", 32), ("small", 64), ("medium", 256), ("batch", None))
CONST_NODES = (
    ast.Expression, ast.Constant, ast.BinOp, ast.UnaryOp, ast.Tuple, ast.List, ast.Load,
    ast.operator, ast.unaryop,
)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _const(node: ast.expr) -> Any:
    """The value of a literal/operator-only expression, or None."""
    expr = ast.Expression(node)
    if not all(isinstance(n, CONST_NODES) for n in ast.walk(expr)):
        return None
    try:
        return eval(compile(expr, "<const>", "eval"), {"__builtins__": {}})  # literals and operators only
    except Exception:
        return None


def int_globals(source: str) -> dict[str, Any]:
    """Top-level globals whose (last) assigned value is a constant int or list/tuple of ints."""
    found: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for t in targets:
            if isinstance(t, ast.Name):
                pairs = [(t, value)]
            elif isinstance(t, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)) \
                    and len(t.elts) == len(value.elts):
                pairs = list(zip(t.elts, value.elts, strict=True))
            else:
                continue
            for name, v in pairs:
                if not isinstance(name, ast.Name):
                    continue
                c = _const(v)
                ok = _is_int(c) or (isinstance(c, (list, tuple)) and c and all(_is_int(x) for x in c))
                if ok:
                    found[name.id] = c
                else:
                    found.pop(name.id, None)  # reassigned to something we do not understand
    return found


def halve(v: int, cap: int) -> int:
    """``v`` halved until at most ``cap`` (rounded, odd kept odd); ints at or below the cap unchanged."""
    if v <= cap:
        return v
    k = math.ceil(math.log2(v / cap))
    new = max(1, round(v / 2**k))
    if v % 2 and not new % 2:
        new -= 1
    return max(new, 1)


def shrink(globals_: dict[str, Any], cap: int | None, tie_batch: bool = False) -> dict[str, Any]:
    """The overrides of one rung (see the module docstring); only changed values are returned.
    ``tie_batch``: a batch equal to another global's value is shrunk like it instead of set to 2."""
    out: dict[str, Any] = {}
    others: set[int] = set()
    for name, v in globals_.items():
        if not BATCH_NAMES.match(name):
            others.update([v] if _is_int(v) else v)
    for name, v in globals_.items():
        if BATCH_NAMES.match(name) and _is_int(v) and v > 2 and not (tie_batch and cap and v in others):
            out[name] = 2
    if cap is None:
        return out
    divisors = {n: (v, halve(v, cap)) for n, v in globals_.items()
                if DIVISOR_NAMES.search(n) and _is_int(v) and v > 1 and n not in out}

    def one(v: int) -> int:
        new = halve(v, cap)
        if new == v:
            return v
        step = 1
        for old_d, new_d in divisors.values():
            if v % old_d == 0:
                step = math.lcm(step, new_d)
        new = -(-new // step) * step
        return new if new <= v else halve(v, cap)

    for name, v in globals_.items():
        if name in out:
            continue
        if name in divisors:
            new: Any = divisors[name][1]
        elif _is_int(v):
            new = one(v)
        else:
            new = type(v)(one(x) if x > 0 else x for x in v)
        if new != v:
            out[name] = new
    return out


def _clone(values: Any) -> list[Any]:
    return [v.clone() if isinstance(v, torch.Tensor) else v for v in values]


def self_check(problem: Problem, ref: Reference, timed_calls: int = 4) -> list[str]:
    """Judge the reference model as if it were a candidate, the way the evaluator's worker runs one:
    constructed under another RNG state, weights from ``state_dict``, the draws in order on copies
    of their inputs, then the buffers, then a fresh model called ``timed_calls`` times on the timing
    draw. Returns what a perfect candidate (the reference itself) would fail on."""
    issues: list[str] = []
    for case in ref.cases:
        first = case.draws[0].expected
        if all(len(d.expected) == len(first) and all(a.shape == b.shape and torch.equal(a, b)
                                                     for a, b in zip(d.expected, first, strict=True))
               for d in (*case.draws[1:], case.timing)):
            issues.append("every draw has the same expected output: a constant answer passes")
        mod = problem.namespace(case.size)
        torch.manual_seed(987_654_321)
        model = mod.Model(*case.init_inputs)
        model.load_state_dict(case.state_dict, strict=True)
        torch.manual_seed(123_456_789)
        for d, draw in enumerate(case.draws):
            args = _clone(draw.inputs)
            with torch.no_grad():
                out = [o.detach().clone() for o in flatten_outputs(model(*args))]
            if digest(args) != draw.digest:
                issues.append(f"draw {d}: inputs after forward differ from the reference's (in-place input update)")
            c = compare_outputs(out, list(draw.expected), problem.atol, problem.rtol)
            if not c.ok:
                issues.append(f"draw {d}: {c.reason}")
                break
        buffers = dict(model.named_buffers())
        for name, expected in case.final_buffers.items():
            c = compare_tensor(buffers.get(name), expected, Tolerance.for_dtype(expected.dtype, problem.atol,
                                                                                  problem.rtol), f"buffer {name}")
            if not c.ok:
                issues.append(c.reason)
                break
        model = mod.Model(*case.init_inputs)
        model.load_state_dict(case.state_dict, strict=True)
        fresh = list(mod.get_inputs())
        before = _clone(fresh)
        with torch.no_grad():
            model(*fresh)
        if any(isinstance(a, torch.Tensor) and not torch.equal(a, b) for a, b in zip(fresh, before, strict=True)):
            issues.append("forward updates its inputs in place (on a CPU the stored draws are the updated ones)")
        model = mod.Model(*case.init_inputs)
        model.load_state_dict(case.state_dict, strict=True)
        with torch.no_grad():
            for _ in range(timed_calls):
                last = model(*case.timing.inputs)
        if not case.stateful:
            c = compare_outputs([o.detach() for o in flatten_outputs(last)], list(case.timing.expected),
                                problem.atol, problem.rtol)
            if not c.ok:
                issues.append(f"timing: after {timed_calls} calls: {c.reason}")
    return issues


def _attempt(path: str, overrides: dict[str, Any], max_gb: float, check_self: bool, conn: Any) -> None:
    """Child process: load + build; sends a dict back through ``conn``."""
    if max_gb > 0:
        limit = int(max_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    torch.set_num_threads(2)
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    try:
        problem = load_problem(path, overrides, device="cpu")
        ref = build_reference(problem, device="cpu", seed=0, draws=2, rescale=True)
        case = ref.cases[0]
        shapes = [list(t.shape) for t in case.draws[0].expected]
        res = {"status": "ok", "shapes": shapes, "flops": case.flops, "sizes": len(ref.cases),
               "stateful": case.stateful, "seconds_reference": round(time.perf_counter() - t0, 3)}
        if check_self:
            try:
                res["self_check"] = self_check(problem, ref)
            except Exception as e:  # the reference ran once; a rerun failing is itself a finding
                res["self_check"] = [f"rerun raised {type(e).__name__}: {str(e).strip().splitlines()[:1]}"]
    except BaseException as e:  # noqa: BLE001 - everything is reported
        cause = e.__cause__ or e
        tb = traceback.extract_tb(cause.__traceback__)
        where = f"{tb[-1].filename}:{tb[-1].lineno}" if tb else ""
        own = [f"{f.filename}:{f.lineno}" for f in tb if "/kernelevo/" in f.filename]
        reason = str(e) if isinstance(e, ProblemError) else f"{type(e).__name__}: {e}"
        res = {
            "status": "fail",
            "reason": reason.strip().splitlines()[0] if reason.strip() else type(e).__name__,
            "problem_error": isinstance(e, ProblemError),
            "where": where,
            "kernelevo_frames": own[-3:],
        }
    res["seconds"] = round(time.perf_counter() - t0, 3)
    conn.send(res)
    conn.close()


def run_attempt(path: Path, overrides: dict[str, Any], timeout: float, max_gb: float,
                check_self: bool) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_attempt, args=(str(path), overrides, max_gb, check_self, send))
    t0 = time.perf_counter()
    proc.start()
    send.close()
    res: dict[str, Any] | None = None
    if recv.poll(timeout):
        try:
            res = recv.recv()
        except EOFError:
            res = None
    proc.join(5 if res is not None else 0.1)
    if proc.is_alive():
        proc.kill()
        proc.join()
    wall = round(time.perf_counter() - t0, 3)
    if res is None:
        if wall >= timeout:
            res = {"status": "timeout", "reason": f"no result within {timeout:.0f} s", "seconds": wall}
        else:
            res = {"status": "fail", "reason": f"worker died (exit code {proc.exitcode})", "seconds": wall}
    res["wall"] = wall
    return res


def problem_files(root: Path, level: int) -> list[Path]:
    d = root / "KernelBench" / f"level{level}"
    if not d.is_dir():
        d = root / f"level{level}"
    files = [p for p in d.glob("*.py")]
    return sorted(files, key=lambda p: (int(p.name.split("_")[0]) if p.name.split("_")[0].isdigit() else 1 << 30,
                                        p.name))


def check(path: Path, budget: float, max_gb: float, check_self: bool) -> dict[str, Any]:
    globals_ = int_globals(path.read_text())
    attempts = []
    t0 = time.perf_counter()
    tried: set[str] = set()
    for (rung, cap), tie in ((r, t) for r in RUNGS for t in (False, True)):
        overrides = shrink(globals_, cap, tie)
        rung = f"{rung}+tied" if tie else rung
        key = repr(sorted(overrides.items()))
        if key in tried:
            continue
        tried.add(key)
        left = budget - (time.perf_counter() - t0)
        if left <= 0:
            break
        res = run_attempt(path, overrides, left, max_gb, check_self)
        res.update(rung=rung, overrides=overrides)
        attempts.append(res)
        if res["status"] in ("ok", "timeout") or re.search(r"ModuleNotFoundError|ImportError", res["reason"]):
            break  # done, or no smaller/larger size will help
    final = dict(attempts[-1])
    final["attempts"] = attempts
    final["total_seconds"] = round(time.perf_counter() - t0, 3)
    return final


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kernelbench_dir", metavar="KERNELBENCH_DIR", type=Path)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--max-seconds-per-problem", type=float, default=60.0,
                    help="wall-clock budget per problem, all rungs together (default 60)")
    ap.add_argument("--max-memory-gb", type=float, default=12.0,
                    help="address-space limit of each child process; 0 for none (default 12)")
    ap.add_argument("--only", nargs="*", default=[], help="run only files whose name contains one of these")
    ap.add_argument("--no-self-check", action="store_true",
                    help="skip judging the reference model as a candidate (see self_check)")
    ap.add_argument("--json", dest="json_out", type=Path, help="write every record here")
    ap.add_argument("-v", "--verbose", action="store_true", help="also print failed rungs of passing problems")
    args = ap.parse_args(argv)

    import torch._dynamo  # noqa: F401 - imported lazily on first dispatch-mode use: pay it once, before forking

    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    for level in args.levels:
        files = problem_files(args.kernelbench_dir, level)
        if not files:
            print(f"level{level}: no problem files under {args.kernelbench_dir}", file=sys.stderr)
        for path in files:
            if args.only and not any(s in path.name for s in args.only):
                continue
            rec = check(path, args.max_seconds_per_problem, args.max_memory_gb, not args.no_self_check)
            rec.update(level=level, file=path.name)
            records.append(rec)
            label = f"level{level}/{path.name}"
            secs = f"{rec.get('seconds_reference', rec['seconds']):7.2f}s"
            if rec["status"] == "ok":
                ov = ", ".join(f"{k}={v}" for k, v in rec["overrides"].items()) or "defaults"
                print(f"ok    {label:<95} {secs} [{rec['rung']}] {ov}", flush=True)
                for issue in rec.get("self_check", []):
                    print(f"        self-check: {issue}", flush=True)
            else:
                print(f"FAIL  {label:<95} {secs} [{rec['rung']}] {rec['status']}: {rec['reason']}", flush=True)
            if args.verbose or rec["status"] != "ok":
                for a in rec["attempts"][:-1]:
                    print(f"        rung {a['rung']} failed: {a['reason']}", flush=True)

    total = time.perf_counter() - start
    print()
    for level in args.levels:
        rs = [r for r in records if r["level"] == level]
        ok = sum(r["status"] == "ok" for r in rs)
        by_rung = Counter(r["rung"] for r in rs if r["status"] == "ok")
        flagged = sum(bool(r.get("self_check")) for r in rs)
        print(f"level{level}: {ok}/{len(rs)} ok ({', '.join(f'{k} {v}' for k, v in sorted(by_rung.items()))});"
              f" {flagged} fail the self-check")
    ok = sum(r["status"] == "ok" for r in records)
    print(f"total: {ok}/{len(records)} ok in {total:.1f} s")
    if args.json_out:
        args.json_out.write_text(json.dumps({"total_seconds": round(total, 1), "records": records}, indent=1,
                                            default=repr))
    return 0 if ok == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
