"""Mutation score of the judge's modules: how many small changes to their code the tests notice.

Runs mutmut (pip install mutmut) on a copy of the repository, so nothing here changes, with
the judge's fast tests (comparison, static checks, judgements, plan, poison, channel,
confinement policy). Prints killed/total per module and overall; the score is recorded in
BENCHMARKS.md. Not part of CI: it takes tens of minutes on two cores.

The worker-side plumbing (worker, zygote, sandbox, timing, evaluator) runs in forked processes
that mutmut cannot switch mutants in; it is tested end to end by the adversarial suite instead.

Usage: python scripts/mutation.py [--modules evaluate/compare work ...] [--keep DIR]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["evaluate/compare", "evaluate/static", "evaluate/judge", "evaluate/plan", "evaluate/poison", "work",
           "evaluate/confine", "evaluate/protocol", "evaluate/launches", "evaluate/interpreter"]
TESTS = ["tests/test_compare.py", "tests/test_static.py", "tests/test_judge_units.py", "tests/test_judge_parts.py",
         "tests/test_gpu_report.py"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modules", nargs="*", default=MODULES)
    ap.add_argument("--keep", type=Path, default=None, help="work here and keep it (default: a temp dir)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="kernelevo-mutation-"))
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        dst = work / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst)
    sources = "\n    ".join(f"kernelevo/{m}.py" for m in args.modules)
    (work / "setup.cfg").write_text(
        "[mutmut]\n"
        f"source_paths={sources}\n"
        "pytest_add_cli_args_test_selection=" + "\n    ".join(TESTS) + "\n"
        "pytest_add_cli_args=-p no:cacheprovider -q -x\n"
        "process_isolation=forkserver\n"
        "also_copy=kernelevo\n    kernels\n    tests\n"
    )
    subprocess.run([sys.executable, "-m", "mutmut", "run"], cwd=work, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work,
                         capture_output=True, text=True).stdout
    per: dict[str, Counter[str]] = {}
    for line in out.splitlines():
        m = re.match(r"\s*kernelevo\.([\w.]+?)\.x\S*: (.+)$", line)
        if m:
            per.setdefault(m.group(1).replace(".", "/"), Counter())[m.group(2).strip()] += 1
    print("| module | killed | survived | other | score |")
    print("|---|---|---|---|---|")
    total = Counter()
    for mod in args.modules:
        c = per.get(mod, Counter())
        total += c
        n = sum(c.values())
        other = n - c["killed"] - c["survived"]
        score = f"{c['killed'] / n:.0%}" if n else "-"
        print(f"| {mod} | {c['killed']} | {c['survived']} | {other} | {score} |")
    n = sum(total.values())
    print(f"| **all** | {total['killed']} | {total['survived']} | {n - total['killed'] - total['survived']} | "
          f"{total['killed'] / max(n, 1):.1%} |")
    print(f"\nstatuses: {dict(total)}; work dir: {work}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
