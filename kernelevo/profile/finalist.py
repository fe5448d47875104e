"""Nsight Compute on a finalist: a separate run of one candidate on one size, never mixed
into timings (ncu locks clocks and flushes caches, so its durations explain, they do not rank)."""

from __future__ import annotations

import ast
import json
import os
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from kernelevo.evaluate.launches import cuda_kernel_names
from kernelevo.evaluate.sandbox import worker_env
from kernelevo.evaluate.verdict import Evaluation
from kernelevo.problem import Problem
from kernelevo.profile.ncu import TIMED_RANGE, NcuSummary, exact_names, run_ncu
from kernelevo.profile.render import render_profile
from kernelevo.profile.triton_meta import KernelMeta

_SCRIPT = """\
import importlib.util, json
import torch
from kernelevo.problem import load_problem
from kernelevo.reference import fp32_precision

args = json.loads(ARGS)
fp32 = fp32_precision(args["allow_tf32"])  # the precision the timed run used
fp32.__enter__()
problem = load_problem(args["problem"], args["overrides"], device="cuda")
module = problem.namespace(args["size"])
torch.manual_seed(0)
reference = module.Model(*module.get_init_inputs()).cuda()
spec = importlib.util.spec_from_file_location("candidate", args["candidate"])
candidate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(candidate)
model = candidate.ModelNew(*module.get_init_inputs()).cuda()
model.load_state_dict(reference.state_dict())
inputs = [x.cuda() if isinstance(x, torch.Tensor) else x for x in module.get_inputs()]
with torch.no_grad():
    for _ in range(3):  # compiles and autotuning happen here, outside the profiled range
        model(*inputs)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_push(TIMED_RANGE)  # ncu profiles every launch of this one call
    model(*inputs)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_pop()
"""


def _jit_decorated(fn: ast.FunctionDef) -> bool:
    """``@triton.jit``, ``@jit``, ``@triton.jit(...)`` over any lines (autotune/heuristics above it or not)."""
    for d in fn.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        name = target.attr if isinstance(target, ast.Attribute) else target.id if isinstance(target, ast.Name) else ""
        if name == "jit":
            return True
    return False


def own_kernel_names(source: str) -> set[str]:
    """The kernel names the candidate defines (Triton functions, CUDA __global__s, CuPy kernels)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        tree = ast.Module(body=[], type_ignores=[])
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and _jit_decorated(n)}
    return names | cuda_kernel_names(source)


def own_kernel_regex(source: str) -> str | None:
    """An anchored regex of exactly those names (``_mean`` must not match ``_mean_kernel``)."""
    names = own_kernel_names(source)
    return exact_names(names) if names else None


def profile_finalist(problem: Problem, size: dict[str, Any] | None, source: str, timeout_s: float = 300,
                     clock_control: str = "base", allow_tf32: bool = False) -> list[NcuSummary] | str:
    """ncu summaries of every launch of the candidate's own kernels in one call on ``size`` (None:
    the problem's largest, its last), compiled as the timed run compiled them (``allow_tf32``), or
    a one-line reason."""
    if size is None:
        size = problem.sizes[-1] if problem.sizes else {}
    regex = own_kernel_regex(source)
    if regex is None:  # ncu would profile PyTorch's kernels and call them the candidate's
        return "no @triton.jit or __global__ kernel names found in the candidate"
    with tempfile.TemporaryDirectory(prefix="kernelevo-ncu-") as tmp:
        d = Path(tmp)
        (d / "candidate.py").write_text(source)
        args = {"problem": str(problem.path.resolve()), "overrides": problem.overrides, "size": size,
                "candidate": str(d / "candidate.py"), "allow_tf32": allow_tf32}
        script = d / "profile.py"
        script.write_text(f"ARGS = {json.dumps(json.dumps(args))}\nTIMED_RANGE = {TIMED_RANGE!r}\n" + _SCRIPT)
        env = worker_env("cuda", allow_tf32=allow_tf32)  # as the evaluator's workers: no keys, same compile
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        return run_ncu(script, d, regex, timeout_s=timeout_s, env=env, clock_control=clock_control,
                       major=_major())


def _major() -> int | None:
    try:
        import torch

        return torch.cuda.get_device_capability()[0] if torch.cuda.is_available() else None
    except Exception:
        return None


def ncu_json(ncu: list[NcuSummary] | str) -> list[dict[str, Any]] | str:
    """ncu's result as stored in a profile or a run: the summaries as dicts, or the reason."""
    return ncu if isinstance(ncu, str) else [asdict(n) for n in ncu]


def with_ncu(ev: Evaluation, problem: Problem, source: str, allow_tf32: bool = False) -> Evaluation:
    """The evaluation with Nsight Compute's view of the largest size in its profile, the text
    rendered again from all the raw values."""
    ncu = profile_finalist(problem, None, source, allow_tf32=allow_tf32)
    profile = {**(ev.profile or {}), "ncu": ncu_json(ncu)}
    kernels = [KernelMeta(**k) for k in profile.get("kernels", [])]
    device = (profile.get("ceilings") or {}).get("key", "")
    return replace(ev, profile=profile, profile_text=render_profile(profile.get("sizes", []), kernels, ncu, device))
