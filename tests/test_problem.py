"""Problem loading: KernelBench's format, sizes, overrides, and one-line errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernelevo.problem import ProblemError, load_problem, parse_override
from kernelevo.reference import build_reference

GOOD = """
import torch
import torch.nn as nn

batch_size = 16
dim = 64
shape = (batch_size, dim)


class Model(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale


def get_inputs():
    return [torch.randn(*shape)]


def get_init_inputs():
    return [2.0]
"""


def write(tmp_path: Path, text: str, name: str = "p.py") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_kernelbench_file_loads_unchanged(tmp_path: Path) -> None:
    p = load_problem(write(tmp_path, GOOD))
    assert p.sizes == ({},) and p.atol is None and p.rtol is None
    ref = build_reference(p)
    assert ref.cases[0].draws[0].expected[0].shape == (16, 64)


def test_sizes_override_globals_and_derived_globals_follow(tmp_path: Path) -> None:
    p = load_problem(write(tmp_path, GOOD + "\nSIZES = [{'batch_size': 3}, {'dim': 5}]\n"))
    assert p.sizes == ({"batch_size": 3}, {"dim": 5})
    shapes = [c.draws[0].expected[0].shape for c in build_reference(p).cases]
    assert shapes == [(3, 64), (16, 5)]


def test_set_applies_to_every_size_and_wins(tmp_path: Path) -> None:
    p = load_problem(write(tmp_path, GOOD + "\nSIZES = [{'batch_size': 3}, {'dim': 5}]\n"), {"dim": 7})
    assert p.sizes == ({"batch_size": 3, "dim": 7}, {"dim": 7})
    assert [c.draws[0].expected[0].shape for c in build_reference(p).cases] == [(3, 7), (16, 7)]


def test_cpu_sizes_are_used_on_cpu_only(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "\nSIZES = [{'batch_size': 4096}]\nCPU_SIZES = [{'batch_size': 2}]\n")
    assert load_problem(path, device="cpu").sizes == ({"batch_size": 2},)
    assert load_problem(path, device="cuda").sizes == ({"batch_size": 4096},)


def test_tolerance_globals(tmp_path: Path) -> None:
    p = load_problem(write(tmp_path, GOOD + "\nATOL = 1e-3\nRTOL = 0\n"))
    assert (p.atol, p.rtol) == (1e-3, 0.0)


def test_parse_override() -> None:
    assert parse_override("dim=128") == ("dim", 128)
    assert parse_override("shape=(2, 3)") == ("shape", (2, 3))
    assert parse_override("mode=fast") == ("mode", "fast")
    with pytest.raises(ProblemError, match="expected name=value"):
        parse_override("nonsense")


BAD_FILES = {
    "syntax error": ("def f(:\n", "syntax error on line 1"),
    "no Model": (GOOD.replace("class Model(", "class Other("), "no class Model"),
    "no get_inputs": (GOOD.replace("def get_inputs", "def other_inputs"), "no function get_inputs()"),
    "raises at import": ("raise RuntimeError('nope')\n" + GOOD, "running the file failed: RuntimeError: nope"),
    "size key not a global": (GOOD + "\nSIZES = [{'batchsize': 3}]\n", "'batchsize', which is not a global"),
    "sizes not a list": (GOOD + "\nSIZES = {'dim': 3}\n", "SIZES must be a non-empty list"),
    "bad ATOL": (GOOD + "\nATOL = 'tight'\n", "ATOL must be a non-negative number"),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_bad_files_fail_in_one_line(tmp_path: Path, case: str) -> None:
    text, expected = BAD_FILES[case]
    path = write(tmp_path, text)
    with pytest.raises(ProblemError) as info:
        load_problem(path)
    message = str(info.value)
    assert expected in message and str(path) in message and "\n" not in message


BAD_AT_RUN = {
    "get_inputs raises": (GOOD.replace("return [torch.randn(*shape)]", "raise ValueError('no data')"),
                          "get_inputs() raised ValueError: no data"),
    "non-tensor output": (GOOD.replace("return x * self.scale", "return 3"), "returned int; it must return tensors"),
    "Model() raises": (GOOD.replace("self.scale = scale", "raise TypeError('bad arg')"), "raised TypeError: bad arg"),
}


@pytest.mark.parametrize("case", BAD_AT_RUN, ids=list(BAD_AT_RUN))
def test_bad_problems_fail_when_building_the_reference(tmp_path: Path, case: str) -> None:
    text, expected = BAD_AT_RUN[case]
    path = write(tmp_path, text)
    with pytest.raises(ProblemError) as info:
        build_reference(load_problem(path))
    assert expected in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_unknown_set(tmp_path: Path) -> None:
    with pytest.raises(ProblemError, match="no such problem file"):
        load_problem(tmp_path / "absent.py")
    with pytest.raises(ProblemError, match="--set nope: no global 'nope'"):
        load_problem(write(tmp_path, GOOD), {"nope": 1})


def test_shipped_problems_load_with_cpu_and_gpu_sizes() -> None:
    root = Path(__file__).parents[1] / "kernels"
    problems = sorted(root.glob("*/problem.py"))
    assert len(problems) >= 8
    for path in problems:
        cpu, gpu = load_problem(path, device="cpu"), load_problem(path, device="cuda")
        assert len(cpu.sizes) >= 3 and len(gpu.sizes) >= 3, path


def test_in_place_forward_does_not_corrupt_the_stored_inputs(tmp_path: Path) -> None:
    p = load_problem(write(tmp_path, GOOD.replace("return x * self.scale", "return x.relu_() * self.scale")))
    case = build_reference(p).cases[0]
    assert bool((case.draws[0].inputs[0] < 0).any()), "stored inputs must keep the values the forward saw"


def test_random_forward_is_refused(tmp_path: Path) -> None:
    src = GOOD.replace("return x * self.scale", "return torch.nn.functional.dropout(x, 0.5, training=True)")
    with pytest.raises(ProblemError, match="draws random numbers"):
        build_reference(load_problem(write(tmp_path, src)))


def test_get_init_inputs_must_return_a_list(tmp_path: Path) -> None:
    src = GOOD.replace("return [2.0]", "return None")
    with pytest.raises(ProblemError, match="get_init_inputs\\(\\) must return a list"):
        build_reference(load_problem(write(tmp_path, src)))


def test_output_that_ignores_its_inputs_is_flagged(tmp_path: Path) -> None:
    src = GOOD.replace("return x * self.scale", "return torch.zeros_like(x)")
    ref = build_reference(load_problem(write(tmp_path, src)))
    assert len(ref.warnings) == 1 and "a kernel returning a constant passes" in ref.warnings[0]
    assert build_reference(load_problem(write(tmp_path, GOOD, "ok.py"))).warnings == ()
