"""The CI gate: exported kernels judged again for this machine's GPU type (here the CPU, Triton's
interpreter): still correct, tampered files refused, other GPU types skipped, regressions retuned."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from kernelevo.candidate import source_digest
from kernelevo.deploy.export import export_run
from kernelevo.deploy.manifest import KernelEntry, Manifest, read_export
from kernelevo.deploy.verify import VerifyError, judge_kernel, verify_command, verify_exports
from kernelevo.evaluate.verdict import Evaluation, SizeResult, Verdict
from kernelevo.problem import load_problem
from kernelevo.run import open_run
from kernelevo.settings import Settings
from tests.conftest import CANDIDATES, PROBLEMS

GOOD = (CANDIDATES / "softmax_good.py").read_text()
# A plausible regression: the row's block fixed at 32 columns, so columns past 32 are never written.
# The offline tuner can repair it (BLOCK is a knob), which is what the retune test relies on.
BROKEN = GOOD.replace("BLOCK=triton.next_power_of_2(cols))", "BLOCK=BLOCK)").replace(
    "@triton.jit", "BLOCK = 32\n\n\n@triton.jit", 1)
assert BROKEN != GOOD and "BLOCK = 32" in BROKEN and "next_power_of_2" not in BROKEN
FIRST_SIZE = "batch_size=5, dim=37"  # softmax_small's first size: 37 columns > 32


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """``kernels/`` holding a CPU export of softmax_small, made as tests/test_export.py makes one."""
    root = tmp_path_factory.mktemp("export")
    problem = root / "softmax_small.py"
    problem.write_text((PROBLEMS / "softmax_small.py").read_text())
    s = Settings().updated({"search": {"budget": 2}})
    with open_run(load_problem(problem), "cpu", s, root / "run.db", GOOD, "seed.py") as run:
        run.search()
    export_run(root / "run.db", root / "kernels" / "softmax")
    return root / "kernels"


@pytest.fixture
def kernels(exported: Path, tmp_path: Path) -> Path:
    """A private copy of the export, for a test to break."""
    return Path(shutil.copytree(exported, tmp_path / "kernels"))


def _rewrite_best(kernels: Path, source: str, *, update_sha: bool, **manifest_changes: object) -> Path:
    """Replace best.py; with ``update_sha`` the manifest is made to agree (a consistent, wrong export)."""
    folder = kernels / "softmax" / "cpu"
    (folder / "best.py").write_text(source)
    data = json.loads((folder / "manifest.json").read_text())
    if update_sha:
        data["best"]["sha256"] = source_digest(source)
    data.update(manifest_changes)
    (folder / "manifest.json").write_text(json.dumps(data))
    return folder / "best.py"


def test_a_good_export_passes(kernels: Path) -> None:
    report = verify_exports(kernels)
    assert report.gpu_key == "cpu" and report.device == "cpu"
    assert [(c.status, c.file) for c in report.checks] == [("ok", kernels / "softmax" / "cpu" / "best.py")]
    assert report.ok and report.exit_code == 0 and report.retuned == [] and report.versions_changed == {}
    assert [r["size"] for r in report.checks[0].sizes] == list(load_problem(PROBLEMS / "softmax_small.py").sizes)
    assert any("speed is not checked on a CPU" in n for n in report.notes)
    out: list[str] = []
    assert verify_command(kernels / "softmax", echo=out.append) == 0  # one op's folder works too
    assert out[0] == f"{kernels}/softmax/cpu/best.py: ok: correct on 2 sizes (speed not checked: needs a GPU)"
    assert out[-1] == "verify ok for cpu: 1 ok"


def test_a_kernel_that_became_wrong_is_named_with_its_size(kernels: Path) -> None:
    best = _rewrite_best(kernels, BROKEN, update_sha=True,
                         versions={"torch": "2.11.0", "triton": "3.0.0", "cuda": None, "driver": None})
    read_export(kernels / "softmax", "cpu")  # consistent: this is a wrong kernel, not a tampered file
    out: list[str] = []
    assert verify_command(kernels, echo=out.append) == 1
    assert out[0].startswith(f"{best}: became wrong on size {FIRST_SIZE}: "), out[0]
    assert f"softmax: exported with torch 2.11.0 → {torch.__version__}" in out[1]
    assert out[-1] == "verify FAILED (1) for cpu: 1 wrong"
    report = verify_exports(kernels, settings=Settings().updated({"eval": {"seed": 3}}))
    (check,) = report.checks
    assert check.status == "wrong" and check.failed and not report.ok and report.exit_code == 1
    assert check.detail.startswith(f"became wrong on size {FIRST_SIZE}: ")
    assert report.versions_changed["softmax"]["torch"] == ["2.11.0", torch.__version__]


def test_tampered_files_fail_without_being_run(kernels: Path) -> None:
    best = _rewrite_best(kernels, GOOD + "\n# edited after the export\n", update_sha=False)
    report = verify_exports(kernels)
    (check,) = report.checks
    assert check.status == "tampered" and check.file == best and report.exit_code == 1
    assert check.detail.startswith("tampered or stale: sha256 does not match the manifest")
    (kernels / "softmax" / "cpu" / "best.py").write_text(GOOD)  # restored: now the problem file is edited
    problem = kernels / "softmax" / "problem.py"
    problem.write_text(problem.read_text() + "\nATOL = 1.0\n")
    (check,) = verify_exports(kernels).checks
    assert check.status == "tampered" and "problem.py" in str(check.file) and "sha256" in check.detail


def test_an_op_exported_only_for_other_gpu_types_is_skipped_and_fails_when_strict(kernels: Path) -> None:
    key = "nvidia-h100-80gb-hbm3-sm90-132sm-80gib"
    folder = (kernels / "softmax" / "cpu").rename(kernels / "softmax" / key)
    data = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**data, "gpu_key": key, "correctness_only": False}))
    report = verify_exports(kernels)
    (check,) = report.checks
    assert check.status == "skipped" and check.detail == f"skipped: no export for cpu (exports for: {key})"
    assert report.ok and report.exit_code == 0 and not any("speed" in n for n in report.notes)
    strict = verify_exports(kernels, strict=True)
    assert not strict.ok and strict.exit_code == 1 and strict.failures == strict.checks


def test_bad_input_is_one_line_and_exit_status_2(kernels: Path, tmp_path: Path) -> None:
    with pytest.raises(VerifyError, match="no such folder"):
        verify_exports(tmp_path / "nope")
    with pytest.raises(VerifyError, match="not a folder"):
        verify_exports(kernels / "softmax" / "problem.py")
    bare = tmp_path / "bare" / "softmax"  # a problem folder as shipped: no export in it
    bare.mkdir(parents=True)
    shutil.copy(kernels / "softmax" / "problem.py", bare)
    with pytest.raises(VerifyError, match="no exported kernels here"):
        verify_exports(tmp_path / "bare")
    with pytest.raises(VerifyError, match="threshold"):
        verify_exports(kernels, threshold=1.5)
    out: list[str] = []
    err: list[str] = []
    assert verify_command(tmp_path / "bare", echo=out.append, echo_err=err.append) == 2
    assert out == [] and len(err) == 1 and err[0].startswith("kernelevo: ") and "\n" not in err[0]


def test_retune_searches_from_the_wrong_kernel_and_re_exports_what_it_repairs(kernels: Path, tmp_path: Path) -> None:
    _rewrite_best(kernels, BROKEN, update_sha=True)
    settings = Settings().updated({"search": {"budget": 5}})  # the seed and its 4 BLOCK neighbours: 128 fixes it
    report = verify_exports(kernels, settings=settings, retune=True, runs_dir=tmp_path / "runs")
    assert [c.status for c in report.checks] == ["wrong"] and not report.ok  # the gate still failed
    assert len(report.retuned) == 1 and str(kernels / "softmax" / "cpu") in report.retuned[0], report.notes
    assert (tmp_path / "runs" / "verify-softmax-cpu.db").is_file()
    export = read_export(kernels / "softmax", "cpu")
    fixed = export.sources["best.py"]
    assert fixed != BROKEN and "BLOCK = 32" not in fixed and export.manifest.correctness_only
    again = verify_exports(kernels)
    assert again.ok and [c.status for c in again.checks] == ["ok"]


def _size(speedup: float, **size: int) -> SizeResult:
    return SizeResult(size, 1e-7, 1e-6, latency_ms=0.01, reference_ms=0.01 * speedup, speedup=speedup)


def test_gpu_speed_comparison_rules() -> None:
    """The comparison alone, on made-up numbers (a real GPU measurement needs a GPU runner): best.py
    per size where it is the champion, a champion by its geometric mean."""
    a, b = {"n": 1}, {"n": 2}
    best = KernelEntry("best.py", 1, "x", [0], 1.8, None)
    champ = KernelEntry("size1.py", 2, "y", [1], 1.9, None)
    m = Manifest("op", "gpu", False, "../problem.py", "z", {}, None, None,
                 [{"size": a, "speedup": 2.0}, {"size": b, "speedup": 1.6}], best, [champ])

    def ev(geo: float, *speedups: float) -> Evaluation:
        return Evaluation("k", Verdict.CORRECT, "", "cuda", sizes=(_size(speedups[0], **a), _size(speedups[1], **b)),
                          speedup=geo)

    slow = judge_kernel("op", Path("best.py"), m, best, ev(1.0, 1.7, 0.5), True, 0.10)
    assert slow.status == "slower" and "size n=1: 1.7x, was 2x" in slow.detail and "n=2" not in slow.detail
    assert [r["compared"] for r in slow.sizes] == [True, False]  # size 1 is the champion's
    assert judge_kernel("op", Path("best.py"), m, best, ev(1.0, 1.7, 0.5), True, 0.20).status == "ok"
    assert judge_kernel("op", Path("size1.py"), m, champ, ev(1.75, 0.1, 0.1), True, 0.10).status == "ok"
    slow = judge_kernel("op", Path("size1.py"), m, champ, ev(1.5, 9.0, 9.0), True, 0.10)
    assert slow.status == "slower" and "geometric mean over sizes: 1.5x, was 1.9x" in slow.detail
    assert judge_kernel("op", Path("best.py"), m, best, ev(1.0, 1.7, 0.5), False, 0.10).status == "ok"  # CPU


def test_the_command_line_gate_exits_0_then_1(kernels: Path) -> None:
    import os
    import subprocess
    import sys

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kernelevo", "verify", str(kernels), "--device", "cpu"],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    good = run()
    assert good.returncode == 0 and good.stdout.strip().endswith("verify ok for cpu: 1 ok"), good.stderr
    _rewrite_best(kernels, BROKEN, update_sha=True)
    bad = run()
    assert bad.returncode == 1 and "became wrong on size" in bad.stdout and "verify FAILED" in bad.stdout
