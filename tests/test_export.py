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


def _judged_on_two_types(cpu_run: Path, dst: Path, speed: dict[str, dict[int, float]]) -> Path:
    """The CPU run as if each candidate had been judged on two GPU types with ``speed[type][id]``."""
    import dataclasses
    import shutil
    import sqlite3

    from kernelevo.candidate import Candidate
    from kernelevo.store import Store

    shutil.copy(cpu_run, dst)
    with Store(dst) as st:
        st.set_meta({"device": "cuda", "gpu_types": list(speed)})
        first = next(c for c in st.candidates() if c.verdict == "correct")
        assert first.evaluation is not None
        other = first.source.replace("import torch", "import torch  # another kernel", 1)
        cid = st.add_candidate(Candidate(other, "other"), "llm", source_digest(other))
        st.record_evaluation(cid, first.evaluation, None, {})
        cands = {c.id: c for c in st.candidates() if c.verdict == "correct"}
        assert len(cands) >= 2
    rows = []
    for t, per in speed.items():
        for cid, x in per.items():
            ev = cands[cid].evaluation
            assert ev is not None
            sizes = tuple(dataclasses.replace(s, speedup=x, latency_ms=1.0 / x, reference_ms=1.0) for s in ev.sizes)
            ev = dataclasses.replace(ev, device="cuda", timing="cuda-events", sizes=sizes, speedup=x)
            d = ev.to_json()
            d.pop("log", None)
            rows.append((cid, t, f"ray:{t}", f"gpu-{t.lower()}", json.dumps(d)))
    with sqlite3.connect(dst) as db:
        db.executemany("INSERT INTO per_type VALUES (?, ?, ?, ?, ?)", rows)
    return dst


def test_a_run_judged_on_two_gpu_types_exports_each_types_own_winner(cpu_run: Path, tmp_path: Path) -> None:
    import sqlite3

    from kernelevo.deploy.export import export_all

    with sqlite3.connect(cpu_run) as con:
        first = con.execute("SELECT MIN(id) FROM candidates WHERE verdict='correct'").fetchone()[0]
        last = con.execute("SELECT MAX(id) FROM candidates").fetchone()[0] + 1  # the one added below
    db = _judged_on_two_types(cpu_run, tmp_path / "typed.db", {"H100": {first: 1.2, last: 2.0},
                                                                 "A100": {first: 1.5, last: 0.9}})
    out = export_all(db, tmp_path / "softmax")
    got = {m.gpu_key: (target.name, m.best.candidate, m.best.speedup, m.run["gpu_type"]) for target, m in out}
    assert got == {"gpu-h100": ("gpu-h100", last, 2.0, "H100"), "gpu-a100": ("gpu-a100", first, 1.5, "A100")}
    for target, m in out:
        data = json.loads((target / "manifest.json").read_text())
        assert [s["speedup"] for s in data["sizes"]] == [m.best.speedup] * len(data["sizes"])
