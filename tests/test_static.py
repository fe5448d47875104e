"""Static checks: each construct is refused with a reason, and ordinary kernels are not."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernelevo.evaluate.static import check_source
from kernelevo.evaluate.verdict import Verdict

GOOD = (Path(__file__).parent / "candidates" / "softmax_good.py").read_text()
MODEL = "\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        return x\n"


def test_good_kernel_passes() -> None:
    assert check_source(GOOD, fp32_problem=True).verdict is None


@pytest.mark.parametrize(
    "snippet,needle",
    [
        ("acc = tl.dot(a, b, input_precision='tf32')", "TF32"),
        ("acc = tl.dot(a, b, allow_tf32=True)", "allow_tf32"),
        ("y = x.to(tl.bfloat16)", "fp32 problem"),
        ("torch.set_float32_matmul_precision('high')", "TF32"),
        ("f = torch.compile(g)", "torch.compile"),
        ("import subprocess", "other processes"),
        ("from torch import compile", "torch.compile"),
        ("sys = __import__('sys')", "dynamic imports"),
        ("setattr(torch, 'matmul', None)", "monkey-patching"),
        ("triton.testing.do_bench = None", "monkey-patching"),
    ],
)
def test_refused_in_fp32(snippet: str, needle: str) -> None:
    src = "import torch\nimport torch.nn as nn\nimport triton\nimport triton.language as tl\n" + snippet + MODEL
    result = check_source(src, fp32_problem=True)
    assert result.verdict is Verdict.REJECTED and needle in result.reason, result.reason
    assert result.line == 5


def test_precision_rules_depend_on_problem_and_opt_in() -> None:
    src = "import torch\nimport torch.nn as nn\nimport triton.language as tl\ny = x.to(tl.float16)\n" + MODEL
    assert check_source(src, fp32_problem=False).verdict is None
    tf32 = "import torch\nimport torch.nn as nn\nimport triton.language as tl\n"
    tf32 += "z = tl.dot(a, b, input_precision='tf32')\n"
    assert check_source(tf32 + MODEL, fp32_problem=True, allow_tf32=True).verdict is None


def test_attribute_assignment_on_self_is_fine() -> None:
    src = "import torch\nimport torch.nn as nn\n\nclass ModelNew(nn.Module):\n    def __init__(self):\n" \
          "        super().__init__()\n        self.weight = nn.Parameter(torch.ones(3))\n"
    assert check_source(src, fp32_problem=True).verdict is None


def test_syntax_error_and_missing_model() -> None:
    r = check_source("def f(:\n", True)
    assert r.verdict is Verdict.COMPILE_ERROR and r.line == 1
    r = check_source("import torch\n", True)
    assert r.verdict is Verdict.REJECTED and "ModelNew" in r.reason
