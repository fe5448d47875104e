"""What a GPU measurement means: achieved throughput against this GPU's calibrated ceilings,
the speed-of-light sanity bound, and the profile a prompt sees.

Runs in the controller on numbers the worker reported; nothing here touches the GPU.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kernelevo.evaluate.verdict import SizeResult
from kernelevo.settings import EvalSettings


def _ceilings(calibration: Any, dtype: str, tf32: bool) -> tuple[float | None, float | None]:
    if calibration is None:
        return None, None
    return calibration.copy_bytes_per_s, calibration.peak_flops(dtype, tf32=tf32)


def with_roofline(
    size: SizeResult, flops: float, min_bytes: float, calibration: Any, settings: EvalSettings, dtype: str = "float32"
) -> tuple[SizeResult, str | None]:
    """The size with achieved GB/s, TFLOP/s and roofline fraction filled in, and a one-line
    reason when the latency is below what the calibrated ceilings allow (a timing that missed
    work, or a hack), else None."""
    if not size.latency_ms or calibration is None:
        return size, None
    from kernelevo.profile.roofline import faster_than_light, roofline

    bw, peak = _ceilings(calibration, dtype, settings.allow_tf32)
    r = roofline(size.latency_ms, flops, min_bytes, bw, peak)
    fractions = [f for f in (r.bandwidth_fraction, r.compute_fraction) if f is not None]
    size = replace(size, gbps=round(r.achieved_bytes_per_s / 1e9, 3), tflops=round(r.achieved_flops_per_s / 1e12, 4),
                   roofline=round(max(fractions), 4) if fractions else None)
    if bw and peak:
        return size, faster_than_light(size.latency_ms, flops, min_bytes, bw, peak, settings.sol_slack)
    return size, None


def profile_of(
    result: dict[str, Any], sizes: tuple[SizeResult, ...], calibration: Any, dtype: str = "float32",
    tf32: bool = False,
) -> tuple[dict[str, Any], str]:
    """Raw profile values (kernels' compile metadata, NVML samples, ceilings) and their rendering."""
    from kernelevo.profile.render import render_profile
    from kernelevo.profile.triton_meta import KernelMeta

    kernels: dict[str, dict[str, Any]] = {}
    nvml: list[dict[str, Any]] = []
    for case in result.get("cases", []):
        for k in case.get("candidate", {}).get("kernels", []):
            kernels.setdefault(k["name"], k)
        nvml += [e["nvml"] for e in (case.get("candidate", {}), case.get("reference", {})) if e.get("nvml")]
    per_size = []
    for s in sizes:
        label = ", ".join(f"{k}={v}" for k, v in s.size.items()) or "default"
        bw, peak = _ceilings(calibration, dtype, tf32)
        bw_frac = s.gbps * 1e9 / bw if bw and s.gbps is not None else None
        cmp_frac = s.tflops * 1e12 / peak if peak and s.tflops is not None else None
        bound = "unknown"
        if bw_frac is not None and cmp_frac is not None:
            bound = "memory" if bw_frac >= cmp_frac else "compute"
        per_size.append({"label": label, "latency_ms": s.latency_ms, "achieved_gbps": s.gbps,
                         "achieved_tflops": s.tflops, "bandwidth_fraction": bw_frac, "compute_fraction": cmp_frac,
                         "bound": bound})
    metas = [KernelMeta(**k) for k in kernels.values()]
    profile = {
        "kernels": list(kernels.values()),
        "nvml": nvml[-1] if nvml else None,
        "throttled": any(n.get("throttled") for n in nvml),
        "gpu": None if calibration is None else calibration.gpu,
        "ceilings": None if calibration is None else {"key": calibration.key,
                                                      "copy_bytes_per_s": calibration.copy_bytes_per_s,
                                                      "flops_per_s": calibration.flops_per_s},
        "sizes": per_size,
    }
    return profile, render_profile(per_size, metas, None, device=calibration.key if calibration else "")
