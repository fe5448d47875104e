"""What the evaluator returns: a verdict, a one-line reason a model can act on, and numbers."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any


class Verdict(str, Enum):
    CORRECT = "correct"
    INCORRECT = "incorrect"  # ran, but an output (or an input, or a buffer) is wrong
    REJECTED = "rejected"  # broke the contract: no own kernel, aliasing, a forbidden construct
    COMPILE_ERROR = "compile_error"
    RUNTIME_ERROR = "runtime_error"
    TIMEOUT = "timeout"
    CRASH = "crash"  # the worker died (signal, exit) or its result could not be trusted


@dataclass(frozen=True)
class SizeResult:
    size: dict[str, Any]
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    latency_ms: float | None = None  # median
    latency_spread: float | None = None  # (p75 - p25) / median
    reference_ms: float | None = None
    launches: int | None = None  # own kernel launches per forward
    compiled_ms: float | None = None  # the reference under torch.compile (--compile-baseline)
    gbps: float | None = None  # achieved: minimum bytes / latency
    tflops: float | None = None  # achieved: FLOPs / latency
    roofline: float | None = None  # fraction of this GPU's calibrated ceiling (the nearer one)
    throttled: bool | None = None  # NVML reported thermal or power throttling during the measurement
    speedup: float | None = None  # median over interleaved blocks of reference / candidate block medians
    speedup_spread: float | None = None  # (max - min) / median of those block ratios
    compiled_speedup: float | None = None  # the same against the torch.compile'd reference
    kernel_ms: float | None = None  # GPU: median summed kernel time of a timed call (every stream)
    blocks: int | None = None  # interleaved timing blocks per side


@dataclass(frozen=True)
class Evaluation:
    candidate: str
    verdict: Verdict
    reason: str
    device: str
    timing: str | None = None  # "cuda-events" or "cpu-interpreter": never compare across kinds
    sizes: tuple[SizeResult, ...] = ()
    speedup: float | None = None  # geometric mean over sizes of reference_ms / latency_ms
    error: str | None = None  # traceback excerpt for runtime and compile errors
    torch_ops: tuple[str, ...] = ()  # PyTorch compute ops the forward still calls
    speedup_compiled: float | None = None  # geometric mean against the torch.compile'd reference
    profile: dict[str, Any] | None = None  # raw profile values: kernels' compile metadata, NVML, ceilings
    profile_text: str | None = None  # the same, rendered for a prompt
    seed: int | None = None  # the draws' seed: ``--seed`` reproduces this verdict
    hybrid: bool = False  # PyTorch did a real share of the work (only with --allow-torch-compute)
    torch_share: float | None = None  # the most PyTorch compute any call did, as a share of the reference's
    notes: tuple[str, ...] = ()  # what the judge could not check here (no extra size, no Landlock, ...)
    elapsed_s: float = 0.0
    log: str = field(default="", repr=False)  # the tail of the worker's stdout/stderr

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.CORRECT

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = self.verdict.value
        d["sizes"] = [_clean(asdict(s)) for s in self.sizes]
        d["torch_ops"] = list(self.torch_ops)
        d["notes"] = list(self.notes)
        return _clean(d)

    @staticmethod
    def from_json(d: dict[str, Any]) -> Evaluation:
        """The inverse of ``to_json`` (a stored evaluation; the log is not kept)."""
        known = {f.name for f in fields(SizeResult)}
        sizes = tuple(SizeResult(**{k: v for k, v in s.items() if k in known}) for s in d.get("sizes", ()))
        return Evaluation(
            candidate=d["candidate"], verdict=Verdict(d["verdict"]), reason=d.get("reason", ""),
            device=d.get("device", ""), timing=d.get("timing"), sizes=sizes, speedup=d.get("speedup"),
            error=d.get("error"), torch_ops=tuple(d.get("torch_ops", ())), elapsed_s=d.get("elapsed_s", 0.0),
            speedup_compiled=d.get("speedup_compiled"), profile=d.get("profile"),
            profile_text=d.get("profile_text"), log=d.get("log", ""), seed=d.get("seed"),
            hybrid=bool(d.get("hybrid", False)), torch_share=d.get("torch_share"), notes=tuple(d.get("notes", ())),
        )


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: report it as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def size_speedup(s: SizeResult, baseline: str = "reference_ms") -> float | None:
    """The paired speedup of interleaved blocks when measured; else baseline / latency. None
    unless both are known and positive."""
    paired = s.speedup if baseline == "reference_ms" else s.compiled_speedup if baseline == "compiled_ms" else None
    if paired:
        return paired
    base = getattr(s, baseline)
    if not s.latency_ms or not base or s.latency_ms <= 0 or base <= 0:
        return None
    return base / s.latency_ms


def geomean_speedup(sizes: tuple[SizeResult, ...], baseline: str = "reference_ms") -> float | None:
    """Geometric mean over sizes of baseline / latency; None unless every size has both."""
    ratios = [r for s in sizes if (r := size_speedup(s, baseline)) is not None]
    if not ratios or len(ratios) != len(sizes):
        return None
    return math.exp(sum(math.log(r) for r in ratios) / len(ratios))
