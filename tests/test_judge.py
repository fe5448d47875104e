"""The judge's mechanisms end to end: fresh seeds, Landlock, no job data in files, hybrids, glue
within budget, every autotune config, a reference timed apart."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kernelevo.candidate import Candidate
from kernelevo.evaluate.evaluator import Evaluator
from kernelevo.evaluate.verdict import Verdict
from kernelevo.problem import load_problem
from kernelevo.settings import EvalSettings
from tests.adversarial import HEADER
from tests.conftest import CANDIDATES, PROBLEMS, ROOT

GOOD = (CANDIDATES / "softmax_good.py").read_text()
FORWARD = "\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        return softmax(x)\n"


def _landlock() -> bool:
    try:
        import landlock

        return landlock.landlock_abi_version() >= 1
    except Exception:
        return False


def _job_log(ev: Evaluator) -> str:
    return "".join(p.read_text() for p in ev._dir.glob("candidate-*/log"))


def test_every_evaluation_draws_a_fresh_seed_and_a_seed_reproduces_it(evaluators) -> None:
    ev = evaluators("softmax_small")
    a = ev.evaluate(Candidate.from_file(CANDIDATES / "softmax_good.py"))
    b = ev.evaluate(Candidate.from_file(CANDIDATES / "softmax_good.py"))
    assert a.ok and b.ok and a.seed != b.seed, "nothing memoised in one evaluation may answer the next"
    fixed = evaluators("softmax_small", seed=a.seed)
    again = fixed.evaluate(Candidate.from_file(CANDIDATES / "softmax_good.py"))
    assert again.seed == a.seed
    assert [s.max_abs_err for s in again.sizes] == [s.max_abs_err for s in a.sizes]
    assert [s.size for s in again.sizes] == [s.size for s in a.sizes]


def test_no_job_data_exists_in_any_file(tmp_path: Path) -> None:
    """Inputs and weights arrive over the worker's socket after import: at import the scratch folder
    and the evaluator's folder hold no tensor file to precompute answers from."""
    probe = HEADER + textwrap.dedent("""
        import os
        _seen = []
        for _root in (os.path.dirname(__file__), os.path.dirname(os.path.dirname(__file__))):
            for _dirpath, _dirs, _files in os.walk(_root):
                _seen += [os.path.join(_dirpath, f) for f in _files]
        print("FILES", " ".join(sorted(os.path.basename(f) for f in _seen)), flush=True)
        """) + FORWARD
    with Evaluator(load_problem(PROBLEMS / "softmax_small.py"), "cpu", EvalSettings(keep_jobs=True)) as ev:
        result = ev.evaluate(Candidate.from_source(probe, "probe"))
        files = _job_log(ev).split("FILES ")[1].split("\n")[0].split()
    assert result.ok, result.reason
    assert "candidate.py" in files
    assert not [f for f in files if f.endswith((".pt", ".pth", ".npy", ".bin"))], files


@pytest.mark.skipif(not _landlock(), reason="Landlock is not available on this kernel")
def test_landlock_confines_writes_to_the_scratch_folder(tmp_path: Path) -> None:
    outside = tmp_path / "leak.txt"
    probe = HEADER + textwrap.dedent(f"""
        import os, tempfile
        try:
            open({str(outside)!r}, "w").write("x")
            print("OUTSIDE written", flush=True)
        except OSError as e:
            print("OUTSIDE refused", e.errno, flush=True)
        with open(os.path.join(tempfile.gettempdir(), "scratch.txt"), "w") as f:
            f.write("fine")
        print("SCRATCH written", flush=True)
        """) + FORWARD
    with Evaluator(load_problem(PROBLEMS / "softmax_small.py"), "cpu", EvalSettings(keep_jobs=True)) as ev:
        result = ev.evaluate(Candidate.from_source(probe, "writer"))
        log = _job_log(ev)
    assert result.ok, result.reason
    assert "OUTSIDE refused" in log and "SCRATCH written" in log
    assert not outside.exists()


@pytest.mark.skipif(not _landlock(), reason="Landlock is not available on this kernel")
def test_landlock_refuses_tcp_connections() -> None:
    """Beneath the audit hook (which refuses sockets to candidate code), the kernel itself refuses
    a confined process any TCP connection, even to loopback."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    script = textwrap.dedent(f"""
        import socket, sys, tempfile
        from pathlib import Path
        from kernelevo.evaluate.landlock import confine
        note = confine([Path(tempfile.mkdtemp())])
        if note and "network" in note:
            print("NONET", note); sys.exit(0)
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=2)
            print("CONNECTED")
        except OSError as e:
            print("REFUSED", e.errno)
        """)
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    finally:
        server.close()
    if out.stdout.startswith("NONET"):
        pytest.skip(out.stdout.strip())
    assert out.stdout.startswith("REFUSED"), out.stdout + out.stderr


def test_glue_within_the_budget_passes_and_is_not_a_hybrid(evaluators) -> None:
    src = HEADER + textwrap.dedent("""

        class ModelNew(nn.Module):
            def forward(self, x):
                n = int((x[:, :1] > 0).sum().item())  # a little PyTorch glue: a count on one column
                y = softmax(x)
                return y if n >= 0 else torch.zeros_like(y)
        """)
    result = evaluators("softmax_small").evaluate(Candidate.from_source(src, "glue"))
    assert result.verdict is Verdict.CORRECT, result.reason
    assert result.torch_share is not None and 0 < result.torch_share < 0.25 and not result.hybrid


def test_hybrids_pass_only_when_allowed_and_are_labelled(evaluators) -> None:
    src = HEADER + FORWARD.replace("return softmax(x)", "softmax(x[:1])\n        return torch.softmax(x, -1)")
    strict = evaluators("softmax_small").evaluate(Candidate.from_source(src, "hybrid"))
    assert strict.verdict is Verdict.REJECTED and "ran in PyTorch" in strict.reason
    allowed = evaluators("softmax_small", allow_torch_compute=True).evaluate(Candidate.from_source(src, "hybrid"))
    assert allowed.verdict is Verdict.CORRECT, allowed.reason
    assert allowed.hybrid and allowed.torch_share is not None and allowed.torch_share >= 1.0
    assert allowed.to_json()["hybrid"] is True


AUTOTUNED = HEADER.split("\n\n@triton.jit")[0] + textwrap.dedent('''


    @triton.autotune(configs=[triton.Config({"BLOCK": 128}), triton.Config({"BLOCK": 4096})], key=["n_cols"])
    @triton.jit
    def _softmax_kernel(x_ptr, y_ptr, n_cols, stride, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        offs = tl.arange(0, BLOCK)
        # The wide config drops the last column: slower on every device, so never the one picked.
        mask = offs < (n_cols - 1 if BLOCK >= 4096 else n_cols)
        x = tl.load(x_ptr + row * stride + offs, mask=mask, other=-float("inf"))
        x = x - tl.max(x, axis=0)
        e = tl.exp(x)
        tl.store(y_ptr + row * stride + offs, e / tl.sum(e, axis=0), mask=mask)


    class ModelNew(nn.Module):
        def forward(self, x):
            y = torch.empty_like(x)
            _softmax_kernel[(x.shape[0],)](x, y, x.shape[1], x.stride(0))
            return y
    ''')


def test_every_autotune_config_is_checked(evaluators) -> None:
    """Another GPU may pick another config: a config that is wrong anywhere fails the candidate,
    whichever one the autotuner picked here."""
    result = evaluators("softmax_small").evaluate(Candidate.from_source(AUTOTUNED, "autotuned"))
    assert result.verdict is Verdict.INCORRECT, result.reason
    assert "autotune config 1" in result.reason and "BLOCK: 4096" in result.reason
    fixed = AUTOTUNED.replace("n_cols - 1 if", "n_cols if")
    assert evaluators("softmax_small").evaluate(Candidate.from_source(fixed, "fixed")).ok


def test_an_output_never_written_fails_even_when_a_recycled_block_held_the_answer(evaluators) -> None:
    """The answer is computed, dropped, and a fresh ``empty_like`` returned: on a GPU the caching
    allocator hands back the same block, still holding it. Checked calls fill fresh memory with NaN."""
    ev = evaluators("softmax_small")
    src = HEADER + ("\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        y = softmax(x)\n"
                    "        del y\n        return torch.empty_like(x)\n")
    r = ev.evaluate(Candidate.from_source(src, "recycled"))
    assert r.verdict is Verdict.INCORRECT, r.reason
    assert "NaN where the reference has none" in r.reason and "never written" in r.reason
