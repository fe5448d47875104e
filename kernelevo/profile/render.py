"""The profile as a prompt sees it: a few short lines, unknown numbers left out, capped in length."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from kernelevo.profile.ncu import NcuSummary, call_duration_ns
from kernelevo.profile.triton_meta import KernelMeta

MAX_CHARS = 1500
_LIMITS = ((8, 6, 4), (4, 4, 3), (2, 2, 2), (1, 1, 1))  # (sizes, kernels, ncu launches) shown, tried in turn


def _num(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.0f}%"


def _bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def _known(d: dict, key: str) -> float | None:
    v = d.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _size_line(s: dict) -> str:
    label = str(s.get("label", "?"))
    parts = [label if label.startswith("size") else f"size {label}"]
    body = []
    if (ms := _known(s, "latency_ms")) is not None:
        body.append(f"{_num(ms)} ms")
    gbps, bw = _known(s, "achieved_gbps"), _known(s, "bandwidth_fraction")
    if gbps is not None:
        peak = _known(s, "peak_gbps") or (gbps / bw if bw else None)
        ceiling = f" of {peak:.0f} measured" if peak else ""
        body.append(f"{gbps:.0f} GB/s" + (f" ({_pct(bw)}{ceiling})" if bw is not None else ""))
    tflops, cf = _known(s, "achieved_tflops"), _known(s, "compute_fraction")
    if tflops is not None:
        body.append(f"{_num(tflops)} TFLOP/s" + (f" ({_pct(cf)} of peak)" if cf is not None else ""))
    line = parts[0] + (": " + ", ".join(body) if body else "")
    bound = s.get("bound")
    return line + (f" -> {bound}-bound" if bound in ("memory", "compute") else "")


def _kernel_line(k: KernelMeta, times: int) -> str:
    fields = [(k.registers, "registers"), (k.spills, "spills")]
    parts = [f"{v} {what}" for v, what in fields if v is not None]
    if k.shared_bytes is not None:
        kib = k.shared_bytes / 1024
        parts.append(f"{k.shared_bytes} B shared" if k.shared_bytes < 1024 else f"{kib:.3g} KiB shared")
    parts += [f"{v} {what}" for v, what in ((k.num_warps, "warps"), (k.num_stages, "stages")) if v is not None]
    line = f"kernel {k.name}" + (f" (x{times} variants)" if times > 1 else "")
    line += ": " + ", ".join(parts) if parts else ""
    return line + (" (spills: cut registers or tile size)" if k.spills else "")


def _ncu_line(n: NcuSummary) -> str:
    name = n.kernel if len(n.kernel) <= 48 else n.kernel[:45] + "..."
    parts = []
    if n.sm_pct is not None or n.memory_pct is not None:
        sol = [f"{what} {v:.0f}%" for what, v in (("SM", n.sm_pct), ("memory", n.memory_pct)) if v is not None]
        parts.append("SOL " + ", ".join(sol))
    if n.dram_bytes is not None:
        parts.append(f"DRAM {_bytes(n.dram_bytes)}")
    if n.occupancy_pct is not None:
        limiter = f" (limited by {n.occupancy_limiter})" if n.occupancy_limiter else ""
        parts.append(f"occupancy {n.occupancy_pct:.0f}%{limiter}")
    elif n.occupancy_limiter:
        parts.append(f"occupancy limited by {n.occupancy_limiter}")
    if n.registers is not None:
        parts.append(f"{n.registers} regs/thread")
    if n.tensor_pct is not None:
        parts.append(f"tensor pipe (hmma) {n.tensor_pct:.0f}%")
    if n.gmma_pct is not None:
        parts.append(f"tensor pipe (gmma) {n.gmma_pct:.0f}%")
    if n.top_stalls:
        parts.append("stalls " + ", ".join(f"{s} {v:.0f}%" for s, v in n.top_stalls))
    return f"ncu {name}: " + ("; ".join(parts) if parts else "no metrics")


def _capped(items: Sequence[Any], limit: int, line: Callable[..., str], what: str) -> list[str]:
    out = [line(*item) if isinstance(item, tuple) else line(item) for item in items[:limit]]
    if len(items) > limit:
        out.append(f"... {len(items) - limit} more {what}")
    return out


def render_profile(per_size: Sequence[dict], kernels: Sequence[KernelMeta] = (),
                   ncu: Sequence[NcuSummary] | str | None = None, device: str = "") -> str:
    """Per size latency and roofline fractions, compile metadata per kernel, Nsight Compute per launch."""
    grouped: dict[KernelMeta, int] = {}
    for k in kernels:  # identical specialisations are one line
        grouped[k] = grouped.get(k, 0) + 1
    kernel_items = list(grouped.items())
    text = ""
    for n_sizes, n_kernels, n_ncu in _LIMITS:
        lines = [f"Profile on {device}:" if device else "Profile:"]
        lines += _capped(list(per_size), n_sizes, _size_line, "sizes")
        lines += _capped(kernel_items, n_kernels, _kernel_line, "kernels")
        if isinstance(ncu, str):
            lines.append(f"Nsight Compute: {ncu.strip()[:300]}")
        elif ncu is not None:
            total = call_duration_ns(list(ncu))
            if total is not None and len(ncu) > 1:
                lines.append(f"Nsight Compute: {len(ncu)} launches in one call, {total / 1e3:.1f} us of kernel time")
            lines += _capped(list(ncu), n_ncu, _ncu_line, "launches") or ["Nsight Compute: no launch profiled"]
        text = "\n".join(lines)
        if len(text) <= MAX_CHARS:
            return text
    return text[: MAX_CHARS - 4] + " ..."
