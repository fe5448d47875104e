"""Prompts: what a model sees of the problem, the device, the parent and its evaluation.

Every section is there because a model acts on it: the reference source says what to
compute, the device facts what is fast, the parent's per-size numbers where it is slow, the
failures what not to repeat, and the contract what gets a candidate rejected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kernelevo.evaluate.verdict import Evaluation
from kernelevo.propose.parse import EDIT_FORMAT_HELP

SYSTEM = """You are an expert GPU kernel engineer. You write Triton (or CUDA through CuPy) kernels that \
compute exactly what a PyTorch reference computes, faster. Every candidate is checked on several \
sizes and random inputs with strict tolerances, then timed with the GPU fully synchronised."""

CONTRACT = """Contract (a candidate that breaks it is rejected):
- A Python module defining `class ModelNew(nn.Module)` with the reference Model's constructor arguments \
and the same parameters and buffers (same `state_dict` keys and shapes); weights are loaded by `state_dict`.
- `forward` takes the same inputs and returns outputs of the same shape and dtype.
- The work must be done by your own kernels (`@triton.jit`, or CUDA through CuPy RawKernel/RawModule). \
PyTorch may remain only for glue (allocation, views, reshapes, casts, a small `.sum().item()`): PyTorch \
compute beyond a quarter of the reference's work returns garbage in the judge, and so does NumPy on the host.
- Do not modify inputs or parameters, return an input or a view of it, reuse an output buffer across calls, \
cache results, use threads, inspect frames, or lower the precision of an fp32 problem (no TF32, no fp16 \
accumulation). Every call is checked, timed ones included, with fresh inputs and weights changed mid-check.
- Handle every size (masks for ragged edges): one size outside the declared ones, up to twice the largest, \
is checked too; inputs at large magnitude (x40) and large offset (+1000) must not overflow or lose precision.
- CUDA C++ through CuPy: share memory with `cp.from_dlpack(tensor)` and launch on PyTorch's stream \
(`with cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):`)."""

_TASKS = {
    "write": "Write a first fast kernel for this problem.",
    "improve": "Make the parent faster on every size while keeping it correct. Look at where it is slowest "
               "relative to the reference and at what the inspirations do differently.",
    "fix": "The parent failed (see its evaluation). Find the cause and fix it; keep whatever made it fast.",
    "rethink": "Propose a fundamentally different algorithm from the parent and the inspirations - a different "
               "decomposition, fusion, tiling or parallelisation strategy, not a parameter tweak. Correctness first.",
    "sample": "Write a faster version of the seed kernel.",
    "plan": "Do not write code. Pick ONE optimisation for the parent from this menu: {menu}. Write a plan "
            "another engineer will implement: the optimisation's name on the first line, then why it should "
            "help this kernel on this device, the concrete steps, and what could break correctness.",
}
PLAN_REPLY = "Reply with the plan only: at most 15 lines, no code block."


@dataclass(frozen=True)
class Shown:
    """A program shown in a prompt: its id, source and evaluation."""

    id: int
    source: str
    evaluation: Evaluation | None
    cell: str | None = None
    note: str | None = None


def device_facts(device: str, calibration: Any = None) -> str:
    """What the model should know about the machine timings come from, with its measured ceilings."""
    if device != "cuda":
        return ("Device: CPU, kernels run in Triton's interpreter. Timings rank candidates only and are not GPU "
                "timings; optimise for a modern NVIDIA GPU (coalesced loads, tiles that fill the SMs, tl.dot for "
                "matrix products).")
    import torch

    p = torch.cuda.get_device_properties(0)
    l2 = getattr(p, "L2_cache_size", 0)
    text = (f"Device: {p.name}, compute capability {p.major}.{p.minor}, {p.multi_processor_count} SMs, "
            f"{p.total_memory / 2**30:.0f} GiB memory, {l2 / 2**20:.0f} MiB L2.")
    if calibration is not None:
        flops = ", ".join(f"{k} {v / 1e12:.0f}" for k, v in calibration.flops_per_s.items())
        text += (f" Measured here: copy bandwidth {calibration.copy_bytes_per_s / 1e9:.0f} GB/s; dense matmul "
                 f"TFLOP/s: {flops}.")
    return text


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g} ms"


def render_evaluation(ev: Evaluation | None, error_lines: int = 12) -> str:
    """A compact evaluation: verdict, reason, error excerpt, per-size latency and speedup."""
    if ev is None:
        return "Not evaluated yet."
    lines = [f"Verdict: {ev.verdict.value}" + (f" - {ev.reason}" if ev.reason else "")]
    if ev.speedup is not None:
        lines.append(f"Speedup (geometric mean over sizes, vs PyTorch eager): {ev.speedup:.3f}x"
                     + (" [interpreter timings]" if ev.timing == "cpu-interpreter" else ""))
    if ev.speedup_compiled is not None:
        lines.append(f"Speedup vs torch.compile: {ev.speedup_compiled:.3f}x")
    for s in ev.sizes:
        size = ", ".join(f"{k}={v}" for k, v in s.size.items()) or "default"
        parts = [f"size {size}:"]
        if s.latency_ms is not None:
            parts.append(f"{_ms(s.latency_ms)} vs reference {_ms(s.reference_ms)}")
            if s.reference_ms and s.latency_ms:
                parts.append(f"({s.reference_ms / s.latency_ms:.3f}x)")
            if s.latency_spread is not None:
                parts.append(f"spread {s.latency_spread:.1%}")
        if s.max_abs_err is not None and math.isfinite(s.max_abs_err):
            parts.append(f"max abs err {s.max_abs_err:.2e}")
        if s.launches is not None:
            parts.append(f"{s.launches} launch(es)")
        lines.append("  " + " ".join(parts))
    if ev.torch_ops and ev.torch_share:
        lines.append(f"PyTorch compute in forward: {ev.torch_share:.0%} of the reference's work ("
                     + ", ".join(ev.torch_ops) + ")" + (" - a hybrid" if ev.hybrid else ""))
    if ev.profile_text:
        lines.append(ev.profile_text)  # headed "Profile ..." by its renderer
    if ev.error:
        tail = ev.error.strip().splitlines()[-error_lines:]
        lines.append("Error (last lines):\n" + "\n".join("  " + t for t in tail))
    return "\n".join(lines)


def _clip(source: str, limit: int) -> str:
    """Long inspirations are clipped in the middle: their kernels come first in our format."""
    if len(source) <= limit:
        return source
    head, tail = source[: limit * 2 // 3], source[-limit // 3:]
    return f"{head}\n# ... {len(source) - limit} characters elided ...\n{tail}"


def build_messages(
    kind: str,
    problem_source: str,
    device: str,  # "cpu", "cuda", or the device facts already rendered
    parent: Shown | None,
    inspirations: Sequence[Shown] = (),
    failures: Sequence[Shown] = (),
    use_edits: bool = False,
    inspiration_chars: int = 5000,
    guidance: str = "",
) -> list[dict[str, str]]:
    """The chat messages for one proposal; ``guidance`` is what the search strategy adds (a
    parent's per-size weaknesses, a plan to implement)."""
    facts = device_facts(device) if device in ("cpu", "cuda") else device
    parts = [f"# Reference problem\n```python\n{problem_source.strip()}\n```", facts, CONTRACT]
    if parent is not None:
        label = "Seed kernel" if kind == "sample" else f"Parent (#{parent.id})"
        parts.append(f"# {label}\n```python\n{parent.source.strip()}\n```\n"
                     f"## Its evaluation\n{render_evaluation(parent.evaluation)}")
    for insp in inspirations:
        where = f", archive cell {insp.cell}" if insp.cell else ""
        sp = insp.evaluation.speedup if insp.evaluation else None
        head = f"# Inspiration #{insp.id}{where}" + (f", speedup {sp:.3f}x" if sp else "")
        parts.append(f"{head}\n```python\n{_clip(insp.source.strip(), inspiration_chars)}\n```")
    if failures:
        lines = ["# Recent failed attempts from this parent (do not repeat them)"]
        for f in failures:
            lines.append(f"- #{f.id}" + (f" ({f.note})" if f.note else "") + ": "
                         + render_evaluation(f.evaluation, error_lines=4).replace("\n", "\n  "))
        parts.append("\n".join(lines))
    if guidance.strip():
        parts.append(f"# Guidance from the search\n{guidance.strip()}")
    task = _TASKS[kind]
    if kind == "plan":
        task = task.format(menu=guidance.strip() or "any optimisation you judge best")
        parts = parts[:-1] if guidance.strip() and parts[-1].startswith("# Guidance") else parts
        parts.append(f"# Task\n{task}\n{PLAN_REPLY}")
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]
    if use_edits and parent is not None:
        reply = ("Reply with search/replace edits to the parent (preferred, it is long) or with the whole "
                 "module in one ```python block.\n" + EDIT_FORMAT_HELP)
    else:
        reply = "Reply with the complete module in one ```python code block, then at most three sentences."
    parts.append(f"# Task\n{task}\n{reply}")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]
