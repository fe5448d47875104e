"""Static checks: only what cannot be judged at run time, and never by what the code merely names."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernelevo.evaluate.static import check_source
from kernelevo.evaluate.verdict import Verdict

GOOD = (Path(__file__).parent / "candidates" / "softmax_good.py").read_text()
MODEL = "\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        return x\n"
IMPORTS = "import torch\nimport torch.nn as nn\nimport triton\nimport triton.language as tl\n"


def test_good_kernel_passes() -> None:
    assert check_source(GOOD).verdict is None


@pytest.mark.parametrize(
    "snippet",
    [
        # Dtype-generic code names low precision without using it on fp32 inputs.
        "ACC = {torch.float16: tl.float32, torch.bfloat16: tl.float32}",
        "def pick(x):\n    return tl.float16 if x.dtype == torch.half else tl.float32",
        "class Cfg:\n    half = False",  # an attribute named half is not a cast
        "if False:\n    y = x.half()",  # a dead branch
        "torch.backends.cuda.matmul.allow_tf32 = False",  # switching TF32 off is not patching
        "import inspect",  # what a module imports is judged by what it does, at run time
        "f = torch.compile",  # likewise: torch.compile is plain, poisoned PyTorch in the judge
    ],
)
def test_code_is_not_judged_by_the_names_it_mentions(snippet: str) -> None:
    assert check_source(IMPORTS + snippet + "\n" + MODEL).verdict is None


def test_subclassing_the_reference_is_refused_with_its_line() -> None:
    src = IMPORTS + "\nclass Model(nn.Module):\n    pass\n\n\nclass ModelNew(Model):\n    pass\n"
    r = check_source(src)
    assert r.verdict is Verdict.REJECTED and "subclasses the reference" in r.reason and r.line == 10
    dotted = IMPORTS + "import problem\n\n\nclass ModelNew(problem.Model):\n    pass\n"
    assert check_source(dotted).verdict is Verdict.REJECTED
    assert check_source(IMPORTS + "\nclass ModelNew(nn.Module):\n    pass\n").verdict is None


def test_syntax_error_and_missing_model() -> None:
    r = check_source("def f(:\n")
    assert r.verdict is Verdict.COMPILE_ERROR and r.line == 1 and "syntax error on line 1" in r.reason
    r = check_source("import torch\n")
    assert r.verdict is Verdict.REJECTED and "ModelNew" in r.reason
    nested = "def make():\n    class ModelNew:\n        pass\n"  # not at the top level: not the module's
    assert check_source(nested).verdict is Verdict.REJECTED
