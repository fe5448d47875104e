"""The evaluator's promises that are not a single hack: isolation, ordering, environment, draws."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from kernelevo.candidate import Candidate
from kernelevo.evaluate.evaluator import Evaluator
from kernelevo.evaluate.plan import make_plan
from kernelevo.evaluate.verdict import Verdict
from kernelevo.problem import load_problem
from kernelevo.reference import build_reference, randomise_
from kernelevo.settings import EvalSettings
from tests.adversarial import HEADER
from tests.conftest import CANDIDATES, PROBLEMS

GOOD_FORWARD = "\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        return softmax(x)\n"


def _logging_problem(tmp_path: Path, log: Path) -> Path:
    """softmax_small whose reference forward appends its pid to ``log``."""
    src = (PROBLEMS / "softmax_small.py").read_text().replace(
        "        return torch.softmax(x, dim=-1)",
        f"        open({str(log)!r}, 'a').write(f'ref {{__import__(\"os\").getpid()}}\\n')\n"
        "        return torch.softmax(x, dim=-1)",
    )
    path = tmp_path / "problem.py"
    path.write_text(src)
    return path


def _job_log(ev: Evaluator) -> str:
    return "".join(p.read_text() for p in ev._dir.glob("candidate-*/log"))


def test_reference_runs_first_and_never_in_the_candidates_process(tmp_path: Path) -> None:
    log = tmp_path / "order.log"
    problem = load_problem(_logging_problem(tmp_path, log))
    cand = HEADER + "\nprint(f'candidate {__import__(\"os\").getpid()}', flush=True)\n"
    with Evaluator(problem, "cpu", EvalSettings(keep_jobs=True)) as ev:
        log.write_text("")
        result = ev.evaluate(Candidate.from_source(cand + GOOD_FORWARD, "logger"))
        cand_pid = _job_log(ev).split("candidate ")[1].split()[0]
    assert result.verdict is Verdict.CORRECT, result.reason
    pids = log.read_text().split()[1::2]
    me = str(os.getpid())
    # every checked draw's reference output was made here, before the candidate's worker existed...
    checked = sum(len(sp.calls) for sp in make_plan(ev.reference, result.seed, 0.25, 3.0).sizes)
    assert pids[:checked] == [me] * checked
    # ...and the reference never ran in the candidate's process; it was timed in a third one
    assert cand_pid not in pids and cand_pid != me
    assert set(pids) - {me}, "the reference is timed in a worker of its own"


def test_candidate_environment_has_no_credentials(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "should-not-leak")
    monkeypatch.setenv("HF_TOKEN", "should-not-leak")
    cand = HEADER + "\nimport os\nprint('ENV', ' '.join(sorted(os.environ)), flush=True)\n"
    with Evaluator(load_problem(PROBLEMS / "softmax_small.py"), "cpu", EvalSettings(keep_jobs=True)) as ev:
        result = ev.evaluate(Candidate.from_source(cand + GOOD_FORWARD, "env_reader"))
        names = set(_job_log(ev).split("ENV ")[1].split("\n")[0].split())
    assert result.verdict is Verdict.CORRECT, result.reason
    assert "PATH" in names and "TMPDIR" in names
    assert not names & {"OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN"}


def test_each_candidate_gets_a_fresh_process(evaluators) -> None:
    ev = evaluators("softmax_small")
    leaver = HEADER + "\ntorch.nn.functional._left_behind = 1\n" + GOOD_FORWARD
    finder = HEADER + (
        "\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n"
        "        y = softmax(x)\n"
        "        return torch.zeros_like(y) if hasattr(torch.nn.functional, '_left_behind') else y\n"
    )
    assert ev.evaluate(Candidate.from_source(leaver, "leaver")).verdict is Verdict.CORRECT
    result = ev.evaluate(Candidate.from_source(finder, "finder"))
    assert result.verdict is Verdict.CORRECT, result.reason


def test_errors_name_the_candidate_line(evaluators) -> None:
    ev = evaluators("softmax_small")
    src = HEADER + "\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        raise ValueError('boom')\n"
    result = ev.evaluate(Candidate.from_source(src, "raiser"))
    assert result.verdict is Verdict.RUNTIME_ERROR
    assert "ValueError: boom" in result.reason and "candidate line" in result.reason
    assert result.error and "boom" in result.error


def test_syntax_and_import_errors_are_compile_errors(evaluators) -> None:
    ev = evaluators("softmax_small")
    bad = ev.evaluate(Candidate.from_source("def broken(:\n", "syntax"))
    assert bad.verdict is Verdict.COMPILE_ERROR and "line 1" in bad.reason
    missing = ev.evaluate(Candidate.from_source("import no_such_module_xyz\n" + GOOD_FORWARD, "imp"))
    assert missing.verdict is Verdict.COMPILE_ERROR and "no_such_module_xyz" in missing.reason


def test_state_dict_mismatch_is_rejected(evaluators) -> None:
    ev = evaluators("layernorm_small")
    src = (CANDIDATES / "layernorm_good.py").read_text().replace("self.ln = nn.LayerNorm", "self.norm = nn.LayerNorm")
    src = src.replace("self.ln.", "self.norm.")
    result = ev.evaluate(Candidate.from_source(src, "renamed"))
    assert result.verdict is Verdict.REJECTED and "state_dict" in result.reason


def test_reference_draws_are_distinct_and_weights_random() -> None:
    problem = load_problem(PROBLEMS / "layernorm_small.py")
    ref = build_reference(problem, "cpu", seed=3)
    plan = make_plan(ref, 3, 0.25, 3.0)
    for sp in plan.sizes:
        digests = [c.digest for c in sp.calls]
        assert len(digests) >= 2 and len(set(digests)) == len(digests)
        w = sp.state_a["ln.weight"]
        assert not torch.equal(w, torch.ones_like(w)), "LayerNorm's default weight must be randomised"
        assert not torch.equal(w, sp.state_b["ln.weight"]), "the second weight draw differs from the first"
    assert any(sp.extra for sp in plan.sizes), "one size outside the declared ones"
    again = make_plan(ref, 3, 0.25, 3.0)
    other = make_plan(ref, 4, 0.25, 3.0)
    first = [c.expected[0] for sp in plan.sizes for c in sp.calls]
    assert all(torch.equal(a, c.expected[0]) for a, c in zip(first, (c for sp in again.sizes for c in sp.calls),
                                                               strict=True)), "the same seed gives the same plan"
    assert not torch.equal(plan.sizes[0].calls[0].inputs[0], other.sizes[0].calls[0].inputs[0])


def test_randomise_keeps_nonnegative_tensors_positive() -> None:
    bn = torch.nn.BatchNorm1d(64)
    randomise_(bn, torch.Generator().manual_seed(0))
    assert bool((bn.running_var > 0).all()) and not torch.equal(bn.running_var, torch.ones(64))
    assert not torch.equal(bn.bias.detach(), torch.zeros(64))


def test_flops_are_counted_for_matmul(tmp_path: Path) -> None:
    p = tmp_path / "mm.py"
    p.write_text(
        "import torch\nimport torch.nn as nn\nM = 8\nK = 16\nN = 4\n"
        "class Model(nn.Module):\n    def forward(self, a, b):\n        return a @ b\n"
        "def get_inputs():\n    return [torch.randn(M, K), torch.randn(K, N)]\n"
        "def get_init_inputs():\n    return []\n"
    )
    ref = build_reference(load_problem(p))
    assert ref.cases[0].flops == 2 * 8 * 16 * 4
    assert ref.cases[0].min_bytes == 4 * (8 * 16 + 16 * 4 + 8 * 4)
    assert ref.compute_ops == {"mm"}
    assert make_plan(ref, 0, 0.25, 3.0, extra=False).sizes[0].work == 2 * 8 * 16 * 4


def test_timeout_setting_is_respected_per_evaluator() -> None:
    s = EvalSettings(timeout_s=2.0)
    with Evaluator(load_problem(PROBLEMS / "softmax_small.py"), "cpu", s) as ev:
        result = ev.evaluate(Candidate.from_source(HEADER + "\nimport time\ntime.sleep(30)\n" + GOOD_FORWARD, "slow"))
    assert result.verdict is Verdict.TIMEOUT and "2 s" in result.reason
    assert result.elapsed_s < 2.0 + 3.0


def test_compile_baseline_times_the_compiled_reference_too(evaluators) -> None:
    """--compile-baseline: the reference is also timed under torch.compile, in the same worker."""
    ev = evaluators("softmax_small", compile_baseline=True)
    r = ev.evaluate(Candidate.from_file(CANDIDATES / "softmax_good.py"))
    assert r.verdict.value == "correct", r.reason
    assert all(s.compiled_ms and s.compiled_ms > 0 for s in r.sizes)  # measured in blocks beside the eager one
    assert r.speedup_compiled is None and all(s.compiled_speedup is None for s in r.sizes)  # but no speed on a CPU
    assert all(s.blocks == 3 for s in r.sizes)  # three CPU reps: one per block
    compiles = ev.baseline_compiles
    assert compiles >= len(r.sizes)  # compiled in this run, once per size (earlier tests may share it)
    again = ev.evaluate(Candidate.from_file(CANDIDATES / "softmax_good.py"))
    assert again.ok and again.sizes[0].compiled_ms and ev.baseline_compiles == compiles  # reused, not recompiled


def test_scratch_folders_of_dead_runs_are_swept_at_start(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    from kernelevo.evaluate.evaluator import OWNER_FILE, SCRATCH_PREFIX, _process_id, sweep_stale

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    dead_id = _process_id(child.pid)
    child.wait()
    dead, live, old, young = (tmp_path / f"{SCRATCH_PREFIX}{n}" for n in ("dead", "live", "old", "young"))
    for d in (dead, live, old, young):
        (d / "candidate-1").mkdir(parents=True)
    (dead / OWNER_FILE).write_text(dead_id)
    (live / OWNER_FILE).write_text(_process_id(os.getpid()))
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    other = tmp_path / "someone-elses-folder"
    other.mkdir()
    assert sorted(sweep_stale(tmp_path)) == sorted([dead, old])
    assert live.exists() and young.exists() and other.exists() and not dead.exists() and not old.exists()
    assert _process_id(os.getpid()) != f"{os.getpid()} ?"  # the start time is read, so a reused pid differs


def test_evaluators_on_two_threads_of_one_process_take_turns_and_judge_right(evaluators, monkeypatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from kernelevo.evaluate import evaluator as evaluator_mod

    a, b = evaluators("softmax_small"), evaluators("softmax_small", seed=7)
    good = Candidate.from_file(CANDIDATES / "softmax_good.py")
    held: list[bool] = []
    real = Evaluator._judge

    def judge(self, *args):  # noqa: ANN001, ANN202
        held.append(evaluator_mod._TURN._is_owned())  # inside the turn, whichever thread judges
        return real(self, *args)

    monkeypatch.setattr(Evaluator, "_judge", judge)
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda ev: ev.evaluate(good), [a, b, a, b]))
    assert [e.verdict for e in got] == [Verdict.CORRECT] * 4, [e.reason for e in got]
    assert held == [True] * 4
