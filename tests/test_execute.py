"""Executors: local workers judging at once, lost workers re-queued, results per GPU type, suites."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernelevo.candidate import Candidate
from kernelevo.evaluate.verdict import Evaluation, Verdict
from kernelevo.execute.base import ProblemSpec, combine
from kernelevo.execute.dispatch import Dispatcher
from kernelevo.execute.local import ProcessSlot, ThreadSlot, local_executor
from kernelevo.problem import load_problem
from kernelevo.settings import EvalSettings
from tests.conftest import CANDIDATES, PROBLEMS, ROOT, RecordingSlot

SETTINGS = EvalSettings(timeout_s=120.0)


def slow(seconds: float) -> Candidate:
    """A correct softmax whose forward sleeps: long enough to be caught mid-evaluation."""
    src = (CANDIDATES / "softmax_good.py").read_text()
    src = src.replace("import torch\n", "import time\n\nimport torch\n", 1)
    src = src.replace("        return softmax(x)", f"        time.sleep({seconds})\n        return softmax(x)")
    return Candidate.from_source(src, "slow")


def spec() -> ProblemSpec:
    return ProblemSpec.of(load_problem(PROBLEMS / "softmax_small.py"), "cpu")


def wait_busy(d: Dispatcher, n: int, timeout: float = 120.0) -> dict[str, Candidate]:
    """Until ``n`` slots are judging (polls the dispatcher, not the clock of the evaluation)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = d.busy()
        if len(busy) >= n:
            return busy
        time.sleep(0.05)
    raise AssertionError(f"{n} slots never busy at once: {d.busy()}")


def ev(verdict: str, speedup: float | None = None, reason: str = "") -> Evaluation:
    return Evaluation("c", Verdict(verdict), reason, "cuda", speedup=speedup, speedup_compiled=speedup)


def test_combine_ranks_by_every_type_and_names_the_type_that_failed():
    both = combine([("H100", ev("correct", 2.0)), ("A100", ev("correct", 0.5))])
    assert both.ok and both.speedup == pytest.approx(1.0) and "judged on H100, A100" in both.notes
    failed = combine([("H100", ev("correct", 2.0)), ("A100", ev("incorrect", reason="17 elements wrong"))])
    assert failed.verdict is Verdict.INCORRECT and failed.reason == "on A100: 17 elements wrong"


def test_two_local_workers_judge_two_candidates_at_once_and_both_are_correct():
    d = local_executor(SETTINGS, "cpu", workers=2)
    try:
        assert d.slots == 2 and all(isinstance(s, ProcessSlot) for s in d.groups[""])
        s = spec()
        futs = [d.submit(s, slow(0.1)), d.submit(s, slow(0.1))]
        busy = wait_busy(d, 2)
        assert set(busy) == {"local-0", "local-1"}  # a worker per core: both judge at once
        results = [f.result(timeout=300) for f in futs]
        assert all(r.evaluation.ok for r in results), [r.evaluation.reason for r in results]
        assert sorted(r.workers[0] for r in results) == ["local-0", "local-1"]
    finally:
        d.close()


def test_a_killed_worker_process_has_its_evaluation_requeued_and_judged_once():
    slot = ProcessSlot(SETTINGS, "p-0", {})
    d = Dispatcher({"": [slot]}, max_retries=3)
    try:
        fut = d.submit(spec(), slow(0.4))
        wait_busy(d, 1)
        time.sleep(1.0)  # into the evaluation, not its queueing
        first = slot.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        j = fut.result(timeout=300)
        assert j.evaluation.ok, j.evaluation.reason
        assert j.attempts == 2 and d.lost == 1
        assert slot.pid not in (None, first)  # a fresh worker judged it
    finally:
        d.close()


def test_a_candidate_whose_workers_keep_dying_is_a_crash_not_a_hang():
    slot = ProcessSlot(SETTINGS, "p-0", {})
    d = Dispatcher({"": [slot]}, max_retries=2)
    try:
        fut = d.submit(spec(), slow(0.4))
        for _ in range(2):
            wait_busy(d, 1)
            time.sleep(0.5)
            pid = slot.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while slot.pid == pid and time.monotonic() < deadline and not fut.done():
                time.sleep(0.05)
        j = fut.result(timeout=120)
        assert j.evaluation.verdict is Verdict.CRASH
        assert "2 evaluation workers died while judging it" in j.evaluation.reason
    finally:
        d.close()


def test_every_gpu_type_judges_every_candidate():
    # Evaluators judging at once are in processes of their own, as in every real executor (two in
    # one process would take turns: tests/test_evaluator.py).
    d = Dispatcher({"typeA": [ThreadSlot(SETTINGS, "a")], "typeB": [ProcessSlot(SETTINGS, "b", {})]})
    try:
        j = d.submit(spec(), Candidate.from_file(CANDIDATES / "softmax_good.py")).result(timeout=300)
        assert [t for t, _ in j.per_type] == ["typeA", "typeB"] and j.workers == ("a", "b")
        assert all(e.ok for _, e in j.per_type), [e.reason for _, e in j.per_type]
        assert "judged on typeA, typeB" in j.evaluation.notes
    finally:
        d.close()


def test_more_workers_than_gpus_are_refused(monkeypatch: pytest.MonkeyPatch):
    import kernelevo.execute.local as local

    monkeypatch.setattr(local, "visible_gpus", lambda: ["0"])
    with pytest.raises(ValueError, match="1 visible GPU"):
        local_executor(SETTINGS, "cuda", workers=2)


# -- suites ---------------------------------------------------------------------------------------

def _suite(tmp_path: Path) -> Path:
    folder = tmp_path / "level"
    for name in ("softmax", "rmsnorm"):
        (folder / name).mkdir(parents=True)
        for f in ("problem.py", "seed.py"):
            (folder / name / f).write_text((ROOT / "kernels" / name / f).read_text())
    (folder / "broken").mkdir()
    (folder / "broken" / "problem.py").write_text("this is not python(\n")
    return folder


def test_a_suite_shares_a_total_budget_keeps_a_database_per_problem_and_ends_with_the_table(tmp_path: Path):
    folder = _suite(tmp_path)
    out = subprocess.run([sys.executable, "-m", "kernelevo", "optimize", str(folder), "--budget", "2",
                          "--suite-budget", "3", "--device", "cpu", "--workers", "1", "--db", str(tmp_path / "runs")],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    dbs = sorted(p.name for p in (tmp_path / "runs").glob("*.db"))
    assert dbs == ["rmsnorm-cpu.db", "softmax-cpu.db"]
    done = {}
    for name in dbs:
        with sqlite3.connect(tmp_path / "runs" / name) as db:
            done[name] = db.execute("SELECT COUNT(*) FROM candidates WHERE status='done'").fetchone()[0]
    # problems run in order: rmsnorm takes its 2, softmax what the suite has left
    assert done == {"rmsnorm-cpu.db": 2, "softmax-cpu.db": 1}
    assert "skipped:" in out.stderr and "broken" in out.stderr
    table = out.stdout
    assert "suite" in table and "rmsnorm" in table and "softmax" in table and "correct 2/2" in table
    assert "kernelevo report" in out.stderr


def test_bad_execution_options_are_one_line_errors(tmp_path: Path):
    problem = str(ROOT / "kernels" / "softmax" / "problem.py")
    (tmp_path / "bad.toml").write_text("[execute]\nready_timeout_s = 0\n")
    for args, message in (
        (["--config", str(tmp_path / "bad.toml")], "execute.ready_timeout_s must be positive, got 0"),
        (["--executor", "slurm"], "--executor must be one of local, ray"),
        (["--gpu-types", "H100,A100"], "--gpu-types needs --executor ray"),
        (["--workers", "-1"], "--workers must be 0 (automatic) or more"),
        (["--seed-kernel", problem, str(ROOT / "kernels" / "rmsnorm" / "problem.py")], "a suite takes each"),
    ):
        out = subprocess.run([sys.executable, "-m", "kernelevo", "optimize", problem, "--device", "cpu", *args],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1


# -- compiling ahead ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def softmax_warmer():
    from kernelevo.evaluate.warm import Warmer

    w = Warmer(load_problem(ROOT / "kernels" / "softmax" / "problem.py"), "cpu")
    yield w
    w.close()


def test_compiling_ahead_reaches_every_launch_of_every_size_without_running_one(softmax_warmer):
    w = softmax_warmer.warm((CANDIDATES / "softmax_good.py").read_text())
    # CPU_SIZES' rows are 33, 1000 and 4097 wide: one launch each, BLOCK the next power of two
    assert w.kernels == ("_softmax_kernel[BLOCK=64]", "_softmax_kernel[BLOCK=1024]", "_softmax_kernel[BLOCK=8192]")
    assert w.skipped == ()


def test_a_forward_that_cannot_run_on_meta_tensors_is_not_warmed_and_gets_no_verdict(softmax_warmer):
    src = ("import torch\n\nclass ModelNew(torch.nn.Module):\n    def forward(self, x):\n"
           "        return x * x.sum().item()\n")
    w = softmax_warmer.warm(src)
    assert w.kernels == () and len(w.skipped) == 3 and "item() cannot be called on meta tensors" in w.skipped[0]
    assert softmax_warmer.warm("raise SystemExit(3)\n").skipped[0].startswith("not warmed:")


def test_an_autotuned_kernel_compiles_every_config_ahead():
    from kernelevo.evaluate.warm import Warmer

    w = Warmer(load_problem(PROBLEMS / "mean_small.py"), "cpu")
    try:
        got = w.warm((CANDIDATES / "honest" / "mean_small__autotune_heuristics.py").read_text())
    finally:
        w.close()
    blocks = {k.split("BLOCK_SIZE=")[1].split(",")[0].rstrip("]") for k in got.kernels}
    assert blocks == {"64", "128", "256", "512", "1024", "2048"}, got


def test_the_prepare_stage_refuses_statically_and_compiles_the_rest_before_a_worker_sees_them():
    from kernelevo.execute.prepare import PrepareSlot

    gpu = RecordingSlot()
    prep = PrepareSlot(SETTINGS)
    d = Dispatcher({"": [gpu]}, prepare=[prep])
    try:
        assert d.slots == 2 and d.workers == 1
        s = ProblemSpec.of(load_problem(ROOT / "kernels" / "softmax" / "problem.py"), "cpu")
        good = d.submit(s, Candidate.from_file(CANDIDATES / "softmax_good.py")).result(timeout=300)
        bad = d.submit(s, Candidate.from_source("import torch\nclass ModelNew(torch.nn.Module):\n"
                                                "    def forward(self, x:\n", "syntax")).result(timeout=300)
        assert good.evaluation.ok and good.warmed is not None and len(good.warmed.kernels) == 3
        assert bad.evaluation.verdict is Verdict.COMPILE_ERROR and bad.attempts == 0
        assert gpu.seen == [str(CANDIDATES / "softmax_good.py")]  # the refused one never took the GPU
    finally:
        d.close()


@pytest.mark.gpu
def test_compiling_ahead_on_a_gpu_puts_the_kernels_in_tritons_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from kernelevo.evaluate.warm import Warmer

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cache"))
    w = Warmer(load_problem(ROOT / "kernels" / "softmax" / "problem.py", device="cuda"), "cuda")
    try:
        got = w.warm((CANDIDATES / "softmax_good.py").read_text())
    finally:
        w.close()
    assert len(got.kernels) == 3 and got.skipped == ()
    assert len(list((tmp_path / "cache").rglob("_softmax_kernel.cubin"))) == 3


def test_ray_executor_without_ray_installed_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch):
    from kernelevo import execute
    from kernelevo.settings import Settings

    monkeypatch.setitem(sys.modules, "ray", None)  # what a core install without the [ray] extra looks like
    with pytest.raises(ValueError, match=r"--executor ray needs Ray: pip install 'kernelevo\[ray\]'"):
        execute.make(Settings().updated({"execute": {"executor": "ray"}}), "cpu")


def test_a_killed_driver_leaves_no_worker_behind(tmp_path: Path):
    script = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from tests.test_execute import SETTINGS, slow, spec, wait_busy
from kernelevo.execute.local import local_executor
d = local_executor(SETTINGS, "cpu", workers=2)
d.submit(spec(), slow(0.5)); d.submit(spec(), slow(0.5))
wait_busy(d, 2)
while any(s.pid is None for s in d.groups[""]):
    time.sleep(0.05)
time.sleep(1.0)
print(" ".join(str(s.pid) for s in d.groups[""]), flush=True)
time.sleep(600)
"""
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                              env={**os.environ, "TRITON_INTERPRET": "1"})
    assert driver.stdout is not None
    pids = [int(p) for p in driver.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    driver.kill()
    driver.wait()
    # gone at once, not when the evaluation under way ends (~20 s of sleeping forwards) and the pipe is read
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.gpu
def test_compiling_ahead_builds_cupy_kernels_with_nvrtc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("cupy")
    from kernelevo.evaluate.warm import Warmer
    from tests.test_gpu import CUPY_SOFTMAX

    monkeypatch.setenv("CUPY_CACHE_DIR", str(tmp_path / "cupy"))
    w = Warmer(load_problem(PROBLEMS / "softmax_small.py", device="cuda"), "cuda")
    try:
        got = w.warm(CUPY_SOFTMAX)
    finally:
        w.close()
    assert "cupy:softmax_rows" in got.kernels, got
    assert any((tmp_path / "cupy").rglob("*")), "nothing in CuPy's kernel cache"


def test_cupy_kernels_held_by_the_module_or_the_model_are_compiled_once(monkeypatch: pytest.MonkeyPatch):
    import types

    from kernelevo.evaluate import warm

    compiled: list[str] = []

    class RawKernel:  # CuPy's shape: a name, and compile() running NVRTC
        def __init__(self, name: str, fails: bool = False):
            self.name, self.fails = name, fails

        def compile(self) -> None:
            if self.fails:
                raise RuntimeError("nvrtc: error: identifier 'x' is undefined")
            compiled.append(self.name)

    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(RawKernel=RawKernel))
    module = types.SimpleNamespace(_k=RawKernel("a"), other=3)
    model = types.SimpleNamespace(k=RawKernel("b"), again=module._k, bad=RawKernel("c", fails=True))
    kernels: list[str] = []
    skipped: list[str] = []
    warm._compile_cupy([module, model], kernels, skipped, str)
    assert compiled == ["a", "b"] and kernels == ["cupy:a", "cupy:b"]
    assert skipped == ["cupy:c: nvrtc: error: identifier 'x' is undefined"]
