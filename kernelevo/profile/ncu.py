"""Nsight Compute on finalists: a small fixed metric set on every kernel of one forward call,
summarised per launch and summed over the call.

The profiled script warms the model up (compiles, autotuning) and then runs one call inside an
NVTX range, ``TIMED_RANGE``; ncu profiles only launches inside it (``--nvtx-include``), every one
of them whose function name matches the candidate's kernel names exactly (an anchored regex),
so an autotuner's benchmarking runs and the warm-up never stand in for the timed call, and a
second or third kernel of a candidate is never missed. Nsight Compute locks clocks and flushes
caches, so its durations explain a kernel; they rank nothing. Stall reasons come from PC
sampling (``smsp__pcsamp_*``, sample counts); a summary reports each as its share of the
sampled stalls of the reasons collected here. Tensor-core use is the ``hmma`` pipe before
Hopper and also the ``gmma`` pipe (warpgroup MMA) on Hopper, reported apart.
"""

from __future__ import annotations

import csv
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

STALL_PREFIX = "smsp__pcsamp_warps_issue_stalled_"
STALLS = ("long_scoreboard", "short_scoreboard", "barrier", "mio_throttle", "math_pipe_throttle", "lg_throttle", "wait")
LIMITS = ("registers", "shared_mem", "warps", "blocks")  # launch__occupancy_limit_*: blocks per SM, smallest binds
METRICS: tuple[str, ...] = (
    "gpu__time_duration.sum",
    "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed",
    "dram__bytes.sum",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
    *(f"launch__occupancy_limit_{limit}" for limit in LIMITS),
    "launch__registers_per_thread",
    "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
    *(STALL_PREFIX + s for s in STALLS),
)
GMMA = "sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active"  # Hopper (sm_90) only
TIMED_RANGE = "kernelevo_timed"


def metrics_for(major: int | None) -> tuple[str, ...]:
    """The metric set for a GPU of compute capability ``major``.x: ncu refuses a metric the GPU lacks."""
    return (*METRICS, GMMA) if major == 9 else METRICS


def exact_names(names: set[str] | list[str]) -> str:
    """An anchored regex matching exactly these function names (ncu matches a regex anywhere in the name)."""
    return "^(" + "|".join(re.escape(n) for n in sorted(names)) + ")$"
_FALLBACK_DIRS: tuple[str, ...] = ("/usr/local/cuda/bin", "/opt/nvidia/nsight-compute")
# Units ncu may print (``--print-units base`` avoids most); values are converted to ns and bytes.
_SCALE = {"nsecond": 1.0, "usecond": 1e3, "msecond": 1e6, "second": 1e9, "byte": 1.0, "Kbyte": 1e3,
          "Mbyte": 1e6, "Gbyte": 1e9, "Tbyte": 1e12, "KiB": 1024.0, "MiB": 1024.0**2, "GiB": 1024.0**3}
_PROBE = "import torch; x = torch.ones(1, device='cuda'); x.add_(1); torch.cuda.synchronize()"


def find_ncu() -> str | None:
    found = shutil.which("ncu")
    if found:
        return found
    dirs = [os.path.join(os.environ["CUDA_HOME"], "bin")] if os.environ.get("CUDA_HOME") else []
    for d in [*dirs, *_FALLBACK_DIRS]:
        path = os.path.join(d, "ncu")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def counter_permission_problem(text: str) -> str | None:
    """A one-line reason when ncu's output says the user may not read GPU performance counters."""
    if "ERR_NVGPUCTRPERM" in text or "permission to access NVIDIA GPU Performance Counters" in text:
        return ("ncu: no permission for GPU performance counters (ERR_NVGPUCTRPERM); run as root / CAP_SYS_ADMIN "
                "or set NVreg_RestrictProfilingToAdminUsers=0")
    return None


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("==ERROR==")]
    return ((errors or lines or ["no output"])[-1])[:200]


@functools.lru_cache(maxsize=4)
def _probe(ncu: str, timeout_s: float = 180) -> tuple[bool, str]:
    cmd = [ncu, "--metrics", "gpu__time_duration.sum", "--target-processes", "all", sys.executable, "-c", _PROBE]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"ncu probe timed out after {timeout_s:.0f} s"
    text = p.stdout + p.stderr
    if problem := counter_permission_problem(text):
        return False, problem
    if "No kernels were profiled" in text:
        return False, "ncu profiled no kernel in its probe (no CUDA device?)"
    if p.returncode != 0:
        return False, f"ncu probe failed (exit {p.returncode}): {_last_error(text)}"
    return True, f"ncu at {ncu}"


def ncu_available(probe: bool = True) -> tuple[bool, str]:
    """(ok, one-line reason): ncu found and, with ``probe``, able to read counters (one cached tiny run)."""
    ncu = find_ncu()
    if ncu is None:
        return False, "ncu (Nsight Compute) not found on PATH"
    if not probe:
        return True, f"ncu at {ncu}"
    return _probe(ncu)


def ncu_command(script: Path, out_csv: Path, kernel_regex: str | None, ncu: str = "ncu",
                clock_control: str = "base", major: int | None = None, timed_range: bool = True) -> list[str]:
    """Every launch in the script's ``TIMED_RANGE`` (all of them: no launch count) whose function name
    matches ``kernel_regex``. ``clock_control="none"`` leaves the GPU at its own clocks (for comparing
    durations with event timings); the default locks base clocks: repeatable metrics, longer durations."""
    cmd = [ncu, "--csv", "--page", "details", "--print-units", "base", "--metrics", ",".join(metrics_for(major)),
           "--target-processes", "all", "--log-file", str(out_csv), "--clock-control", clock_control]
    if timed_range:
        cmd += ["--nvtx", "--nvtx-include", f"{TIMED_RANGE}/"]
    if kernel_regex:
        cmd += ["--kernel-name-base", "function", "--kernel-name", f"regex:{kernel_regex}"]
    return [*cmd, sys.executable, str(script)]


def _value(raw: str, unit: str) -> float | str | None:
    s = raw.strip()
    if s.lower() in ("", "n/a", "nan"):
        return None
    try:
        return float(s.replace(",", "")) * _SCALE.get(unit.strip(), 1.0)
    except ValueError:
        return s


def parse_ncu_csv(text: str) -> list[dict[str, float | str | None]]:
    """One dict per launch (``id``, ``kernel``, metric -> value) from ncu's long-format ``--csv`` output."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("==")]
    rows = list(csv.reader(lines))
    start = next((i for i, r in enumerate(rows) if "Metric Name" in r and "Metric Value" in r), None)
    if start is None:
        return []
    header = rows[start]
    col = {name: header.index(name) for name in header}
    name_i, value_i, unit_i = col["Metric Name"], col["Metric Value"], col.get("Metric Unit")
    kernel_i, id_i = col.get("Kernel Name"), col.get("ID")
    launches: dict[str, dict[str, float | str | None]] = {}
    for r in rows[start + 1:]:
        if len(r) != len(header) or r == header:
            continue
        key = r[id_i] if id_i is not None else str(len(launches))
        launch = launches.setdefault(key, {"id": key, "kernel": r[kernel_i] if kernel_i is not None else ""})
        launch[r[name_i]] = _value(r[value_i], r[unit_i] if unit_i is not None else "")
    return list(launches.values())


@dataclass(frozen=True)
class NcuSummary:
    kernel: str
    duration_ns: float | None
    sm_pct: float | None
    memory_pct: float | None
    dram_bytes: float | None
    occupancy_pct: float | None
    occupancy_limiter: str | None
    registers: int | None
    tensor_pct: float | None  # the hmma pipe (mma.sync): Ampere-style tensor cores
    top_stalls: tuple[tuple[str, float], ...]  # (reason, % of the sampled stalls collected), largest first
    gmma_pct: float | None = None  # the gmma pipe (wgmma): Hopper's warpgroup tensor cores


def call_duration_ns(launches: list[NcuSummary]) -> float | None:
    """The profiled call's kernel time: the sum over its launches (None when none has a duration)."""
    known = [n.duration_ns for n in launches if n.duration_ns is not None]
    return sum(known) if known else None


def _num(row: dict, metric: str) -> float | None:
    v = row.get(metric)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def summarize_launches(rows: list[dict]) -> list[NcuSummary]:
    out = []
    for row in rows:
        limits = [(v, name) for name in LIMITS if (v := _num(row, f"launch__occupancy_limit_{name}")) is not None]
        stalls = [(s, v) for s in STALLS if (v := _num(row, STALL_PREFIX + s)) is not None and v > 0]
        total = sum(v for _, v in stalls)
        top = sorted(stalls, key=lambda sv: -sv[1])[:3]
        regs = _num(row, "launch__registers_per_thread")
        out.append(NcuSummary(
            kernel=str(row.get("kernel") or "?"),
            duration_ns=_num(row, "gpu__time_duration.sum"),
            sm_pct=_num(row, "sm__throughput.avg.pct_of_peak_sustained_elapsed"),
            memory_pct=_num(row, "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed"),
            dram_bytes=_num(row, "dram__bytes.sum"),
            occupancy_pct=_num(row, "sm__warps_active.avg.pct_of_peak_sustained_active"),
            occupancy_limiter=min(limits)[1] if limits else None,  # ties: first in LIMITS order
            registers=int(regs) if regs is not None else None,
            tensor_pct=_num(row, "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active"),
            top_stalls=tuple((s, round(100 * v / total, 1)) for s, v in top),
            gmma_pct=_num(row, GMMA),
        ))
    return out


def run_ncu(script: Path, workdir: Path, kernel_regex: str | None = None,
            timeout_s: float = 300, env: dict[str, str] | None = None,
            clock_control: str = "base", major: int | None = None) -> list[NcuSummary] | str:
    """Profile the kernel launches of ``python script``; the summaries, or a one-line reason. Never raises."""
    try:
        ok, reason = ncu_available()
        if not ok:
            return reason
        workdir.mkdir(parents=True, exist_ok=True)
        out_csv = workdir / "ncu.csv"
        out_csv.unlink(missing_ok=True)
        cmd = ncu_command(script, out_csv, kernel_regex, ncu=find_ncu() or "ncu", clock_control=clock_control,
                          major=major)
        p = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True, env=env)  # own group: a timeout ends ncu and the python
        try:
            console, _ = p.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            return f"ncu timed out after {timeout_s:.0f} s"
        log = out_csv.read_text(errors="replace") if out_csv.exists() else ""
        text = f"{log}\n{console or ''}"
        if problem := counter_permission_problem(text):
            return problem
        if p.returncode != 0:
            return f"ncu exited with {p.returncode}: {_last_error(text)}"
        summaries = summarize_launches(parse_ncu_csv(log) or parse_ncu_csv(console or ""))
        if not summaries:
            which = f" matching {kernel_regex!r}" if kernel_regex else ""
            return f"ncu profiled no kernel{which}"
        return summaries
    except Exception as e:  # the profile is advisory: any failure is a reason, never an exception
        return f"ncu failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
