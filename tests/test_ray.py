"""Evaluations through a real local Ray cluster (CPU workers standing in for GPUs): a search to its
budget, a killed actor whose candidate is re-queued and judged once, and results per GPU type."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from kernelevo.candidate import Candidate
from kernelevo.evaluate.verdict import Verdict
from kernelevo.execute.base import ProblemSpec
from kernelevo.problem import load_problem
from kernelevo.settings import EvalSettings, Settings
from kernelevo.store import Store
from tests.conftest import CANDIDATES, PROBLEMS, ROOT, RecordingSlot
from tests.test_execute import wait_busy

ray = pytest.importorskip("ray", reason="Ray is the optional [ray] extra")

SETTINGS = EvalSettings(timeout_s=120.0)
TYPES = ("typeA", "typeB")  # accelerator types the test cluster's node advertises, as a GPU node does


@pytest.fixture(scope="module")
def cluster():
    """A real local cluster (GCS, raylet, worker processes), not local mode: 2 CPUs, two fake types."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, resources={f"accelerator_type:{t}": 1 for t in TYPES}, object_store_memory=200 << 20,
             include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def spec() -> ProblemSpec:
    return ProblemSpec.of(load_problem(PROBLEMS / "softmax_small.py"), "cpu")


def test_an_optimize_run_through_ray_survives_a_killed_actor_and_judges_each_candidate_once(cluster, tmp_path: Path):
    import threading

    from kernelevo.run import open_run

    s = Settings().updated({"search": {"budget": 4}, "eval": {"timeout_s": 120.0},
                            "execute": {"executor": "ray", "workers": 2}})
    prob = load_problem(ROOT / "kernels" / "softmax" / "problem.py")
    seed = (ROOT / "kernels" / "softmax" / "seed.py").read_text()
    runs: list = []
    out: list = []

    def optimize() -> None:  # the run's database belongs to the thread that opened it
        with open_run(prob, "cpu", s, tmp_path / "run.db", seed, "seed.py") as run:
            runs.append(run)
            out.append(run.search())

    t = threading.Thread(target=optimize)
    t.start()
    deadline = time.monotonic() + 300
    while not runs and time.monotonic() < deadline:
        time.sleep(0.05)
    d = runs[0].executor
    assert d.slots == 2 and d.describe().startswith("ray") and runs[0].info.worker.startswith("ray:")
    busy = wait_busy(d, 1)
    time.sleep(1.0)
    victim = next(s for s in d.groups[""] if s.name in busy)
    os.kill(victim.pid, signal.SIGKILL)
    t.join(timeout=600)
    summary = out[0]
    assert summary.evaluated == 4 and summary.workers == 2 and summary.lost_workers == 1
    with Store(tmp_path / "run.db", readonly=True) as st:
        # every candidate judged, none twice (the store refuses a second evaluation of one candidate)
        assert st.verdict_counts() == {"correct": 4} and not st.candidates("pending")


def test_gpu_types_judge_each_candidate_on_each_type_and_the_run_keeps_both(cluster, tmp_path: Path):
    from kernelevo.run import open_run

    s = Settings().updated({"search": {"budget": 2}, "eval": {"timeout_s": 120.0},
                            "execute": {"executor": "ray", "gpu_types": ",".join(TYPES), "workers": 1}})
    prob = load_problem(ROOT / "kernels" / "softmax" / "problem.py")
    seed = (ROOT / "kernels" / "softmax" / "seed.py").read_text()
    with open_run(prob, "cpu", s, tmp_path / "typed.db", seed, "seed.py") as run:
        assert {t: len(v) for t, v in run.executor.groups.items()} == {"typeA": 1, "typeB": 1}
        run.search()
    with Store(tmp_path / "typed.db", readonly=True) as st:
        per = st.per_type()
        assert st.meta()["gpu_types"] == list(TYPES)
    assert len(per) == 2 and all(set(v) == set(TYPES) for v in per.values())
    assert all(e.ok for v in per.values() for _, e in v.values())


def test_a_type_the_cluster_lacks_is_refused_in_one_line(cluster):
    from kernelevo.execute.cluster import ClusterError, ray_executor

    with pytest.raises(ClusterError, match="the Ray cluster has no GPU type H100"):
        ray_executor(SETTINGS, "cpu", gpu_types=("H100",))


def test_an_unreachable_cluster_is_a_one_line_error(tmp_path: Path):
    import subprocess
    import sys

    from tests.conftest import closed_port

    out = subprocess.run([sys.executable, "-m", "kernelevo", "optimize", str(ROOT / "kernels/softmax/problem.py"),
                          "--device", "cpu", "--executor", "ray", "--address", f"127.0.0.1:{closed_port()}"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "cannot join the Ray cluster" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_a_crashing_candidate_through_ray_is_a_verdict_not_a_lost_worker(cluster):
    from kernelevo.execute.cluster import ray_executor

    d = ray_executor(SETTINGS, "cpu", workers=1)
    try:
        src = (CANDIDATES / "softmax_good.py").read_text().replace(
            "        return softmax(x)", "        import os\n        os._exit(3)")
        j = d.submit(spec(), Candidate.from_source(src, "exits")).result(timeout=300)
        assert j.evaluation.verdict in (Verdict.CRASH, Verdict.REJECTED) and d.lost == 0
    finally:
        d.close()


def test_a_worker_ray_cannot_place_is_refused_within_the_ready_timeout(cluster):
    from kernelevo.execute.base import WorkerLost
    from kernelevo.execute.cluster import RaySlot

    t0 = time.monotonic()
    with pytest.raises(WorkerLost, match=r"within 2 s \(Ray could not place it; execute.ready_timeout_s\)"):
        RaySlot(SETTINGS, "huge", {"num_cpus": 64}, ready_timeout_s=2.0)
    assert time.monotonic() - t0 < 30
    assert ray.available_resources().get("CPU", 0) == 2  # the pending actor was removed, not left waiting


def test_compile_actors_per_node_refuse_statically_and_compile_the_rest_before_a_worker_sees_them(cluster):
    from kernelevo.execute.cluster import RayPrepareSlot
    from kernelevo.execute.dispatch import Dispatcher

    node = ray.get_runtime_context().get_node_id()
    prep = RayPrepareSlot(SETTINGS, "prepare-0", [node, "ab" * 28], timeout_s=20)  # a node that is not there
    assert list(prep.actors) == [node]  # the missing node is dropped, the run goes on
    gpu = RecordingSlot()
    d = Dispatcher({"": [gpu]}, prepare=[prep])
    try:
        s = ProblemSpec.of(load_problem(ROOT / "kernels" / "softmax" / "problem.py"), "cpu")
        good = d.submit(s, Candidate.from_file(CANDIDATES / "softmax_good.py")).result(timeout=300)
        bad = d.submit(s, Candidate.from_source("import torch\nclass ModelNew(torch.nn.Module):\n"
                                                "    def forward(self, x:\n", "syntax")).result(timeout=300)
        # compiled on the node, by its actor: every size's launch (CPU_SIZES' rows: BLOCK 64, 1024, 8192)
        assert good.warmed is not None and good.warmed.kernels == (
            "_softmax_kernel[BLOCK=64]", "_softmax_kernel[BLOCK=1024]", "_softmax_kernel[BLOCK=8192]")
        assert bad.evaluation.verdict is Verdict.COMPILE_ERROR and bad.attempts == 0
        assert gpu.seen == [str(CANDIDATES / "softmax_good.py")]  # the refused one never took a worker
        ray.kill(prep.actors[node], no_restart=True)  # a lost compile actor: the worker compiles instead
        again = d.submit(s, Candidate.from_file(CANDIDATES / "softmax_good.py")).result(timeout=300)
        assert again.evaluation.ok and again.warmed is None and prep.actors == {}
    finally:
        d.close()
