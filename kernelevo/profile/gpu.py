"""Which GPU and software a measurement came from, and the GPU's clocks and throttling right after it.

Timings and calibrations are keyed by GPU model, not by compute capability: an H100 and an H200
are both sm_90 with 132 SMs, yet the H200's HBM3e gives it ~40% more bandwidth, so a kernel tuned
and a ceiling measured on one would mislead on the other. NVML is optional (pynvml from
nvidia-ml-py); without a driver every NVML query answers None and nothing raises.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import Any

_GIB = 1 << 30
_MIB = 1 << 20


@dataclass(frozen=True)
class GpuFingerprint:
    name: str
    compute_capability: str  # "9.0"
    sm_count: int
    memory_gib: int  # rounded
    l2_mib: int
    uuid: str | None  # this board; not part of the key (two boards of one model share results)

    @property
    def key(self) -> str:
        """Filename-safe key, e.g. ``nvidia-h100-80gb-hbm3-sm90-132sm-80gib``. SM count and memory
        are included because one marketing name covers parts with different SM counts (PCIe vs SXM)
        and memory sizes, and both change the ceilings a kernel is judged against."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "gpu"
        cc = re.sub(r"[^0-9]", "", self.compute_capability) or "0"
        return f"{slug}-sm{cc}-{self.sm_count}sm-{self.memory_gib}gib"


@dataclass(frozen=True)
class SoftwareFingerprint:
    torch: str
    triton: str
    cuda: str | None
    driver: str | None


@dataclass(frozen=True)
class NvmlSample:
    sm_clock_mhz: int | None
    max_sm_clock_mhz: int | None
    temperature_c: int | None
    power_w: float | None
    throttle_reasons: tuple[str, ...]
    throttled: bool  # clocks held down by heat or power: timings taken now are pessimistic


def fingerprint_from_props(props: Any, uuid: str | None = None) -> GpuFingerprint:
    """The fingerprint of ``torch.cuda.get_device_properties(...)`` (or anything with its fields)."""
    total = int(getattr(props, "total_memory", 0) or 0)
    l2 = int(getattr(props, "L2_cache_size", 0) or 0)
    return GpuFingerprint(
        name=str(props.name),
        compute_capability=f"{int(props.major)}.{int(props.minor)}",
        sm_count=int(props.multi_processor_count),
        memory_gib=round(total / _GIB),
        l2_mib=round(l2 / _MIB),
        uuid=uuid,
    )


def gpu_fingerprint(device_index: int = 0) -> GpuFingerprint:
    """The fingerprint of CUDA device ``device_index`` (needs a GPU; initialises CUDA)."""
    import torch

    props = torch.cuda.get_device_properties(device_index)
    uuid = _nvml_uuid(device_index)
    if uuid is None and getattr(props, "uuid", None) is not None:
        uuid = _torch_uuid(props)
    return fingerprint_from_props(props, uuid)


def software_fingerprint() -> SoftwareFingerprint:
    import torch

    try:
        import triton

        triton_version = str(triton.__version__)
    except ImportError:
        triton_version = "none"
    driver = None
    nvml = _nvml()
    if nvml is not None:
        try:
            driver = _text(nvml.nvmlSystemGetDriverVersion())
        except Exception:
            driver = None
    return SoftwareFingerprint(torch=str(torch.__version__), triton=triton_version,
                               cuda=getattr(torch.version, "cuda", None), driver=driver)


# -- throttle reasons ----------------------------------------------------------------------------

# (name, bit, lowers clocks below what the load asks for). Bit values are NVML's ABI; they are the
# fallbacks when pynvml is absent. Idle, application-clock and sync-boost bits only say the clock is
# where it was told to be: a GPU between kernels reports "idle" and that is no slowdown.
_REASONS: tuple[tuple[str, str, int, bool], ...] = (
    ("gpu_idle", "GpuIdle", 0x1, False),
    ("applications_clocks_setting", "ApplicationsClocksSetting", 0x2, False),
    ("sw_power_cap", "SwPowerCap", 0x4, True),
    ("hw_slowdown", "HwSlowdown", 0x8, True),
    ("sync_boost", "SyncBoost", 0x10, False),
    ("sw_thermal_slowdown", "SwThermalSlowdown", 0x20, True),
    ("hw_thermal_slowdown", "HwThermalSlowdown", 0x40, True),
    ("hw_power_brake_slowdown", "HwPowerBrakeSlowdown", 0x80, True),
    ("display_clock_setting", "DisplayClockSetting", 0x100, False),
)


def _reason_bits() -> tuple[tuple[str, int, bool], ...]:
    try:
        import pynvml
    except ImportError:
        pynvml = None  # type: ignore[assignment]
    out = []
    for name, suffix, default, slows in _REASONS:
        # nvidia-ml-py 12.535+ renamed ClocksThrottleReason* to ClocksEventReason*; older releases
        # have only the first, newer ones keep both.
        bit = getattr(pynvml, f"nvmlClocksEventReason{suffix}", None) if pynvml else None
        if bit is None and pynvml:
            bit = getattr(pynvml, f"nvmlClocksThrottleReason{suffix}", None)
        out.append((name, int(bit) if isinstance(bit, int) else default, slows))
    return tuple(out)


def decode_throttle(mask: int) -> tuple[tuple[str, ...], bool]:
    """Names of the reasons set in an NVML clocks-event mask, and whether any of them slows the GPU."""
    names: list[str] = []
    throttled = False
    known = 0
    for name, bit, slows in _reason_bits():
        known |= bit
        if mask & bit:
            names.append(name)
            throttled = throttled or slows
    if rest := mask & ~known:
        names.append(f"other_{rest:#x}")  # a reason newer than this table: shown, not judged
    return tuple(names), throttled


# -- NVML ----------------------------------------------------------------------------------------

_LOCK = threading.Lock()
_STATE: dict[str, Any] = {"tried": False, "nvml": None, "handles": {}}


def _reset_after_fork() -> None:
    # A forked worker must not reuse the parent's handle cache under a lock another thread may
    # have held at fork time; NVML itself is re-initialised (nvmlInit is reference counted).
    global _LOCK
    _LOCK = threading.Lock()
    _STATE.update(tried=False, nvml=None, handles={})


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _nvml() -> Any:
    """The pynvml module, initialised once per process, or None (no package or no driver)."""
    with _LOCK:
        if not _STATE["tried"]:
            _STATE["tried"] = True
            try:
                import pynvml

                pynvml.nvmlInit()
                _STATE["nvml"] = pynvml
            except Exception:  # ImportError, NVMLError_LibraryNotFound/DriverNotLoaded, ...
                _STATE["nvml"] = None
        return _STATE["nvml"]


def _torch_uuid(props: Any) -> str:
    text = str(props.uuid)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def _handle(device_index: int) -> Any:
    """NVML's handle for CUDA device ``device_index``. NVML numbers GPUs in PCI order and ignores
    CUDA_VISIBLE_DEVICES, while CUDA renumbers (and by default orders fastest first), so the
    board is matched by UUID when CUDA is already up, else through CUDA_VISIBLE_DEVICES."""
    nvml = _nvml()
    if nvml is None:
        return None
    with _LOCK:
        if device_index in _STATE["handles"]:
            return _STATE["handles"][device_index]
    handle = None
    try:
        import torch

        if torch.cuda.is_initialized():  # never initialise CUDA just to read a clock
            handle = nvml.nvmlDeviceGetHandleByUUID(_torch_uuid(torch.cuda.get_device_properties(device_index)))
    except Exception:
        handle = None
    if handle is None:
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(_visible_index(device_index))
        except Exception:
            handle = None
    if handle is not None:
        with _LOCK:
            _STATE["handles"][device_index] = handle
    return handle


def _visible_index(device_index: int) -> int:
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if device_index < len(visible) and visible[device_index].isdigit():
        return int(visible[device_index])
    return device_index


def _nvml_uuid(device_index: int) -> str | None:
    handle = _handle(device_index)
    if handle is None:
        return None
    try:
        return _text(_STATE["nvml"].nvmlDeviceGetUUID(handle))
    except Exception:
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _query(fn: Any, *args: Any) -> Any:
    # Each field on its own: MIG slices and some boards answer NotSupported to a few queries.
    try:
        return fn(*args)
    except Exception:
        return None


def nvml_sample(device_index: int = 0) -> NvmlSample | None:
    """Clocks, temperature, power and throttle reasons now, or None without NVML. Never raises."""
    try:
        handle = _handle(device_index)
        if handle is None:
            return None
        nvml = _STATE["nvml"]
        sm = getattr(nvml, "NVML_CLOCK_SM", 1)
        clock = _query(nvml.nvmlDeviceGetClockInfo, handle, sm)
        max_clock = _query(nvml.nvmlDeviceGetMaxClockInfo, handle, sm)
        temp = _query(nvml.nvmlDeviceGetTemperature, handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
        milliwatts = _query(nvml.nvmlDeviceGetPowerUsage, handle)
        reasons_fn = (getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
                      or getattr(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None))
        mask = _query(reasons_fn, handle) if reasons_fn is not None else None
        names, throttled = decode_throttle(int(mask)) if mask is not None else ((), False)
        return NvmlSample(
            sm_clock_mhz=None if clock is None else int(clock),
            max_sm_clock_mhz=None if max_clock is None else int(max_clock),
            temperature_c=None if temp is None else int(temp),
            power_w=None if milliwatts is None else round(milliwatts / 1000.0, 1),
            throttle_reasons=names,
            throttled=throttled,
        )
    except Exception:
        return None


def merge_samples(samples: Any) -> dict[str, Any] | None:
    """NVML samples taken during one timed block, as one record: the lowest SM clock, the highest
    temperature and power, every throttle reason seen. None without samples."""
    rows = [s for s in samples if s]
    if not rows:
        return None

    def pick(key: str, fn: Any) -> Any:
        vals = [r[key] for r in rows if r.get(key) is not None]
        return fn(vals) if vals else None

    reasons = sorted({x for r in rows for x in r.get("throttle_reasons") or ()})
    return {"sm_clock_mhz": pick("sm_clock_mhz", min), "max_sm_clock_mhz": pick("max_sm_clock_mhz", max),
            "temperature_c": pick("temperature_c", max), "power_w": pick("power_w", max),
            "throttle_reasons": reasons, "throttled": any(r.get("throttled") for r in rows), "samples": len(rows)}
