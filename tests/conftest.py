"""Shared fixtures. Without CUDA, Triton runs in its interpreter (set before Triton is imported)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _HAS_CUDA = False
if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
    from kernelevo.evaluate.interpreter import fix_numpy_scalars

    fix_numpy_scalars()  # Triton 3.6's interpreter under NumPy >= 2.4 (a no-op on Triton 3.9)

TESTS = Path(__file__).parent
PROBLEMS = TESTS / "problems"
CANDIDATES = TESTS / "candidates"
ROOT = TESTS.parent


def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def evaluators():
    """One evaluator per test problem, shared by the session (each owns a warm zygote)."""
    from kernelevo.evaluate.evaluator import Evaluator
    from kernelevo.problem import load_problem
    from kernelevo.settings import EvalSettings

    made: dict[str, Evaluator] = {}

    def get(problem: str, **settings: object) -> Evaluator:
        key = f"{problem}:{sorted(settings.items())}"
        if key not in made:
            s = EvalSettings(**{"timeout_s": 60.0, **settings})  # type: ignore[arg-type]
            made[key] = Evaluator(load_problem(PROBLEMS / f"{problem}.py"), "cpu", s)
        return made[key]

    yield get
    for ev in made.values():
        ev.close()


@pytest.fixture(scope="session")
def file_evaluators():
    """One evaluator per problem file (any path), shared by the session."""
    from kernelevo.evaluate.evaluator import Evaluator
    from kernelevo.problem import load_problem
    from kernelevo.settings import EvalSettings

    made: dict[str, Evaluator] = {}

    def get(path: Path) -> Evaluator:
        if str(path) not in made:
            made[str(path)] = Evaluator(load_problem(path), "cpu", EvalSettings(timeout_s=120.0))
        return made[str(path)]

    yield get
    for ev in made.values():
        ev.close()


def make_export(root: Path, problem: Path, kernel: Path, budget: int = 1, device: str = "cpu") -> Path:
    """An export folder made the way a user makes one: an offline ``optimize`` run seeded with
    ``kernel`` (on a CPU: correctness only), then ``export``. Returns the op folder."""
    from kernelevo.deploy.export import export_run
    from kernelevo.problem import load_problem
    from kernelevo.run import open_run
    from kernelevo.settings import Settings

    name = problem.parent.name if problem.stem == "problem" else problem.stem  # as Problem.name says
    local = root / name / "problem.py"
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text(problem.read_text())
    settings = Settings().updated({"search": {"budget": budget}})
    with open_run(load_problem(local, device=device), device, settings, root / f"{name}.db", kernel.read_text(),
                  kernel.name) as run:
        run.search()
    target, _ = export_run(root / f"{name}.db", root / "kernels" / name)
    return target.parent


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> dict[str, Path]:
    """Three CPU exports: LayerNorm as a module, Linear+ReLU as a chain, softmax as a call."""
    root = tmp_path_factory.mktemp("exports")
    kernels = ROOT / "kernels"
    return {
        "ln": make_export(root, PROBLEMS / "layernorm_module.py", CANDIDATES / "layernorm_module_good.py"),
        "chain": make_export(root, PROBLEMS / "linear_relu_chain.py", CANDIDATES / "linear_relu_chain_good.py"),
        "softmax": make_export(root, kernels / "softmax/problem.py", kernels / "softmax/seed.py"),
    }


def kill_when_judged(process, db: Path, at_least: int, timeout_s: float = 120.0) -> int:  # noqa: ANN001
    """Wait until ``at_least`` candidates in ``db`` are judged, then SIGKILL ``process``'s group (a
    run killed mid-flight, as a crash or an OOM kill leaves it). Returns the count seen."""
    import signal
    import sqlite3
    import time

    deadline, done = time.monotonic() + timeout_s, 0
    while time.monotonic() < deadline and process.poll() is None and done < at_least:
        if db.exists():
            with sqlite3.connect(db) as con:
                try:
                    done = con.execute("SELECT COUNT(*) FROM candidates WHERE status='done'").fetchone()[0]
                except sqlite3.OperationalError:  # the schema is still being written
                    done = 0
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()[1]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return done
