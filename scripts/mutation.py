"""Mutation score of the judge's modules: how many small changes to their code the tests notice.

mutmut (pip install mutmut) writes the mutants and maps each mutated function to the tests
that reach it, on a copy of the repository, so nothing here changes. This script then runs
the mutants itself: one parent imports torch, the judge and the test modules once, and forks
a child per mutant that runs that function's tests with ``-x`` (mutmut's own runner stalled
on this suite: a test that installs an audit hook in its process leaves it in every later
fork, and its children never reported back). A mutant is killed when a test fails, survives
when they all pass, and times out past ``--timeout`` seconds or crashes (the tests' process
died before reporting, e.g. a mutated audit hook raising on every event): both are counted as
killed, as mutmut counts them (the tests did not pass), and shown apart.

Prints killed/total per module and overall; the score is recorded in BENCHMARKS.md. Not part
of CI: a full run takes about an hour on two cores. ``--prior DIR`` reuses a previous run's
kills of functions whose source has not changed since (tests only grow, so a kill stays a kill).

The worker-side plumbing (worker, zygote, sandbox, timing, evaluator) runs in forked processes
of its own; it is tested end to end by the adversarial suite instead.

Usage: python scripts/mutation.py [--modules evaluate/compare work ...] [--keep DIR] [--prior DIR]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["evaluate/compare", "evaluate/static", "evaluate/judge", "evaluate/plan", "evaluate/poison", "work",
           "evaluate/confine", "evaluate/protocol", "evaluate/launches", "evaluate/interpreter"]
TESTS = ["tests/test_compare.py", "tests/test_static.py", "tests/test_judge_units.py", "tests/test_judge_parts.py",
         "tests/test_gpu_report.py"]


def prepare(work: Path, modules: list[str]) -> None:
    """Copy the repository to ``work`` and let mutmut write the mutants and the test map there."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        dst = work / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst)
    sources = "\n    ".join(f"kernelevo/{m}.py" for m in modules)
    (work / "setup.cfg").write_text(
        "[mutmut]\n"
        f"source_paths={sources}\n"
        "pytest_add_cli_args_test_selection=" + "\n    ".join(TESTS) + "\n"
        "pytest_add_cli_args=-p no:cacheprovider -q -x\n"
        "also_copy=kernelevo\n    kernels\n    tests\n    scripts\n"
    )
    # mutmut generates, collects its test map, then runs mutants: stop it once the map exists.
    proc = subprocess.Popen([sys.executable, "-m", "mutmut", "run"], cwd=work, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert proc.stdout is not None
    for line in iter(proc.stdout.readline, ""):
        if "Running mutation testing" in line:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if not (work / "mutants" / "mutmut-stats.json").exists():
        raise SystemExit("mutmut did not write its test map (mutants/mutmut-stats.json)")


def mutant_names(mutants: Path, modules: list[str]) -> dict[str, list[str]]:
    out = {}
    for m in modules:
        meta = json.loads((mutants / "kernelevo" / f"{m}.py.meta").read_text())
        out[m] = sorted(meta["exit_code_by_key"])
    return out


def _function(mutant: str) -> str:
    return mutant.rsplit("__mutmut_", 1)[0]


def function_hashes(mutants: Path, modules: list[str]) -> dict[str, str]:
    """Mangled function name -> mutmut's hash of its source, for every mutated function."""
    out = {}
    for m in modules:
        meta = mutants / "kernelevo" / f"{m}.py.meta"
        if meta.exists():
            prefix = "kernelevo." + m.replace("/", ".") + "."
            out.update({prefix + f: h for f, h in json.loads(meta.read_text())["hash_by_function_name"].items()})
    return out


def run_all(mutants: Path, todo: list[str], jobs: int, timeout: float, results: dict[str, str],
            save: Path) -> None:
    """Fork a child per mutant (``jobs`` at a time) from a parent that imported everything once."""
    os.chdir(mutants)
    sys.path.insert(0, str(mutants))
    import pytest  # noqa: PLC0415 - after the path points at the mutants

    for m in ("tests.conftest", *(t[:-3].replace("/", ".") for t in TESTS)):
        importlib.import_module(m)
    # One collection in the parent warms pytest's plugins and caches (~2 s a child otherwise).
    null = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(1)
    os.dup2(null, 1)
    pytest.main(["-p", "no:cacheprovider", "-q", "--collect-only", *TESTS])
    os.dup2(saved, 1)
    stats = json.loads(Path("mutmut-stats.json").read_text())
    tests_by, took = stats["tests_by_mangled_function_name"], stats["duration_by_test"]
    running: dict[int, tuple[str, float, int]] = {}
    queue = list(todo)
    done = 0

    def reap() -> None:
        nonlocal done
        for pid, (name, t0, r) in list(running.items()):
            p, _ = os.waitpid(pid, os.WNOHANG)
            if not p and time.monotonic() - t0 < timeout:
                continue
            if not p:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            data = os.read(r, 16).decode() if p else ""
            os.close(r)
            results[name] = "timeout" if not p else "survived" if data == "0" else "killed" if data else "crashed"
            del running[pid]
            done += 1
            if done % 25 == 0:
                save.write_text(json.dumps(results, indent=0))
                print(f"{done}/{len(todo)} {Counter(results[n] for n in todo if n in results)}", flush=True)

    while queue or running:
        while queue and len(running) < jobs:
            name = queue.pop(0)
            # Fastest first, as mutmut orders them: most mutants die in the first test that reaches them.
            tests = sorted(tests_by.get(_function(name), []), key=lambda t: (took.get(t, 9.0), t))
            if not tests:
                results[name] = "no tests"
                continue
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: this mutant on, its tests, the exit code down the pipe
                os.close(r)
                os.environ["MUTANT_UNDER_TEST"] = name
                os.dup2(null, 1)
                os.dup2(null, 2)
                rc = pytest.main(["-p", "no:cacheprovider", "-q", "-x", *tests])
                os.write(w, str(int(rc)).encode())
                os._exit(0)
            os.close(w)
            running[pid] = (name, time.monotonic(), r)
        time.sleep(0.05)
        reap()
    save.write_text(json.dumps(results, indent=0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modules", nargs="*", default=MODULES)
    ap.add_argument("--keep", type=Path, default=None, help="work here and keep it (default: a temp dir)")
    ap.add_argument("--prior", type=Path, nargs="*", default=[],
                    help="kept earlier runs: reuse their kills of functions unchanged since")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    work = (args.keep or Path(tempfile.mkdtemp(prefix="kernelevo-mutation-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    prepare(work, args.modules)
    mutants = work / "mutants"
    names = mutant_names(mutants, args.modules)
    hashes = function_hashes(mutants, args.modules)
    results: dict[str, str] = {}
    for prior in args.prior:
        # A kill stands while the mutated function's source is unchanged (tests only grow).
        before = function_hashes(prior / "mutants", args.modules)
        done = json.loads((prior / "results.json").read_text())
        results.update({n: r for n, r in done.items() if r in ("killed", "timeout", "crashed")
                        and hashes.get(f := _function(n)) is not None and hashes.get(f) == before.get(f)})
    todo = [n for m in args.modules for n in names[m] if n not in results]
    print(f"{sum(map(len, names.values()))} mutants, {len(todo)} to run", flush=True)
    run_all(mutants, todo, args.jobs, args.timeout, results, work / "results.json")

    print("| module | killed | of which timeout / crashed | survived | other | score |")
    print("|---|---|---|---|---|---|")
    total: Counter[str] = Counter()
    for mod in args.modules:
        c = Counter(results.get(n, "not run") for n in names[mod])
        total += c
        killed = c["killed"] + c["timeout"] + c["crashed"]
        n = sum(c.values())
        print(f"| {mod} | {killed} | {c['timeout']} / {c['crashed']} | {c['survived']} | "
              f"{n - killed - c['survived']} | {killed / max(n, 1):.0%} |")
    n = sum(total.values())
    killed = total["killed"] + total["timeout"] + total["crashed"]
    print(f"| **all** | {killed} | {total['timeout']} / {total['crashed']} | {total['survived']} | "
          f"{n - killed - total['survived']} | {killed / max(n, 1):.1%} |")
    survivors = sorted(k for k, v in results.items() if v == "survived")
    (work / "survivors.txt").write_text("\n".join(survivors) + "\n")
    print(f"\nstatuses: {dict(total)}; survivors listed in {work / 'survivors.txt'}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
