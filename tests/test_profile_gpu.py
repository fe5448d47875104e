"""GPU fingerprints, throttle decoding, calibration files and roofline arithmetic (CPU; one GPU test)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from types import SimpleNamespace

import pytest

from kernelevo.profile import calibrate, gpu
from kernelevo.profile.calibrate import Calibration
from kernelevo.profile.gpu import GpuFingerprint, decode_throttle, fingerprint_from_props, nvml_sample
from kernelevo.profile.roofline import faster_than_light, roofline, speed_of_light_ms

GIB = 1 << 30
H100 = SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0, multi_processor_count=132,
                       total_memory=80 * GIB, L2_cache_size=50 << 20)
H200 = SimpleNamespace(name="NVIDIA H200", major=9, minor=0, multi_processor_count=132,
                       total_memory=141 * GIB, L2_cache_size=60 << 20)


def test_key_tells_h100_from_h200_and_is_filename_safe() -> None:
    h100, h200 = fingerprint_from_props(H100, uuid="GPU-1"), fingerprint_from_props(H200)
    assert h100.key == "nvidia-h100-80gb-hbm3-sm90-132sm-80gib"
    assert h200.key == "nvidia-h200-sm90-132sm-141gib"
    assert h100.compute_capability == h200.compute_capability == "9.0"
    assert (h100.memory_gib, h100.l2_mib, h100.uuid) == (80, 50, "GPU-1")
    # Same model, another board: same key (uuid is not part of it); stable across calls.
    assert fingerprint_from_props(H100, uuid="GPU-2").key == h100.key == fingerprint_from_props(H100).key
    for key in (h100.key, h200.key):
        assert re.fullmatch(r"[a-z0-9-]+", key)
    odd = GpuFingerprint(name="NVIDIA RTX A6000 / Ada?", compute_capability="12.0", sm_count=84, memory_gib=48,
                         l2_mib=96, uuid=None)
    assert odd.key == "nvidia-rtx-a6000-ada-sm120-84sm-48gib"


def test_memory_is_rounded_to_whole_gib() -> None:
    props = SimpleNamespace(**{**vars(H100), "total_memory": int(79.6 * GIB)})
    assert fingerprint_from_props(props).memory_gib == 80


def test_decode_throttle() -> None:
    assert decode_throttle(0) == ((), False)
    assert decode_throttle(0x1) == (("gpu_idle",), False)  # idle is not a slowdown
    assert decode_throttle(0x1 | 0x2) == (("gpu_idle", "applications_clocks_setting"), False)
    names, throttled = decode_throttle(0x8)
    assert names == ("hw_slowdown",) and throttled
    names, throttled = decode_throttle(0x4 | 0x40)
    assert names == ("sw_power_cap", "hw_thermal_slowdown") and throttled
    names, throttled = decode_throttle(0x1 << 20)
    assert names == ("other_0x100000",) and not throttled


def test_decode_throttle_matches_pynvml_constants() -> None:
    pynvml = pytest.importorskip("pynvml")
    bit = getattr(pynvml, "nvmlClocksEventReasonHwSlowdown", None) or pynvml.nvmlClocksThrottleReasonHwSlowdown
    assert decode_throttle(bit) == (("hw_slowdown",), True)


def test_nvml_sample_never_raises() -> None:
    sample = nvml_sample(0)
    assert sample is None or isinstance(sample.throttle_reasons, tuple)
    assert nvml_sample(10_000) is None  # no such device: None, not an exception


def _cal(key: str = "nvidia-h100-80gb-hbm3-sm90-132sm-80gib") -> Calibration:
    return Calibration(key=key, gpu=asdict(fingerprint_from_props(H100)),
                       software={"torch": "2.11", "triton": "3.6", "cuda": "12.8", "driver": None},
                       copy_bytes_per_s=3.0e12,
                       flops_per_s={"fp32": 50e12, "tf32": 380e12, "bf16": 700e12, "fp16": 720e12},
                       measured="2025-01-01")


def test_calibration_round_trip(tmp_path) -> None:
    cal = _cal()
    path = calibrate.save(cal, tmp_path)
    assert path == tmp_path / f"{cal.key}.json" == calibrate.calibration_path(cal.key, tmp_path)
    assert json.loads(path.read_text())["copy_bytes_per_s"] == 3.0e12
    assert calibrate.load(cal.key, tmp_path) == cal
    assert Calibration.from_json(cal.to_json()) == cal
    assert calibrate.load("nvidia-h200-sm90-132sm-141gib", tmp_path) is None
    assert calibrate.calibration_path("x").parts == ("profiling", "x.json")


def test_calibration_rejects_bad_files(tmp_path) -> None:
    key = "some-gpu"
    (tmp_path / f"{key}.json").write_text(json.dumps({**_cal(key).to_json(), "flops_per_s": {"fp16": 1.0}}))
    with pytest.raises(ValueError, match="fp32"):
        calibrate.load(key, tmp_path)
    calibrate.save(_cal("other-gpu"), tmp_path)
    (tmp_path / "other-gpu.json").rename(tmp_path / f"{key}.json")
    with pytest.raises(ValueError, match="other-gpu"):
        calibrate.load(key, tmp_path)
    with pytest.raises(ValueError):
        calibrate.calibration_path("../escape")


def test_peak_flops_selection() -> None:
    cal = _cal()
    assert cal.peak_flops("float32") == cal.peak_flops("fp32") == 50e12
    assert cal.peak_flops("float32", tf32=True) == cal.peak_flops("torch.float32", tf32=True) == 380e12
    assert cal.peak_flops("float16") == cal.peak_flops("float16", tf32=True) == 720e12  # tf32 only affects fp32
    assert cal.peak_flops("bfloat16") == 700e12
    assert cal.peak_flops("int8") == 50e12


def test_ensure_loads_without_measuring(tmp_path, monkeypatch) -> None:
    cal = _cal()
    calibrate.save(cal, tmp_path)
    monkeypatch.setattr(calibrate, "gpu_fingerprint", lambda index=0: fingerprint_from_props(H100))

    def no_measure(index: int = 0) -> Calibration:
        raise AssertionError("measured although a calibration exists")

    monkeypatch.setattr(calibrate, "measure", no_measure)
    assert calibrate.ensure(0, tmp_path) == cal


def test_ensure_measures_and_saves_when_missing(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(calibrate, "gpu_fingerprint", lambda index=0: fingerprint_from_props(H200))
    monkeypatch.setattr(calibrate, "measure", lambda index=0: _cal("nvidia-h200-sm90-132sm-141gib"))
    cal = calibrate.ensure(0, tmp_path)
    assert (tmp_path / "nvidia-h200-sm90-132sm-141gib.json").exists()
    assert calibrate.load(cal.key, tmp_path) == cal


def test_roofline_fractions_and_bound() -> None:
    # Vector add of 2^28 fp32: 3 * 1 GiB moved, 2^28 flops, in 2 ms; ceilings 2e12 B/s, 5e13 FLOP/s.
    nbytes, flops = 3 * GIB, float(1 << 28)
    r = roofline(2.0, flops, nbytes, 2e12, 5e13)
    assert r.achieved_bytes_per_s == pytest.approx(nbytes / 2e-3)
    assert r.bandwidth_fraction == pytest.approx(nbytes / 2e-3 / 2e12)  # ~0.805
    assert r.compute_fraction == pytest.approx(flops / 2e-3 / 5e13)
    assert r.bound == "memory"
    # 4096^3 matmul in fp16: intensity ~1365 flop/B > ridge 25 flop/B.
    n = 4096
    m = roofline(0.5, 2 * n**3, 3 * n * n * 2, 2e12, 5e13)
    assert m.bound == "compute" and m.compute_fraction == pytest.approx(2 * n**3 / 0.5e-3 / 5e13)
    unknown = roofline(1.0, flops, nbytes, None, None)
    assert unknown.bound == "unknown" and unknown.bandwidth_fraction is None and unknown.compute_fraction is None
    assert unknown.achieved_flops_per_s == pytest.approx(flops / 1e-3)


def test_speed_of_light_and_faster_than_light() -> None:
    nbytes = 3 * GIB  # 1.61 ms at 2e12 B/s; the flops are negligible
    sol = speed_of_light_ms(1e6, nbytes, 2e12, 5e13)
    assert sol == pytest.approx(nbytes / 2e12 * 1e3)
    assert speed_of_light_ms(1e12, 1.0, 2e12, 5e13) == pytest.approx(20.0)  # compute-bound: 1e12 / 5e13 s
    reason = faster_than_light(0.2, 1e6, nbytes, 2e12, 5e13)
    assert reason is not None and "faster than this GPU allows" in reason and "GB/s" in reason
    assert faster_than_light(sol * 1.3, 1e6, nbytes, 2e12, 5e13) is None
    assert faster_than_light(sol * 0.95, 1e6, nbytes, 2e12, 5e13) is None  # within the slack
    assert faster_than_light(sol * 0.95, 1e6, nbytes, 2e12, 5e13, slack=1.0) is not None
    compute = faster_than_light(1.0, 1e12, 1.0, 2e12, 5e13)
    assert compute is not None and "TFLOP/s" in compute


@pytest.mark.gpu
def test_measure_on_gpu(tmp_path) -> None:
    import torch

    before = torch.backends.cuda.matmul.allow_tf32
    cal = calibrate.measure(0)
    assert torch.backends.cuda.matmul.allow_tf32 == before
    assert cal.key == gpu.gpu_fingerprint(0).key
    assert cal.copy_bytes_per_s > 100e9
    assert cal.flops_per_s["fp16"] > cal.flops_per_s["fp32"]
    assert calibrate.load(cal.key, calibrate.save(cal, tmp_path).parent) == cal
