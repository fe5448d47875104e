"""Profile pieces without a GPU: Triton compile metadata, Nsight Compute CSV and availability, rendering."""

from __future__ import annotations

import collections
import json
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import triton
import triton.language as tl

from kernelevo.profile import ncu as ncu_mod
from kernelevo.profile.ncu import (
    METRICS,
    NcuSummary,
    counter_permission_problem,
    ncu_available,
    ncu_command,
    parse_ncu_csv,
    run_ncu,
    summarize_launches,
)
from kernelevo.profile.render import MAX_CHARS, render_profile
from kernelevo.profile.triton_meta import KernelMeta, compiled_kernels, summarize

# --- Triton compile metadata -------------------------------------------------------------------------------

Meta = collections.namedtuple("Meta", "name num_stages num_warps shared target")


class FakeCompiled:
    """Shaped like triton 3.x CompiledKernel: n_regs / n_spills appear only after _init_handles()."""

    def __init__(self, name: str, shared: int, warps: int, stages: int, regs: int, spills: int, fail: bool = False):
        self.name = name
        self.metadata = Meta(name, stages, warps, shared, None)
        self._regs, self._spills, self._fail = regs, spills, fail
        self.module = None

    def _init_handles(self) -> None:
        if self._fail:
            raise RuntimeError("0 active drivers")
        self.module, self.n_regs, self.n_spills = object(), self._regs, self._spills


def _jit_39(*kernels: object) -> SimpleNamespace:
    """triton 3.9: device_caches[device] = (kernel_cache, kernel_key_cache, target, backend, binder)."""
    caches = collections.defaultdict(lambda: pytest.fail("compiled_kernels must not index device_caches"))
    caches[0] = ({f"k{i}": k for i, k in enumerate(kernels)}, {}, "target", "backend", lambda: None)
    return SimpleNamespace(device_caches=caches, fn=lambda: None, __name__="jit39")


def test_compiled_kernels_triton_39_shape() -> None:
    jit = _jit_39(FakeCompiled("_softmax_kernel", 1024, 8, 3, 38, 0), FakeCompiled("_softmax_kernel", 0, 4, 2, 90, 12))
    metas = compiled_kernels(jit)
    assert metas == [
        KernelMeta("_softmax_kernel", 38, 0, 1024, 8, 3),
        KernelMeta("_softmax_kernel", 90, 12, 0, 4, 2),
    ]
    s = summarize(metas)
    json.dumps(s)
    assert (s["count"], s["max_registers"], s["total_spills"], s["max_shared_bytes"]) == (2, 90, 12, 1024)
    assert s["kernels"][1]["spills"] == 12


def test_compiled_kernels_triton_36_shape_and_failures() -> None:
    # triton 3.6: (kernel_cache, target, backend, binder); a kernel whose binary cannot load keeps its metadata
    ok = FakeCompiled("_mm", 49152, 4, 4, 128, 0)
    broken = FakeCompiled("_mm", 8192, 2, 1, 1, 1, fail=True)
    pending: Future = Future()  # async compilation placeholder, not resolved: skipped
    done: Future = Future()
    done.set_result(FakeCompiled("_mm", 0, 1, 1, 16, 0))
    jit = SimpleNamespace(device_caches={0: ({"a": ok, "b": broken, "c": pending, "d": done}, "t", "b", None)})
    metas = compiled_kernels(jit)
    assert metas[0] == KernelMeta("_mm", 128, 0, 49152, 4, 4)
    assert metas[1] == KernelMeta("_mm", None, None, 8192, 2, 1)
    assert metas[2].registers == 16 and len(metas) == 3
    assert summarize(metas)["total_spills"] == 0  # unknown spills are not counted as zero-or-more


def test_compiled_kernels_old_cache_dict_metadata_and_autotuner() -> None:
    kernel = SimpleNamespace(metadata={"name": "k_old", "shared": 256, "num_warps": 2, "num_stages": 1}, n_regs=20,
                             n_spills=0)
    jit = SimpleNamespace(cache={0: {"key": kernel}}, __name__="k_old")
    assert compiled_kernels(jit) == [KernelMeta("k_old", 20, 0, 256, 2, 1)]
    # an autotuner's own cache maps keys to configs; the kernels live in its .fn
    tuner = SimpleNamespace(cache={("k",): "Config"}, fn=_jit_39(FakeCompiled("tuned", 0, 4, 3, 64, 0)))
    assert [m.name for m in compiled_kernels(tuner)] == ["tuned"]


def test_compiled_kernels_missing_attributes_never_raise() -> None:
    assert compiled_kernels(None) == []
    assert compiled_kernels(object()) == []
    bare = SimpleNamespace(device_caches={0: ({"k": SimpleNamespace(metadata=None)},)}, __name__="bare")
    assert compiled_kernels(bare) == [KernelMeta("bare", None, None, None, None, None)]
    weird = SimpleNamespace(device_caches={0: ({"k": SimpleNamespace(metadata=Meta("w", "x", None, -1, None))},)})
    assert compiled_kernels(weird) == [KernelMeta("w", None, None, -1, None, None)]
    assert summarize([]) == {"kernels": [], "count": 0, "max_registers": None, "total_spills": None,
                             "max_shared_bytes": None}


@triton.jit
def _add_one(x_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=mask) + 1, mask=mask)


def test_compiled_kernels_real_triton_function() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.zeros(100, device=device)
    _add_one[(1,)](x, 100, BLOCK=128)
    assert float(x.sum()) == 100.0
    metas = compiled_kernels(_add_one)
    if device == "cpu":  # the interpreter compiles nothing
        assert metas == []
    else:
        assert metas and metas[0].name.startswith("_add_one")
        assert isinstance(metas[0].registers, int) and metas[0].num_warps


# --- Nsight Compute ------------------------------------------------------------------------------------------

HEADER = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size",'
          '"Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"')


def _row(launch: int, kernel: str, metric: str, unit: str, value: str) -> str:
    fields = [str(launch), "4242", "python3.11", "127.0.0.1", kernel, "1", "7", "(256, 1, 1)", "(4096, 1, 1)", "0",
              "9.0", "Command line profiler metrics", metric, unit, value]
    return ",".join(f'"{f}"' for f in fields)


def _launch(launch: int, kernel: str, values: dict[str, tuple[str, str]]) -> list[str]:
    return [_row(launch, kernel, m, *values[m]) for m in values]


SOFTMAX = {
    "gpu__time_duration.sum": ("nsecond", "1,234.5"),
    "sm__throughput.avg.pct_of_peak_sustained_elapsed": ("%", "21.37"),
    "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed": ("%", "83.9"),
    "dram__bytes.sum": ("byte", "67,108,864"),
    "sm__warps_active.avg.pct_of_peak_sustained_active": ("%", "45.2"),
    "launch__occupancy_limit_registers": ("block", "2"),
    "launch__occupancy_limit_shared_mem": ("block", "3"),
    "launch__occupancy_limit_warps": ("block", "8"),
    "launch__occupancy_limit_blocks": ("block", "32"),
    "launch__registers_per_thread": ("register/thread", "96"),
    "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active": ("%", "0"),
    "smsp__pcsamp_warps_issue_stalled_long_scoreboard": ("", "600"),
    "smsp__pcsamp_warps_issue_stalled_short_scoreboard": ("", "50"),
    "smsp__pcsamp_warps_issue_stalled_barrier": ("", "200"),
    "smsp__pcsamp_warps_issue_stalled_mio_throttle": ("", "0"),
    "smsp__pcsamp_warps_issue_stalled_math_pipe_throttle": ("", "n/a"),
    "smsp__pcsamp_warps_issue_stalled_lg_throttle": ("", "25"),
    "smsp__pcsamp_warps_issue_stalled_wait": ("", "125"),
}
MATMUL = {
    "gpu__time_duration.sum": ("usecond", "2.5"),  # auto units are converted to ns
    "sm__throughput.avg.pct_of_peak_sustained_elapsed": ("%", "71"),
    "dram__bytes.sum": ("Mbyte", "1.5"),
    "launch__occupancy_limit_registers": ("block", "4"),
    "launch__occupancy_limit_shared_mem": ("block", "1"),
    "launch__occupancy_limit_blocks": ("block", "32"),
    "launch__registers_per_thread": ("register/thread", "168"),
    "smsp__pcsamp_warps_issue_stalled_math_pipe_throttle": ("", "10"),
}
NCU_CSV = "\n".join([
    "==PROF== Connected to process 4242 (/usr/bin/python3.11)",
    "==WARNING== Note: Running with uncontrolled GPU clocks is not supported.",
    "==PROF== Profiling \"_softmax_kernel\" - 0: 0%....50%....100% - 9 passes",
    "some application output, with a comma",
    HEADER,
    *_launch(0, "_softmax_kernel", SOFTMAX),
    *_launch(1, "_matmul_kernel", MATMUL),
    "==PROF== Disconnected from process 4242",
])


def test_parse_ncu_csv_long_format() -> None:
    rows = parse_ncu_csv(NCU_CSV)
    assert [r["kernel"] for r in rows] == ["_softmax_kernel", "_matmul_kernel"]
    soft, mm = rows
    assert soft["gpu__time_duration.sum"] == pytest.approx(1234.5)
    assert soft["dram__bytes.sum"] == pytest.approx(67108864)
    assert soft["smsp__pcsamp_warps_issue_stalled_math_pipe_throttle"] is None
    assert soft["launch__registers_per_thread"] == 96
    assert mm["gpu__time_duration.sum"] == pytest.approx(2500.0)
    assert mm["dram__bytes.sum"] == pytest.approx(1.5e6)
    assert "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed" not in mm
    assert parse_ncu_csv("==PROF== nothing\n==ERROR== The application returned an error code (1).") == []


def test_summarize_launches_limiter_and_stalls() -> None:
    soft, mm = summarize_launches(parse_ncu_csv(NCU_CSV))
    assert soft.kernel == "_softmax_kernel" and soft.occupancy_limiter == "registers"
    assert (soft.sm_pct, soft.memory_pct, soft.occupancy_pct, soft.registers) == (21.37, 83.9, 45.2, 96)
    assert soft.tensor_pct == 0
    # shares of the 1000 sampled stalls: long scoreboard 600, barrier 200, wait 125
    assert soft.top_stalls == (("long_scoreboard", 60.0), ("barrier", 20.0), ("wait", 12.5))
    assert mm.occupancy_limiter == "shared_mem" and mm.registers == 168 and mm.memory_pct is None
    assert mm.top_stalls == (("math_pipe_throttle", 100.0),)
    assert summarize_launches([{"kernel": "k"}]) == [NcuSummary("k", *[None] * 8, ())]
    hopper = summarize_launches([{"kernel": "k", ncu_mod.GMMA: 71.5, "gpu__time_duration.sum": 10.0},
                                 {"kernel": "k2", "gpu__time_duration.sum": 5.0}, {"kernel": "k3"}])
    assert hopper[0].gmma_pct == 71.5 and hopper[0].tensor_pct is None and hopper[1].gmma_pct is None
    assert ncu_mod.call_duration_ns(hopper) == 15.0 and ncu_mod.call_duration_ns(hopper[2:]) is None


def test_ncu_command_profiles_every_launch_of_the_timed_call(tmp_path: Path) -> None:
    cmd = ncu_command(tmp_path / "run.py", tmp_path / "out.csv", "^(_softmax_kernel)$")
    assert cmd[0] == "ncu" and "--csv" in cmd and cmd[-1] == str(tmp_path / "run.py")
    metrics = cmd[cmd.index("--metrics") + 1].split(",")
    assert set(METRICS) == set(metrics) and len(METRICS) >= 15 and ncu_mod.GMMA not in metrics
    assert cmd[cmd.index("--kernel-name") + 1] == "regex:^(_softmax_kernel)$"
    assert cmd[cmd.index("--kernel-name-base") + 1] == "function"
    assert "--launch-count" not in cmd and "--launch-skip" not in cmd  # every launch in the range
    assert "--nvtx" in cmd and cmd[cmd.index("--nvtx-include") + 1] == "kernelevo_timed/"
    assert cmd[cmd.index("--log-file") + 1] == str(tmp_path / "out.csv")
    assert "--target-processes" in cmd
    bare = ncu_command(tmp_path / "run.py", tmp_path / "out.csv", None, timed_range=False)
    assert "--kernel-name" not in bare and "--nvtx" not in bare
    hopper = ncu_command(tmp_path / "run.py", tmp_path / "out.csv", None, major=9)
    assert ncu_mod.GMMA in hopper[hopper.index("--metrics") + 1].split(",")  # wgmma shows only here
    ampere = ncu_command(tmp_path / "r.py", tmp_path / "o.csv", None, major=8)
    assert ncu_mod.GMMA not in ampere[ampere.index("--metrics") + 1]


def test_kernel_names_are_matched_exactly() -> None:
    import re

    rx = re.compile(ncu_mod.exact_names({"_mean", "add.one", "_cross_entropy_kernel"}))
    assert rx.search("_mean") and rx.search("add.one") and rx.search("_cross_entropy_kernel")
    assert not rx.search("_mean_kernel") and not rx.search("add_one") and not rx.search("x_mean")


def test_ncu_unavailable_without_ncu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.setattr(ncu_mod, "_FALLBACK_DIRS", ())
    ok, reason = ncu_available()
    assert ok is False and "ncu" in reason and "\n" not in reason
    assert run_ncu(tmp_path / "run.py", tmp_path / "w") == reason  # a reason, not an exception


def test_counter_permission_probe() -> None:
    text = ("==PROF== Connected to process 17\n"
            "==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU Performance "
            "Counters on the target device 0. For instructions on enabling permissions, see "
            "https://developer.nvidia.com/ERR_NVGPUCTRPERM\n")
    reason = counter_permission_problem(text)
    assert reason and "ERR_NVGPUCTRPERM" in reason and "\n" not in reason
    assert counter_permission_problem(NCU_CSV) is None
    assert counter_permission_problem("") is None


# --- rendering -----------------------------------------------------------------------------------------------

SIZE = {"label": "N=4096", "latency_ms": 0.412, "achieved_gbps": 1830.0, "achieved_tflops": 12.1,
        "bandwidth_fraction": 1830 / 4800, "compute_fraction": 0.0122, "bound": "memory"}


def test_render_profile_contents() -> None:
    kernels = [KernelMeta("_softmax_kernel", 38, 0, 0, 8, 3), KernelMeta("_mm_kernel", 255, 40, 98304, 4, 3)]
    ncu = summarize_launches(parse_ncu_csv(NCU_CSV))
    text = render_profile([SIZE], kernels, ncu, device="NVIDIA H100")
    assert "NVIDIA H100" in text
    assert "size N=4096: 0.412 ms, 1830 GB/s (38% of 4800 measured), 12.1 TFLOP/s (1% of peak) -> memory-bound" in text
    assert "kernel _softmax_kernel: 38 registers, 0 spills, 0 B shared, 8 warps, 3 stages" in text
    softmax_line = next(ln for ln in text.splitlines() if ln.startswith("kernel _softmax_kernel"))
    assert "spills:" not in softmax_line
    assert "kernel _mm_kernel: 255 registers, 40 spills, 96 KiB shared" in text
    assert "(spills: cut registers or tile size)" in text
    ncu_line = next(ln for ln in text.splitlines() if "_softmax_kernel" in ln and ln.startswith("ncu"))
    for part in ("SM 21%", "memory 84%", "occupancy 45% (limited by registers)", "long_scoreboard 60%"):
        assert part in ncu_line
    assert "None" not in text and len(text) <= MAX_CHARS


def test_render_profile_omits_unknowns_and_reason() -> None:
    size = {"label": "N=1", "latency_ms": 0.05, "achieved_gbps": None, "achieved_tflops": None,
            "bandwidth_fraction": None, "compute_fraction": None, "bound": "unknown"}
    text = render_profile([size], [KernelMeta("k", None, None, None, 4, None)], "ncu (Nsight Compute) not found")
    assert "size N=1: 0.05 ms" in text and "GB/s" not in text and "bound" not in text
    assert "kernel k: 4 warps" in text and "registers" not in text
    assert text.count("Nsight Compute: ncu (Nsight Compute) not found") == 1
    assert "None" not in text
    assert "Nsight Compute" not in render_profile([size])


def test_render_profile_length_cap() -> None:
    sizes = [dict(SIZE, label=f"N={2 ** i}") for i in range(40)]
    kernels = [KernelMeta(f"_kernel_with_a_long_name_{i}", 64 + i, i % 3, 1024 * i, 4, 3) for i in range(30)]
    ncu = summarize_launches(parse_ncu_csv(NCU_CSV)) * 10
    text = render_profile(sizes, kernels, ncu, device="NVIDIA H100 80GB HBM3")
    assert len(text) <= MAX_CHARS
    assert "more sizes" in text and "more kernels" in text
    assert "size N=1:" in text  # the first items are kept


def test_cupy_metadata_from_raw_kernels_and_raw_modules() -> None:
    from kernelevo.profile.triton_meta import cupy_kernels

    class RawKernel:
        def __init__(self, name: str, regs: int) -> None:
            self.name, self.num_regs, self.shared_size_bytes = name, regs, 1024

    class RawModule:
        def get_function(self, name: str) -> RawKernel:
            if name != "from_module":
                raise KeyError(name)
            return RawKernel(name, 40)

    class Broken(RawKernel):
        @property
        def num_regs(self) -> int:  # type: ignore[override]
            raise RuntimeError("nvrtc failed")

        @num_regs.setter
        def num_regs(self, v: int) -> None:
            pass

    for cls in (RawKernel, RawModule, Broken):
        cls.__module__ = "cupy._core.raw"
    Broken.__name__ = "RawKernel"
    metas = cupy_kernels([RawKernel("global_one", 32), RawModule(), "not cupy", 3, Broken("bad", 0)],
                         {"from_module", "absent"})
    assert [(m.name, m.registers, m.shared_bytes) for m in metas] == [("global_one", 32, 1024),
                                                                      ("from_module", 40, 1024)]
