"""This GPU's measured ceilings: device-to-device copy bandwidth and dense matmul FLOP/s per dtype.

Datasheet peaks are not reachable (an H100 SXM copies at ~85-90% of its HBM spec, and boards are
power-capped differently), so roofline fractions and the speed-of-light check are judged against
what this GPU type actually does. One file per GPU type, ``profiling/<gpu-key>.json``; measured
once (a few seconds), then read.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kernelevo.profile.gpu import gpu_fingerprint, software_fingerprint

DTYPES = ("fp32", "tf32", "bf16", "fp16")
MATMUL_N = 8192  # big enough that every SM stays busy for milliseconds: tile-count effects vanish
COPY_BYTES = 1 << 30  # far beyond any L2 (50-126 MiB), so the copy streams from DRAM both ways
_ALIASES = {"float32": "fp32", "fp32": "fp32", "float": "fp32", "tf32": "tf32", "float16": "fp16", "fp16": "fp16",
            "half": "fp16", "bfloat16": "bf16", "bf16": "bf16"}
_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class Calibration:
    key: str
    gpu: dict[str, Any]  # asdict(GpuFingerprint)
    software: dict[str, Any]  # asdict(SoftwareFingerprint)
    copy_bytes_per_s: float  # read + write bytes per second of a large device-to-device copy
    flops_per_s: dict[str, float]  # "fp32", "tf32", "bf16", "fp16": dense matmul
    measured: str  # ISO date

    def peak_flops(self, dtype: str, tf32: bool = False) -> float:
        """Matmul ceiling for a problem computing in ``dtype`` ("float32", "bfloat16", "fp16", ...).
        fp32 maps to the TF32 tensor-core figure only when TF32 is allowed: otherwise fp32 runs
        on the CUDA cores, ~7x slower on Hopper. Unknown dtypes get the fp32 figure."""
        name = _ALIASES.get(str(dtype).removeprefix("torch."), "fp32")
        if name == "fp32" and tf32:
            name = "tf32"
        return float(self.flops_per_s.get(name, self.flops_per_s["fp32"]))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> Calibration:
        """A calibration from ``to_json``'s dict; ValueError names what is missing or wrong."""
        try:
            flops = {str(k): float(v) for k, v in dict(data["flops_per_s"]).items()}
            cal = Calibration(key=str(data["key"]), gpu=dict(data["gpu"]), software=dict(data["software"]),
                              copy_bytes_per_s=float(data["copy_bytes_per_s"]), flops_per_s=flops,
                              measured=str(data["measured"]))
        except KeyError as e:
            raise ValueError(f"calibration lacks {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"calibration has a bad value ({e})") from None
        if "fp32" not in flops or cal.copy_bytes_per_s <= 0 or any(v <= 0 for v in flops.values()):
            raise ValueError("calibration needs a positive copy bandwidth and fp32 FLOP/s")
        return cal


def _best_ms(fn: Callable[[], Any], warmup: int, reps: int) -> float:
    """Fastest of ``reps`` event-timed calls. The best, not the median: a ceiling should be what the
    GPU can do at full boost clock, before the power cap pulls it down; a ceiling set low would
    make honest kernels look faster than light."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end))
    return best


def _copy_bandwidth(nbytes: int) -> float:
    import torch

    src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").normal_()
    dst = torch.empty_like(src)
    ms = _best_ms(lambda: dst.copy_(src), warmup=3, reps=20)
    return 2 * src.numel() * src.element_size() / (ms * 1e-3)  # each byte read once, written once


def _matmul_flops(dtype: Any, n: int, tf32: bool) -> float:
    import torch

    from kernelevo.reference import fp32_precision

    # Random operands, not zeros: tensor cores draw less power on zeros, so the clock would stay
    # higher than under real data and the ceiling would be overstated.
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    c = torch.empty(n, n, device="cuda", dtype=dtype)
    with fp32_precision(tf32):  # pins the TF32 switches and restores them afterwards
        ms = _best_ms(lambda: torch.mm(a, b, out=c), warmup=3, reps=10)
    return 2 * n**3 / (ms * 1e-3)


def measure(device_index: int = 0) -> Calibration:
    """Measure this GPU (a few seconds). Needs CUDA."""
    import torch

    with torch.cuda.device(device_index):
        gpu = gpu_fingerprint(device_index)
        total = int(torch.cuda.get_device_properties(device_index).total_memory)
        try:
            copy = _copy_bandwidth(min(COPY_BYTES, total // 8))
            torch.cuda.empty_cache()
            flops = {
                "fp32": _matmul_flops(torch.float32, MATMUL_N, tf32=False),
                "tf32": _matmul_flops(torch.float32, MATMUL_N, tf32=True),
                "bf16": _matmul_flops(torch.bfloat16, MATMUL_N, tf32=False),
                "fp16": _matmul_flops(torch.float16, MATMUL_N, tf32=False),
            }
        finally:
            # Hand the cached blocks back: the evaluation workers on this GPU need the memory.
            torch.cuda.empty_cache()
    return Calibration(key=gpu.key, gpu=asdict(gpu), software=asdict(software_fingerprint()),
                       copy_bytes_per_s=copy, flops_per_s=flops,
                       measured=datetime.now(timezone.utc).date().isoformat())


def calibration_path(key: str, root: Path | None = None) -> Path:
    if not _KEY.match(key):
        raise ValueError(f"not a GPU key: {key!r}")
    return Path("profiling" if root is None else root) / f"{key}.json"


def load(key: str, root: Path | None = None) -> Calibration | None:
    """The saved calibration for ``key``, or None when there is none. ValueError for a file that
    exists but is not a calibration of this key (edited by hand; better to say so than to overwrite)."""
    path = calibration_path(key, root)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable calibration ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a calibration")
    try:
        cal = Calibration.from_json(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if cal.key != key:
        raise ValueError(f"{path}: holds the calibration of {cal.key!r}, not {key!r}")
    return cal


def save(cal: Calibration, root: Path | None = None) -> Path:
    """Write atomically: evaluators on several GPUs of one type may calibrate at the same time."""
    path = calibration_path(cal.key, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{cal.key}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(cal.to_json(), f, indent=1, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; calibrations are shared by every user of the GPU
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def ensure(device_index: int = 0, root: Path | None = None) -> Calibration:
    """This GPU's calibration: read from ``root``, or measured and saved there when there is none."""
    key = gpu_fingerprint(device_index).key
    cal = load(key, root)
    if cal is None:
        cal = measure(device_index)
        save(cal, root)
    return cal
