"""Checks on a candidate's source before anything runs: cheap, and each reason says what to change.

These catch the known evaluator hacks by their shape. They are a first filter, not the
defence: every trick here also fails a runtime check in the worker or the controller.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from kernelevo.evaluate.verdict import Verdict

# Modules a kernel has no use for and an evaluator hack does: threads that finish work after
# the timer stops, frame and heap inspection to find expected outputs, patching the harness.
FORBIDDEN_MODULES = {
    "threading": "a thread can finish work after the timer stops",
    "_thread": "a thread can finish work after the timer stops",
    "multiprocessing": "other processes are not timed",
    "concurrent": "a thread can finish work after the timer stops",
    "asyncio": "work scheduled for later is not timed",
    "subprocess": "other processes are not timed",
    "signal": "signals interfere with the evaluator",
    "socket": "candidates may not use the network",
    "ctypes": "raw memory access can read the evaluator's state",
    "cffi": "raw memory access can read the evaluator's state",
    "gc": "heap inspection can find the evaluator's tensors",
    "inspect": "frame inspection can find the evaluator's tensors",
    "importlib": "importing the reference or the harness is not allowed",
    "builtins": "patching builtins is not allowed",
    "pickle": "deserialising objects is not allowed",
    "marshal": "deserialising code is not allowed",
    "kernelevo": "the candidate may not touch the evaluator",
}

FORBIDDEN_CALLS = {
    "eval": "dynamic code is not allowed",
    "exec": "dynamic code is not allowed",
    "compile": "dynamic code is not allowed",
    "__import__": "dynamic imports are not allowed",
    "open": "candidates may not read or write files",
    "globals": "reaching into module globals is not allowed",
    "breakpoint": "debuggers are not allowed",
}

# Dotted names (as written, after import aliases are resolved) and why they are refused.
FORBIDDEN_ATTRS = {
    "sys._getframe": "frame inspection can find the evaluator's tensors",
    "sys.settrace": "tracing hooks interfere with the evaluator",
    "sys.setprofile": "profiling hooks interfere with the evaluator",
    "sys.modules": "reaching into loaded modules is not allowed",
    "os._exit": "exiting the worker is not allowed",
    "os.kill": "signals interfere with the evaluator",
    "os.fork": "other processes are not timed",
    "os.system": "other processes are not timed",
    "os.popen": "other processes are not timed",
    "torch.compile": "torch.compile is the baseline; write the kernel yourself",
    "torch.jit": "TorchScript is not a kernel of your own",
    "torch._dynamo": "torch.compile is the baseline; write the kernel yourself",
    "torch._inductor": "torch.compile is the baseline; write the kernel yourself",
    "torch.save": "candidates may not read or write files",
    "torch.load": "candidates may not read or write files",
    "torch.set_float32_matmul_precision": "TF32 is not allowed in an fp32 problem",
}

# Lower precision inside an fp32 problem (the usual "speedup" from a downgraded kernel).
LOW_PRECISION = {
    "tl.float16", "tl.bfloat16", "tl.float8e4nv", "tl.float8e5", "tl.float8e4b15",
    "torch.float16", "torch.half", "torch.bfloat16", "triton.language.float16", "triton.language.bfloat16",
}
LOW_PRECISION_METHODS = {"half", "bfloat16"}


@dataclass(frozen=True)
class StaticResult:
    verdict: Verdict | None  # None: passed
    reason: str = ""
    line: int | None = None


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _normalise(name: str) -> str:
    return name.replace("triton.language.", "tl.")


def check_source(source: str, fp32_problem: bool, allow_tf32: bool = False) -> StaticResult:
    """The first problem found in ``source``, or a passing result."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        return StaticResult(Verdict.COMPILE_ERROR, f"syntax error on line {e.lineno}: {e.msg}", e.lineno)

    def bad(node: ast.AST, reason: str, verdict: Verdict = Verdict.REJECTED) -> StaticResult:
        line = getattr(node, "lineno", None)
        return StaticResult(verdict, f"line {line}: {reason}" if line else reason, line)

    aliases: dict[str, str] = {}  # local name -> module path it stands for
    modules: set[str] = set()  # local names bound to imported modules or their members
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")[0]
                if top in FORBIDDEN_MODULES:
                    return bad(node, f"imports {a.name}: {FORBIDDEN_MODULES[top]}")
                local = a.asname or top
                aliases[local] = a.name if a.asname else top
                modules.add(local)
        elif isinstance(node, ast.ImportFrom):
            top = (node.module or "").split(".")[0]
            if node.level or top in FORBIDDEN_MODULES:
                why = FORBIDDEN_MODULES.get(top, "relative imports reach outside the candidate")
                return bad(node, f"imports from {node.module or '.'}: {why}")
            for a in node.names:
                full = f"{node.module}.{a.name}"
                for name, why in FORBIDDEN_ATTRS.items():
                    if full == name or full.startswith(name + "."):
                        return bad(node, f"imports {full}: {why}")
                local = a.asname or a.name
                aliases[local] = full
                modules.add(local)

    model_new = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ModelNew"]
    if not model_new:
        return StaticResult(Verdict.REJECTED, "no top-level class ModelNew(nn.Module) defined")
    for base in model_new[0].bases:
        if (_dotted(base, aliases) or "").split(".")[-1] == "Model":
            return bad(base, "ModelNew subclasses the reference Model; write the forward yourself")

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in FORBIDDEN_CALLS:
                return bad(node, f"calls {node.func.id}(): {FORBIDDEN_CALLS[node.func.id]}")
            if node.func.id in ("setattr", "delattr") and node.args:
                target = node.args[0]
                if isinstance(target, ast.Name) and target.id in modules:
                    return bad(node, f"{node.func.id}() on module {target.id}: monkey-patching is not allowed")
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for t in targets:
                root = _root_name(t) if isinstance(t, ast.Attribute) else None
                if root in modules:
                    name = _dotted(t, aliases)
                    return bad(node, f"assigns {name}: monkey-patching {root} is not allowed")
        if isinstance(node, ast.Attribute):
            name = _dotted(node, aliases)
            if name:
                for forbidden, why in FORBIDDEN_ATTRS.items():
                    if name == forbidden or name.startswith(forbidden + "."):
                        return bad(node, f"uses {forbidden}: {why}")
                if fp32_problem and not allow_tf32 and _normalise(name) in LOW_PRECISION:
                    return bad(
                        node, f"uses {name} in an fp32 problem: lower precision fails the fp32 tolerance; "
                        "compute and accumulate in float32"
                    )
            if fp32_problem and not allow_tf32 and node.attr in LOW_PRECISION_METHODS:
                return bad(node, f"casts with .{node.attr}() in an fp32 problem; keep float32")
        if isinstance(node, ast.keyword) and fp32_problem and not allow_tf32:
            if node.arg == "allow_tf32" and isinstance(node.value, ast.Constant) and node.value.value:
                return bad(node.value, "allow_tf32=True in an fp32 problem; use input_precision='ieee'")
            if node.arg == "input_precision" and isinstance(node.value, ast.Constant):
                if str(node.value.value).lower().startswith("tf32"):
                    return bad(node.value, "TF32 dot in an fp32 problem; use input_precision='ieee'")
    return StaticResult(None)


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None
