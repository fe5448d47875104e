"""Checks on a candidate's source before anything runs, for what cannot be judged at run time.

Everything a candidate *does* is judged while it runs: lower precision by the tolerance,
patching by identity checks, threads, frames, files, processes and the network by the
worker's confinement, PyTorch doing the work by the compute poison. Judging the text instead
would refuse honest code that merely names ``torch.float16`` in a dtype branch, and pass a
hack spelled another way. What is left here: the module must parse, and define its own
``ModelNew`` rather than subclass the reference (whose forward would be the reference's).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from kernelevo.evaluate.verdict import Verdict


@dataclass(frozen=True)
class StaticResult:
    verdict: Verdict | None  # None: passed
    reason: str = ""
    line: int | None = None


def check_source(source: str) -> StaticResult:
    """The first problem found in ``source``, or a passing result."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        return StaticResult(Verdict.COMPILE_ERROR, f"syntax error on line {e.lineno}: {e.msg}", e.lineno)
    model_new = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ModelNew"]
    if not model_new:
        return StaticResult(Verdict.REJECTED, "no top-level class ModelNew(nn.Module) defined")
    for base in model_new[0].bases:
        name = base.attr if isinstance(base, ast.Attribute) else base.id if isinstance(base, ast.Name) else ""
        if name == "Model":
            line = base.lineno
            return StaticResult(Verdict.REJECTED, f"line {line}: ModelNew subclasses the reference Model; write "
                                "the forward yourself", line)
    return StaticResult(None)
