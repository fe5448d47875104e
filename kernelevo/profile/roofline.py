"""Where a measured latency sits against this GPU's calibrated ceilings, and whether it is possible.

An op must move at least ``min_bytes`` through DRAM and do ``flops`` of arithmetic, so it cannot
finish before the slower of those two at the calibrated bandwidth and matmul throughput: its speed
of light. The roofline fraction says how far from that ceiling a kernel is, which tells a model
whether to work on memory traffic or on arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Roofline:
    achieved_bytes_per_s: float  # min_bytes / latency: useful traffic, not what the kernel really moved
    achieved_flops_per_s: float
    bandwidth_fraction: float | None  # of the calibrated copy bandwidth; None without a calibration
    compute_fraction: float | None  # of the calibrated matmul throughput for the op's dtype
    bound: str  # "memory" | "compute" | "unknown": which ceiling the op's arithmetic intensity hits first


def roofline(
    latency_ms: float, flops: float, min_bytes: float, bytes_per_s: float | None, flops_per_s: float | None
) -> Roofline:
    """Achieved throughput at ``latency_ms`` and its fractions of the ceilings that are known.

    ``bound`` compares the op's arithmetic intensity (flops per byte) with the ridge point
    (peak FLOP/s over bandwidth): below the ridge no kernel can keep the arithmetic units
    busy, so memory traffic is what to reduce. It depends on the op and the GPU, not on the kernel."""
    seconds = latency_ms * 1e-3
    achieved_bytes = min_bytes / seconds if seconds > 0 else 0.0
    achieved_flops = flops / seconds if seconds > 0 else 0.0
    bw_fraction = achieved_bytes / bytes_per_s if bytes_per_s and bytes_per_s > 0 else None
    compute_fraction = achieved_flops / flops_per_s if flops_per_s and flops_per_s > 0 else None
    bound = "unknown"
    if bytes_per_s and flops_per_s and bytes_per_s > 0 and flops_per_s > 0 and (flops > 0 or min_bytes > 0):
        if min_bytes <= 0:
            bound = "compute"
        else:
            ridge = flops_per_s / bytes_per_s
            bound = "compute" if flops / min_bytes >= ridge else "memory"
    return Roofline(achieved_bytes_per_s=achieved_bytes, achieved_flops_per_s=achieved_flops,
                    bandwidth_fraction=bw_fraction, compute_fraction=compute_fraction, bound=bound)


def speed_of_light_ms(flops: float, min_bytes: float, bytes_per_s: float, flops_per_s: float) -> float:
    """The least time the op can take on this GPU: the slower of moving ``min_bytes`` at the copy
    bandwidth and doing ``flops`` at the matmul peak (the two overlap at best, never add up to less)."""
    if bytes_per_s <= 0 or flops_per_s <= 0:
        raise ValueError("ceilings must be positive")
    return max(max(min_bytes, 0.0) / bytes_per_s, max(flops, 0.0) / flops_per_s) * 1e3


def faster_than_light(
    latency_ms: float, flops: float, min_bytes: float, bytes_per_s: float, flops_per_s: float, slack: float = 0.9
) -> str | None:
    """A one-line reason when ``latency_ms`` is below ``slack`` times the speed of light, else None.

    The slack absorbs honest ways to beat the nominal bound: inputs small enough to stay in L2
    between the flush and the call are served faster than DRAM, ``min_bytes`` may count a
    broadcast operand in full, and the calibration itself has a few percent of noise. Below
    that, the timing missed work (an unsynchronised stream) or the result was not computed."""
    sol = speed_of_light_ms(flops, min_bytes, bytes_per_s, flops_per_s)
    if sol <= 0 or latency_ms >= slack * sol:
        return None
    memory_ms = max(min_bytes, 0.0) / bytes_per_s * 1e3
    if memory_ms >= sol:
        limit = f"moving {min_bytes / 1e6:.3g} MB at {bytes_per_s / 1e9:.0f} GB/s"
    else:
        limit = f"{flops / 1e9:.3g} GFLOP at {flops_per_s / 1e12:.1f} TFLOP/s"
    return (f"{latency_ms:.4g} ms is faster than this GPU allows ({sol:.4g} ms for {limit}): "
            "the timing missed work or the result was not computed")
