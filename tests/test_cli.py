"""The command line as a user runs it: exit codes, one-line errors, JSON lines in order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.adversarial import HANG_IN_FORWARD, HEADER
from tests.conftest import CANDIDATES, PROBLEMS, ROOT


def kernelevo(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "kernelevo", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


def test_json_lines_in_order_and_a_hang_does_not_stop_the_rest(tmp_path: Path) -> None:
    hang = tmp_path / "hang.py"
    hang.write_text(HEADER + HANG_IN_FORWARD)
    good = CANDIDATES / "softmax_good.py"
    r = kernelevo("check", str(PROBLEMS / "softmax_small.py"), str(good), str(hang), str(good),
                  "--json", "--timeout", "4", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["verdict"] for row in rows] == ["correct", "timeout", "correct"]
    assert [row["candidate"] for row in rows] == [str(good), str(hang), str(good)]
    for key in ("verdict", "reason", "sizes", "speedup", "device"):
        assert key in rows[0]
    assert rows[0]["device"] == "cpu" and rows[0]["speedup"] is None  # no speed claimed from the interpreter
    assert rows[0]["timing"] == "cpu-interpreter" and "no speedup on a CPU" in rows[0]["notes"][0]
    assert {"size", "max_abs_err", "max_rel_err", "latency_ms", "reference_ms"} <= set(rows[0]["sizes"][0])
    assert rows[1]["speedup"] is None


def test_human_output_names_verdict_and_reason() -> None:
    r = kernelevo("check", str(PROBLEMS / "softmax_small.py"), str(CANDIDATES / "layernorm_good.py"))
    assert r.returncode == 0, r.stderr
    assert "runtime_error" in r.stdout and "TypeError" in r.stdout


def test_set_shrinks_a_problem(tmp_path: Path) -> None:
    r = kernelevo("check", str(PROBLEMS / "softmax_small.py"), str(CANDIDATES / "softmax_good.py"),
                  "--set", "batch_size=2", "--set", "dim=7", "--json")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["verdict"] == "correct"
    assert [s["size"] for s in row["sizes"]] == [{"batch_size": 2, "dim": 7}]


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("class Model(:\n")
    cases = [
        (["check", str(tmp_path / "missing.py"), str(CANDIDATES / "softmax_good.py")], "no such problem file"),
        (["check", str(broken), str(CANDIDATES / "softmax_good.py")], "syntax error on line 1"),
        (["check", str(PROBLEMS / "softmax_small.py"), str(tmp_path / "nope.py")], "no such candidate file"),
        (["check", str(PROBLEMS / "softmax_small.py"), str(CANDIDATES / "softmax_good.py"), "--set", "zzz=1"],
         "no global 'zzz'"),
        (["check", str(PROBLEMS / "softmax_small.py"), str(CANDIDATES / "softmax_good.py"), "--timeout", "-1"],
         "--timeout must be positive"),
    ]
    for args, needle in cases:
        r = kernelevo(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr, r.stderr
        assert r.stdout == ""


def test_bad_problem_at_reference_time_is_one_line(tmp_path: Path) -> None:
    p = tmp_path / "p.py"
    p.write_text((PROBLEMS / "softmax_small.py").read_text().replace(
        "return [torch.randn(batch_size, dim)]", "raise KeyError('x')"))
    r = kernelevo("check", str(p), str(CANDIDATES / "softmax_good.py"))
    assert r.returncode == 2 and "get_inputs() raised KeyError" in r.stderr and "Traceback" not in r.stderr
    r = kernelevo("check", str(p), str(CANDIDATES / "softmax_good.py"), "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_a_problem_too_large_for_the_machine_suggests_shrinking_it(tmp_path: Path) -> None:
    f = tmp_path / "huge.py"
    f.write_text("import torch\nimport torch.nn as nn\nbatch = 1 << 20\ndim = 1 << 20\nKEEP = 3\n"
                 "class Model(nn.Module):\n    def forward(self, x):\n        return x * 2\n"
                 "def get_inputs():\n    return [torch.randn(batch, dim)]\ndef get_init_inputs():\n    return []\n")
    r = kernelevo("check", str(f), str(CANDIDATES / "softmax_good.py"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "ran out of memory" in r.stderr and "--set batch=65536 --set dim=65536" in r.stderr


def test_help_shows_plain_types_and_defaults() -> None:
    for command in ("check", "optimize", "show"):
        r = kernelevo(command, "--help")
        assert r.returncode == 0, r.stderr
        for leak in ("<bool>", "<list[", "<path>", "<str>", "``", ":class:"):
            assert leak not in r.stdout, (command, leak)
    r = kernelevo("optimize", "--help")
    from kernelevo.settings import Settings

    budget = Settings().search.budget
    assert "--budget N" in r.stdout and f"(default {budget})" in r.stdout and "--set NAME=VALUE" in r.stdout
    assert "--timeout SECONDS" in r.stdout and "--db DB" in r.stdout


def test_check_says_what_it_is_doing_when_asked_and_not_in_pipes_by_default() -> None:
    args = ("check", str(PROBLEMS / "softmax_small.py"), str(CANDIDATES / "softmax_good.py"), "--json")
    r = kernelevo(*args, "--progress")
    assert r.returncode == 0, r.stderr
    assert "kernelevo: building the reference of softmax_small (2 sizes, on cpu) ..." in r.stderr
    assert f"kernelevo: checking {CANDIDATES / 'softmax_good.py'} (1/1) ..." in r.stderr
    assert json.loads(r.stdout)["verdict"] == "correct"  # stdout stays one JSON object per line
    quiet = kernelevo(*args)
    assert "building the reference" not in quiet.stderr  # not a terminal: silent unless asked
