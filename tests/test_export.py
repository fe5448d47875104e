"""Exporting a run's winners: files, manifest, GPU types kept apart, bad runs refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kernelevo.candidate import source_digest
from kernelevo.deploy.export import ExportError, export_run
from kernelevo.problem import load_problem
from kernelevo.run import open_run
from kernelevo.settings import Settings
from tests.conftest import CANDIDATES, PROBLEMS


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory) -> Path:
    """A small offline run on the CPU: the seed and a tuner move or two, judged."""
    root = tmp_path_factory.mktemp("run")
    problem = root / "softmax_small.py"
    problem.write_text((PROBLEMS / "softmax_small.py").read_text())
    s = Settings().updated({"search": {"budget": 2}})
    with open_run(load_problem(problem), "cpu", s, root / "run.db", (CANDIDATES / "softmax_good.py").read_text(),
                  "seed.py") as run:
        run.search()
    return root / "run.db"


def test_a_cpu_run_exports_its_first_correct_kernel_as_correctness_only(cpu_run: Path, tmp_path: Path) -> None:
    target, manifest = export_run(cpu_run, tmp_path / "softmax")
    assert target == tmp_path / "softmax" / "cpu" and manifest.correctness_only and manifest.gpu_key == "cpu"
    data = json.loads((target / "manifest.json").read_text())
    best = (target / "best.py").read_text()
    assert data["best"]["sha256"] == source_digest(best) and data["best"]["candidate"] == 1
    assert all(s["speedup"] is None and s["latency_ms"] is None for s in data["sizes"])  # nothing about speed
    assert [s["size"] for s in data["sizes"]] == [s for s in load_problem(PROBLEMS / "softmax_small.py").sizes]
    assert (tmp_path / "softmax" / "problem.py").read_text() == (PROBLEMS / "softmax_small.py").read_text()
    assert data["versions"]["torch"] and data["run"]["db"] == str(cpu_run.resolve())
    assert data["problem_sha256"] and data["champions"] == []
    assert [s["inputs"] for s in data["sizes"]] == [["float32[5, 37]"], ["float32[3, 64]"]]
    assert data["run"]["id"].startswith("run@20") and data["atol"] is None


def test_another_gpu_types_entry_is_never_touched(cpu_run: Path, tmp_path: Path) -> None:
    other = tmp_path / "softmax" / "nvidia-h100-80gb-sm90"
    other.mkdir(parents=True)
    (other / "best.py").write_text("# the H100's kernel\n")
    (other / "manifest.json").write_text('{"gpu_key": "nvidia-h100-80gb-sm90"}\n')
    export_run(cpu_run, tmp_path / "softmax")
    assert (other / "best.py").read_text() == "# the H100's kernel\n"
    assert sorted(p.name for p in (tmp_path / "softmax").iterdir()) == ["cpu", "nvidia-h100-80gb-sm90", "problem.py"]


def test_runs_that_cannot_be_exported_say_why(cpu_run: Path, tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "problem.py").write_text("# another problem\n")
    with pytest.raises(ExportError, match="a different problem is exported here already"):
        export_run(cpu_run, busy)
    problem = cpu_run.parent / "softmax_small.py"
    saved = problem.read_text()
    problem.write_text(saved + "\n# edited\n")
    try:
        with pytest.raises(ExportError, match="changed since the run verified"):
            export_run(cpu_run, tmp_path / "x")
    finally:
        problem.write_text(saved)
    empty = tmp_path / "empty.db"
    from kernelevo.store import Store

    Store(empty).close()
    with pytest.raises(ExportError, match="records no problem"):
        export_run(empty, tmp_path / "y")


def test_export_on_the_command_line(cpu_run: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kernelevo", "export", *args], capture_output=True, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)

    r = run(str(cpu_run), "--out", str(tmp_path / "k"))
    assert r.returncode == 0, r.stderr
    assert "exported #1 (correctness only (a CPU run: no speed known))" in r.stdout
    assert str(tmp_path / "k" / "cpu") in r.stdout
    r = run(str(tmp_path / "nope.db"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such run database" in r.stderr
