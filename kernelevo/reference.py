"""The reference side of a problem: seeded weights, input draws, reference outputs, FLOPs and bytes.

Everything here runs in the controller before any candidate code is imported, and the
expected outputs never leave this process: a candidate's worker gets inputs and weights only.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from kernelevo.problem import Problem, ProblemError, flatten_outputs
from kernelevo.work import WorkRecorder


@contextmanager
def fp32_precision(allow_tf32: bool) -> Iterator[None]:
    """Pin PyTorch's TF32 switches. cuDNN convolutions default to TF32 on Ampere and later,
    so an "fp32" reference is only fp32 with this set."""
    old = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.set_float32_matmul_precision("high" if allow_tf32 else "highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old[:2]
        torch.set_float32_matmul_precision(old[2])


def digest(values: Any) -> str:
    """SHA-256 of every tensor's bytes, shape and dtype (and of the other values' reprs)."""
    h = hashlib.sha256()
    for v in flatten_outputs(values):
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(v).encode())
    return h.hexdigest()


def to_device(values: Any, device: str, copy: bool = False) -> Any:
    """``values`` on ``device``; ``copy=True`` always gives new tensors (``.to`` is a no-op on the
    same device, so a forward that updates its inputs in place would change the originals)."""
    if isinstance(values, torch.Tensor):
        return values.to(device, copy=copy)
    if isinstance(values, (list, tuple)):
        return type(values)(to_device(v, device, copy) for v in values)
    return values


def randomise_(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Replace every floating parameter and buffer with seeded random values of the same
    scale, so a kernel that ignores a weight (LayerNorm's starts at ones) cannot pass by luck.
    Non-negative tensors (variances, scales) stay positive."""
    with torch.no_grad():
        tensors = list(module.named_parameters()) + list(module.named_buffers())
        for _, t in tensors:
            if not t.is_floating_point() or t.numel() == 0:
                continue
            src = t.detach().to(torch.float32).cpu()
            if bool((src >= 0).all()) and float(src.max()) > 0:
                new = src * (0.5 + torch.rand(src.shape, generator=gen))
            else:
                std = float(src.std()) if src.numel() > 1 else 0.0
                scale = 0.5 * std if std > 0 else 0.5 * max(float(src.abs().mean()), 0.1)
                new = src + scale * torch.randn(src.shape, generator=gen)
            t.copy_(new.to(t.dtype))


def _rescaled(inputs: list[Any], gen: torch.Generator) -> list[Any]:
    """Float inputs multiplied by a random positive factor per tensor, in [e^-1, e]."""
    out = []
    for v in inputs:
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            factor = float(torch.empty(()).uniform_(-1.0, 1.0, generator=gen).exp())
            v = v * factor
        out.append(v)
    return out


@dataclass(frozen=True)
class Draw:
    """One call's inputs (on the CPU) and the reference's flattened outputs for them."""

    inputs: tuple[Any, ...]
    digest: str
    expected: tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Case:
    """One size: weights, the correctness draws (called in order on one model), and a draw
    kept back for timing whose output is checked after the last timed call."""

    index: int
    size: dict[str, Any]
    init_inputs: tuple[Any, ...]
    state_dict: dict[str, torch.Tensor]
    draws: tuple[Draw, ...]
    timing: Draw
    final_buffers: dict[str, torch.Tensor]
    stateful: bool  # forward changes buffers (BatchNorm in training): timing output not checked
    flops: int
    min_bytes: int  # inputs + outputs + weights, each read or written once


@dataclass(frozen=True)
class Reference:
    problem: Problem
    device: str
    allow_tf32: bool
    seed: int
    cases: tuple[Case, ...]
    compute_ops: frozenset[str]
    warnings: tuple[str, ...] = ()  # the problem can be judged, but not well (shown to the user)


def _out_of_memory(e: BaseException) -> bool:
    # CUDA has its own class; the CPU allocator raises a plain RuntimeError saying so.
    return isinstance(e, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))) or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in str(e) or "out of memory" in str(e)))


def _shrink_hint(problem: Problem) -> str:
    """``--set`` for the largest integer globals of the file, a sixteenth of their size."""
    try:
        mod = problem.namespace(problem.sizes[-1] if problem.sizes else {})
    except Exception:  # noqa: BLE001 - only a hint
        return ""
    values = {k: v for k in problem.globals_ if isinstance(v := getattr(mod, k, None), int)
              and not isinstance(v, bool) and v >= 64 and not k.isupper()}
    big = sorted(values, key=lambda k: (-values[k], k))[:2]
    return " ".join(f"--set {k}={max(1, values[k] // 16)}" for k in big)


def _call(problem: Problem, what: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as e:
        if _out_of_memory(e):
            hint = _shrink_hint(problem)
            raise ProblemError(f"{problem.path}: {what} ran out of memory; the problem is too large for this "
                               f"machine: shrink its largest dimensions" + (f", e.g. {hint}" if hint else
                                                                            " with --set name=value")) from e
        msg = str(e).strip().splitlines()
        raise ProblemError(
            f"{problem.path}: {what} raised {type(e).__name__}: {msg[0] if msg else ''}"
        ) from e


def _outputs(problem: Problem, out: Any) -> tuple[torch.Tensor, ...]:
    flat = tuple(flatten_outputs(out))
    for o in flat:
        if type(o) is not torch.Tensor:
            raise ProblemError(
                f"{problem.path}: Model.forward returned {type(o).__name__}; it must return tensors"
            )
    return tuple(o.detach().cpu().clone() for o in flat)


def _buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.named_buffers()}


def build_case(
    problem: Problem, index: int, size: Mapping[str, Any], device: str, seed: int, draws: int, rescale: bool
) -> tuple[Case, frozenset[str]]:
    mod = problem.namespace(size)
    base = seed * 1_000_003 + index * 101
    torch.manual_seed(base)
    init_inputs = _call(problem, "get_init_inputs()", mod.get_init_inputs)
    if not isinstance(init_inputs, (list, tuple)):
        raise ProblemError(f"{problem.path}: get_init_inputs() must return a list, got {type(init_inputs).__name__}")
    init_inputs = tuple(init_inputs)
    model = _call(problem, "Model(*get_init_inputs())", mod.Model, *init_inputs)
    randomise_(model, torch.Generator().manual_seed(base + 1))
    state_dict = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    model = _call(problem, "Model.to(device)", model.to, device)
    # Untouched copies: one for the op trace, one to run the first draw again.
    probe = _call(problem, "copy.deepcopy(Model)", copy.deepcopy, model)
    rerun = copy.deepcopy(probe)

    raw: list[list[Any]] = []
    for d in range(draws + 2):
        torch.manual_seed(base + 10 + d)
        inputs = _call(problem, "get_inputs()", mod.get_inputs)
        if not isinstance(inputs, (list, tuple)):
            raise ProblemError(f"{problem.path}: get_inputs() must return a list, got {type(inputs).__name__}")
        raw.append(list(inputs))
    timing_inputs = raw.pop()
    if rescale:
        raw[-1] = _rescaled(raw[-1], torch.Generator().manual_seed(base + 2))
    else:
        raw.pop()

    before = _buffers(model)
    made: list[Draw] = []
    for inputs in raw:
        dev_inputs = to_device(inputs, device, copy=True)
        with torch.no_grad():
            expected = _outputs(problem, _call(problem, "Model.forward", model, *dev_inputs))
        made.append(Draw(tuple(inputs), digest(inputs), expected))
    final_buffers = _buffers(model)
    stateful = any(not torch.equal(before[k], final_buffers[k]) for k in before)

    # A forward that draws random numbers (Dropout in training mode) has no single right answer.
    torch.manual_seed(base + 3)
    with torch.no_grad():
        again = _outputs(problem, _call(problem, "Model.forward", rerun, *to_device(raw[0], device, copy=True)))
    if any(not torch.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True)
           for a, b in zip(again, made[0].expected, strict=True)):
        raise ProblemError(
            f"{problem.path}: Model.forward gave different outputs for the same inputs and weights; it draws "
            "random numbers (Dropout with p > 0 in training mode?), so no candidate can match it"
        )

    rec, flops = WorkRecorder(), FlopCounterMode(display=False)
    dev_timing = to_device(timing_inputs, device, copy=True)

    def traced() -> Any:
        with torch.no_grad(), flops, rec:
            return probe(*dev_timing)

    expected_timing = _outputs(problem, _call(problem, "Model.forward (timing draw)", traced))
    timing = Draw(tuple(timing_inputs), digest(timing_inputs), expected_timing)

    weights = sum(t.numel() * t.element_size() for t in state_dict.values())
    io = sum(t.numel() * t.element_size() for t in flatten_outputs(timing_inputs) if isinstance(t, torch.Tensor))
    io += sum(t.numel() * t.element_size() for t in expected_timing)
    case = Case(
        index, dict(size), init_inputs, state_dict, tuple(made), timing, final_buffers, stateful,
        int(flops.get_total_flops()), weights + io,
    )
    return case, rec.compute_ops


def build_reference(
    problem: Problem, device: str = "cpu", seed: int = 0, draws: int = 2, rescale: bool = True,
    allow_tf32: bool = False,
) -> Reference:
    """Compute reference outputs for every size of ``problem`` on ``device``."""
    if draws < 2:
        raise ValueError("at least two draws per size: one cached answer must not pass")
    cases, ops, warnings = [], frozenset(), []
    with fp32_precision(allow_tf32):
        for i, size in enumerate(problem.sizes):
            case, case_ops = build_case(problem, i, size, device, seed, draws, rescale)
            cases.append(case)
            ops |= case_ops
            outs = [d.expected for d in (*case.draws, case.timing)]
            if all(len(o) == len(outs[0]) and all(map(torch.equal, o, outs[0])) for o in outs[1:]):
                warnings.append(
                    f"{problem.path}: size {problem.label(size)}: every input draw gives the same output, so a "
                    "kernel returning a constant passes; the problem does not test much"
                )
    return Reference(problem, device, allow_tf32, seed, tuple(cases), ops, tuple(warnings))
