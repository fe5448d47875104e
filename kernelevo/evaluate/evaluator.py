"""The judge: static checks, then a fresh worker per candidate, then verdicts from what it reports.

Reference outputs are built in this process before any candidate is imported and never
leave it; all comparisons happen here. A worker that hangs is killed at the deadline
(``timeout``), one that dies is a ``crash``; either way the next candidate gets a fresh one.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from kernelevo.candidate import Candidate
from kernelevo.evaluate import sandbox
from kernelevo.evaluate.compare import Tolerance, compare_outputs, compare_tensor
from kernelevo.evaluate.gpu_report import profile_of, with_roofline
from kernelevo.evaluate.static import check_source
from kernelevo.evaluate.timing import summarize
from kernelevo.evaluate.verdict import Evaluation, SizeResult, Verdict, geomean_speedup
from kernelevo.evaluate.worker import CANDIDATE_FILE, JOB_FILE, LOG_FILE, PROGRESS_FILE, sign
from kernelevo.problem import Problem
from kernelevo.reference import Reference, build_reference
from kernelevo.settings import EvalSettings


def _scratch(needed_bytes: int) -> str | None:
    """/dev/shm when it has room (often only 64 MB in containers), else the default temp dir."""
    try:
        if os.access("/dev/shm", os.W_OK) and shutil.disk_usage("/dev/shm").free > 3 * needed_bytes + (64 << 20):
            return "/dev/shm"
    except OSError:
        pass
    return None


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _is_fp32_problem(ref: Reference) -> bool:
    """fp32 unless some floating input or output is of lower precision."""
    dtypes = set()
    for case in ref.cases:
        for t in list(case.timing.inputs) + list(case.timing.expected):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                dtypes.add(t.dtype)
    return bool(dtypes) and dtypes <= {torch.float32, torch.float64}


def _compute_dtype(ref: Reference) -> str:
    """The lowest floating precision among inputs and outputs: it picks the FLOP/s ceiling."""
    order = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
    seen = {t.dtype for c in ref.cases for t in (*c.timing.inputs, *c.timing.expected)
            if isinstance(t, torch.Tensor) and t.is_floating_point()}
    return str(next((d for d in order if d in seen), torch.float32)).removeprefix("torch.")


def _job_bytes(ref: Reference) -> int:
    tensors = [t for c in ref.cases for d in (*c.draws, c.timing) for t in d.inputs if isinstance(t, torch.Tensor)]
    tensors += [t for c in ref.cases for t in c.state_dict.values()]
    return sum(t.numel() * t.element_size() for t in tensors)


class Evaluator:
    """Judges candidates for one problem on one device. Use as a context manager."""

    def __init__(
        self,
        problem: Problem,
        device: str = "cpu",
        settings: EvalSettings | None = None,
        *,
        static_checks: bool = True,  # off only to test the runtime defences on their own
    ):
        self.problem = problem
        self.device = device
        self.settings = settings or EvalSettings()
        self.static_checks = static_checks
        s = self.settings
        # The zygote's imports (~3 s) run while the reference is built here.
        self._zygote: sandbox.Zygote | None = sandbox.Zygote(device, s.allow_tf32)
        try:
            self.reference: Reference = build_reference(
                problem, device, s.seed, s.draws, s.rescaled_draw, s.allow_tf32
            )
        except BaseException:
            self.close()
            raise
        self.fp32 = _is_fp32_problem(self.reference)
        self.dtype = _compute_dtype(self.reference)
        self._l2_bytes = 0
        self.calibration = None
        if device == "cuda":
            self._l2_bytes = int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20))
            from kernelevo.profile.calibrate import ensure

            self.calibration = ensure()  # measured once per GPU type, then read from profiling/
        # The job (inputs and weights for every size) is written once and shared by all
        # candidates; it is re-hashed before each one so no candidate can alter the next's inputs.
        self._dir = Path(tempfile.mkdtemp(prefix="kernelevo-eval-", dir=_scratch(_job_bytes(self.reference))))
        self._job_file = self._dir / JOB_FILE
        torch.save(self._job(), self._job_file)
        self._job_digest = _file_digest(self._job_file)

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._zygote is not None:
            self._zygote.close()
            self._zygote = None
        if not self.settings.keep_jobs and hasattr(self, "_dir"):
            shutil.rmtree(self._dir, ignore_errors=True)

    def _zygote_ready(self) -> sandbox.Zygote:
        if self._zygote is None or self._zygote.dead:
            if self._zygote is not None:
                self._zygote.close()
            self._zygote = sandbox.Zygote(self.device, self.settings.allow_tf32)
        return self._zygote

    # -- one candidate ---------------------------------------------------------------------
    def evaluate(self, candidate: Candidate) -> Evaluation:
        start = time.monotonic()

        def done(verdict: Verdict, reason: str, **kw: Any) -> Evaluation:
            return Evaluation(candidate.name, verdict, reason, self.device,
                              elapsed_s=round(time.monotonic() - start, 3), **kw)

        if self.static_checks:
            st = check_source(candidate.source, self.fp32, self.settings.allow_tf32)
            if st.verdict is not None:
                return done(st.verdict, st.reason)
        job_dir = Path(tempfile.mkdtemp(prefix="candidate-", dir=self._dir))
        try:
            return self._run(candidate, job_dir, start, done)
        finally:
            if not self.settings.keep_jobs:
                shutil.rmtree(job_dir, ignore_errors=True)

    def _job(self) -> dict[str, Any]:
        s, ref = self.settings, self.reference
        return {
            "device": self.device,
            "allow_tf32": s.allow_tf32,
            "problem_path": str(self.problem.path),
            "overrides": self.problem.overrides,
            "timing": {
                "cpu_warmup": s.cpu_warmup, "cpu_reps": s.cpu_reps, "gpu_warmup": s.gpu_warmup,
                "gpu_reps": s.gpu_reps, "gpu_max_time_s": s.gpu_max_time_s, "l2_bytes": self._l2_bytes,
                "compile_baseline": s.compile_baseline, "cuda_graph": s.cuda_graph,
            },
            "cases": [
                {
                    "label": self.problem.label(c.size),
                    "size": c.size,
                    "init_inputs": c.init_inputs,
                    "state_dict": c.state_dict,
                    "draws": [d.inputs for d in c.draws],
                    "timing_draw": c.timing.inputs,
                }
                for c in ref.cases
            ],
        }

    def _run(self, candidate: Candidate, job_dir: Path, start: float, done: Any) -> Evaluation:
        (job_dir / CANDIDATE_FILE).write_text(candidate.source)
        if _file_digest(self._job_file) != self._job_digest:  # a previous candidate wrote to it
            torch.save(self._job(), self._job_file)
        secret = os.urandom(32)
        deadline = start + self.settings.timeout_s
        try:
            zygote = self._zygote_ready()
            pid = zygote.fork(job_dir, self._job_file, secret)
        except sandbox.ZygoteError as e:
            self.close()
            return done(Verdict.CRASH, f"could not start a worker: {e}")

        status: int | None = None
        try:
            for phase in ("check", "timing"):
                path = job_dir / phase
                if status is None:
                    appeared, status = sandbox.wait_for_file(path, zygote, pid, deadline)
                else:
                    appeared = path.exists()
                if not appeared:
                    log = _tail(job_dir / LOG_FILE)
                    where = _tail(job_dir / PROGRESS_FILE, 1) or "starting"
                    if status is None:
                        return done(Verdict.TIMEOUT, f"no result within {self.settings.timeout_s:g} s "
                                    f"(was {where})", log=log)
                    return done(Verdict.CRASH, f"worker {sandbox.describe_status(status)} during {where}",
                                log=log, error=log or None)
                result = self._read(path, secret)
                if result is None:
                    return done(Verdict.CRASH, f"the worker's {phase} result was tampered with or unreadable")
                if "error" in result:
                    err = result["error"]
                    return done(Verdict(err["verdict"]), err["reason"], error=err.get("tb"),
                                log=_tail(job_dir / LOG_FILE))
                if phase == "check":
                    verdict, reason, sizes, ops = self._judge_check(result)
                    if verdict is not Verdict.CORRECT:
                        return done(verdict, reason, sizes=sizes, torch_ops=ops)
                else:
                    verdict, reason, sizes = self._judge_timing(result, sizes)
                    timing = "cuda-events" if self.device == "cuda" else "cpu-interpreter"
                    ok = verdict is Verdict.CORRECT
                    profile, text = None, None
                    if ok and self.device == "cuda":
                        profile, text = profile_of(result, sizes, self.calibration, self.dtype,
                                                   self.settings.allow_tf32)
                    return done(verdict, reason, sizes=sizes, torch_ops=ops, timing=timing,
                                speedup=geomean_speedup(sizes) if ok else None,
                                speedup_compiled=geomean_speedup(sizes, "compiled_ms") if ok else None,
                                profile=profile, profile_text=text)
            raise AssertionError("unreachable")
        finally:
            if status is None:
                zygote.kill(pid)

    @staticmethod
    def _read(path: Path, secret: bytes) -> dict[str, Any] | None:
        try:
            data = path.read_bytes()
            sig = (path.parent / f"{path.name}.sig").read_text().strip()
        except OSError:
            return None
        if not hmac.compare_digest(sig, sign(secret, data)):
            return None
        try:
            # weights_only: the file came from candidate-controlled memory; load no objects.
            return torch.load(io.BytesIO(data), weights_only=True)
        except Exception:
            return None

    # -- verdicts ----------------------------------------------------------------------------
    def _judge_check(self, result: dict[str, Any]) -> tuple[Verdict, str, tuple[SizeResult, ...], tuple[str, ...]]:
        ref, p = self.reference, self.problem
        ops = tuple(result.get("ops", ()))
        sizes: list[SizeResult] = []
        for case, got in zip(ref.cases, result["cases"], strict=True):
            label = p.label(case.size)
            worst_abs = worst_rel = 0.0
            launches = min(d["launches"] for d in got["draws"])
            for d, (draw, out) in enumerate(zip(case.draws, got["draws"], strict=True)):
                where = f"size {label}, draw {d}"
                if out["launches"] == 0:
                    return (Verdict.REJECTED, f"{where}: forward launched no kernel of its own (a PyTorch "
                            "path or a fallback ran instead)", tuple(sizes), ops)
                if out["input_digest"] != draw.digest:
                    return (Verdict.REJECTED, f"{where}: forward modified its inputs; inputs are read-only",
                            tuple(sizes), ops)
                c = compare_outputs(out["outputs"], list(draw.expected), p.atol, p.rtol)
                if not c.ok:
                    sizes.append(SizeResult(case.size, c.max_abs_err, c.max_rel_err, launches=launches))
                    return Verdict.INCORRECT, f"{where}: {c.reason}", tuple(sizes), ops
                worst_abs, worst_rel = max(worst_abs, c.max_abs_err), max(worst_rel, c.max_rel_err)
            for name, expected in case.final_buffers.items():
                actual = got["buffers"].get(name)
                c = compare_tensor(actual, expected, Tolerance.for_dtype(expected.dtype, p.atol, p.rtol),
                                   f"buffer {name} after the draws")
                if not c.ok:
                    return Verdict.INCORRECT, f"size {label}: {c.reason}", tuple(sizes), ops
            sizes.append(SizeResult(case.size, worst_abs, worst_rel, launches=launches))
        if ref.compute_ops and ref.compute_ops <= set(ops):
            names = ", ".join(sorted(ref.compute_ops))
            return (Verdict.REJECTED, f"forward still calls the reference's PyTorch compute ops ({names}); "
                    "replace them with your kernel", tuple(sizes), ops)
        return Verdict.CORRECT, "", tuple(sizes), ops

    def _judge_timing(
        self, result: dict[str, Any], checked: tuple[SizeResult, ...]
    ) -> tuple[Verdict, str, tuple[SizeResult, ...]]:
        ref, p = self.reference, self.problem
        sizes: list[SizeResult] = []
        for case, got, prev in zip(ref.cases, result["cases"], checked, strict=True):
            cand, base = got["candidate"], got["reference"]
            if cand["launches"] == 0:
                return (Verdict.REJECTED, f"size {p.label(case.size)}: no kernel of its own launched while "
                        "timed", tuple(sizes))
            if not case.stateful:
                c = compare_outputs(cand["last_output"], list(case.timing.expected), p.atol, p.rtol)
                if not c.ok:
                    return (Verdict.INCORRECT, f"size {p.label(case.size)}: the last timed call's output is wrong "
                            f"({c.reason}); results must not be cached across calls", tuple(sizes))
            med, spread = summarize(cand["ms"])
            ref_med, _ = summarize(base["ms"])
            compiled = got.get("compiled", {})
            comp_med = round(summarize(compiled["ms"])[0], 6) if compiled.get("ms") else None
            nvml = [e.get("nvml") for e in (cand, base) if e.get("nvml")]
            throttled = any(n.get("throttled") for n in nvml) if nvml else None
            size = SizeResult(prev.size, prev.max_abs_err, prev.max_rel_err, round(med, 6), round(spread, 4),
                              round(ref_med, 6), prev.launches, comp_med, throttled=throttled)
            size, impossible = with_roofline(size, case.flops, case.min_bytes, self.calibration, self.settings,
                                             self.dtype)
            if impossible:
                return Verdict.REJECTED, f"size {p.label(case.size)}: {impossible}", tuple(sizes)
            sizes.append(size)
        return Verdict.CORRECT, "", tuple(sizes)
