"""Host-side cost of a loaded op's dispatch: what `kernelevo.load` adds to every eager call.

The kernel is replaced by the same PyTorch call as the reference (F.layer_norm), so the difference
between the two timings is the loaded module's own Python work (plan lookup, state tie check),
not a kernel. This is a CPU measurement of Python overhead, meaningful on any host; it says
nothing about kernel speed.

    python scripts/bench_dispatch.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import kernelevo  # noqa: E402
from tests.conftest import CANDIDATES, PROBLEMS, make_export  # noqa: E402


def _per_call_us(fn, calls: int) -> float:  # noqa: ANN001
    fn()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        op_dir = make_export(Path(tmp), PROBLEMS / "layernorm_module.py", CANDIDATES / "layernorm_module_good.py")
        op = kernelevo.load(op_dir, (32,), 1e-5, True)
        kernel = op._entries["cpu"].kernels["best.py"]
        kernel.forward = lambda x: torch.nn.functional.layer_norm(x, (32,), kernel.op.weight, kernel.op.bias)
        x = torch.randn(8, 32)
        loaded, plain = [], []
        with torch.no_grad():
            for _ in range(args.rounds):
                loaded.append(_per_call_us(lambda: op(x), args.calls))
                plain.append(_per_call_us(lambda: op.reference(x), args.calls))
        assert op.last == "cpu/best.py"
    diffs = [a - b for a, b in zip(loaded, plain, strict=True)]
    print(f"loaded op {statistics.median(loaded):.1f} us/call, reference {statistics.median(plain):.1f} us/call, "
          f"dispatch overhead {statistics.median(diffs):.1f} us/call (median of {args.rounds} rounds of "
          f"{args.calls} calls; spread {min(diffs):.1f}-{max(diffs):.1f})")


if __name__ == "__main__":
    main()
