"""The judge: a plan of fresh draws, a confined worker per candidate, a clean one for the
reference, and verdicts from what they report.

Expected outputs are built here, before the candidate is imported, and never leave this
process; the candidate's worker gets one step at a time over its socket and the comparisons
happen here. A worker that hangs is killed at the deadline (``timeout``), one that dies is a
``crash``; either way the next candidate gets a fresh one.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from kernelevo.candidate import Candidate
from kernelevo.evaluate import judge, sandbox
from kernelevo.evaluate import protocol as P
from kernelevo.evaluate.gpu_report import profile_of, with_roofline
from kernelevo.evaluate.plan import Plan, PlannedCall, SizePlan, make_plan
from kernelevo.evaluate.static import check_source
from kernelevo.evaluate.timing import disagreement_note, merge_extras, paired_speedup, summarize
from kernelevo.evaluate.verdict import Evaluation, SizeResult, Verdict, geomean_speedup
from kernelevo.evaluate.worker import CANDIDATE_FILE, LOG_FILE, PROGRESS_FILE
from kernelevo.problem import Problem
from kernelevo.reference import Reference, build_reference, digest
from kernelevo.settings import EvalSettings

SCRATCH_PREFIX = "kernelevo-eval-"
CPU_SPEED_NOTE = ("no speedup on a CPU: Triton's interpreter times a Python loop, not a GPU; correctness, the "
                  "verdicts and the kernels' structure are what a CPU run establishes, speed is measured on a GPU")
OWNER_FILE = "owner"


def _process_id(pid: int) -> str:
    """``pid`` and its start time (clock ticks since boot): a reused pid does not match."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            start = f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        start = "?"
    return f"{pid} {start}"


def sweep_stale(root: Path) -> list[Path]:
    """Remove scratch folders of evaluators whose process is gone (a killed run leaves its job data
    behind otherwise). A folder without an owner file is left alone unless a day old. Returns what
    was removed."""
    removed = []
    for d in root.glob(SCRATCH_PREFIX + "*"):
        try:
            owner = (d / OWNER_FILE).read_text().split()
            gone = len(owner) == 2 and owner[0].isdigit() and _process_id(int(owner[0])).split() != owner
        except FileNotFoundError:
            gone = time.time() - d.stat().st_mtime > 86400
        except OSError:
            continue
        if gone:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


class _Stop(Exception):
    """Ends an evaluation with a verdict."""

    def __init__(self, verdict: Verdict, reason: str, **kw: Any):
        super().__init__(reason)
        self.verdict, self.reason, self.kw = verdict, reason, kw


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _float_dtypes(ref: Reference) -> set[torch.dtype]:
    return {t.dtype for c in ref.cases for t in (*c.timing.inputs, *c.timing.expected)
            if isinstance(t, torch.Tensor) and t.is_floating_point()}


def _compute_dtype(ref: Reference) -> str:
    """The lowest floating precision among inputs and outputs: it picks the FLOP/s ceiling."""
    seen = _float_dtypes(ref)
    order = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
    return str(next((d for d in order if d in seen), torch.float32)).removeprefix("torch.")


class _Worker:
    """One worker process and its channel, with the deadline its answers must meet."""

    def __init__(self, zygote: sandbox.Zygote, role: str, job_dir: Path, limit_s: float):
        self.zygote, self.job_dir, self.limit_s = zygote, job_dir, limit_s
        self.pid, self.chan = zygote.fork(role, job_dir)
        self.status: int | None = None

    def ask(self, msg: Any, deadline: float, want: type | tuple[type, ...]) -> Any:
        """Send ``msg`` (None: just listen) and return the answer, or raise _Stop."""
        try:
            if msg is not None:
                self.chan.send(msg)
            answer = self.chan.recv(timeout=deadline - time.monotonic())
        except TimeoutError:
            raise _Stop(Verdict.TIMEOUT, f"no result within {self.limit_s:g} s (was "
                        f"{_tail(self.job_dir / PROGRESS_FILE, 1) or 'starting'})",
                        log=_tail(self.job_dir / LOG_FILE)) from None
        except P.ChannelError as e:
            status = self.zygote.wait(self.pid, 2.0)
            self.status = status
            log = _tail(self.job_dir / LOG_FILE)
            if status is None:
                raise _Stop(Verdict.CRASH, f"the worker's answer was tampered with or unreadable ({e})", log=log) from e
            where = _tail(self.job_dir / PROGRESS_FILE, 1) or "starting"
            raise _Stop(Verdict.CRASH, f"worker {sandbox.describe_status(status)} during {where}", log=log,
                        error=log or None) from e
        if isinstance(answer, P.Failed):
            raise _Stop(Verdict(answer.verdict), answer.reason, error=answer.tb, log=_tail(self.job_dir / LOG_FILE),
                        torch_ops=answer.torch_ops)
        if not isinstance(answer, want):
            raise _Stop(Verdict.CRASH, f"the worker answered {type(answer).__name__} to {type(msg).__name__}")
        return answer

    def close(self) -> None:
        try:
            self.chan.send(P.Bye())
        except P.ChannelError:
            pass
        self.chan.close()
        if self.status is None and self.zygote.wait(self.pid, 1.0) is None:
            self.zygote.kill(self.pid)


def _without(ms: tuple[float, ...], first: int, warmup: int, stressed: dict[int, Any]) -> tuple[float, ...]:
    """A block's times without its hidden stress draws (large inputs may time differently), unless
    that would leave fewer than two (a CPU block of one timed call: its time is noise anyway)."""
    keep = tuple(t for k, t in enumerate(ms) if first + warmup + k not in stressed)
    return keep if len(keep) >= 2 else ms


# Building references and judging use torch's process-wide state (its RNG, its thread pool, its
# backends' flags): evaluators in one process take turns. The executors never judge two at once
# in one process (several workers are processes or Ray actors); this makes a caller that does so
# (a notebook, a test, a future executor) slower instead of wrong: two evaluators judging on two
# threads once reported a correct kernel wrong (a CI run of issue 13).
_TURN = threading.RLock()


class Evaluator:
    """Judges candidates for one problem on one device. Use as a context manager. Thread-safe:
    evaluations (of this and of any other evaluator in the process) run one at a time."""

    def __init__(self, problem: Problem, device: str = "cpu", settings: EvalSettings | None = None, *,
                 static_checks: bool = True):
        self.problem = problem
        self.device = device
        self.settings = settings or EvalSettings()
        self.static_checks = static_checks
        s = self.settings
        # The zygote's imports (~3 s) run while the reference is built here.
        self._zygote: sandbox.Zygote | None = sandbox.Zygote(device, s.allow_tf32)
        self._ref_worker: _Worker | None = None
        sweep_stale(Path(tempfile.gettempdir()))
        self._dir = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
        (self._dir / OWNER_FILE).write_text(_process_id(os.getpid()))
        try:
            with _TURN:
                self.reference: Reference = build_reference(problem, device, max(s.seed, 0), 2, True,
                                                            s.allow_tf32)
        except BaseException:
            self.close()
            raise
        self.fp32 = bool(_float_dtypes(self.reference)) and _float_dtypes(self.reference) <= {torch.float32,
                                                                                               torch.float64}
        self.dtype = _compute_dtype(self.reference)
        self._l2_bytes = 0
        self.calibration = None
        self._notes: list[str] = []  # said once per run
        self._eval_notes: list[str] = []  # the current evaluation's notes
        self.baseline_compiles = 0  # torch.compile of the reference: once per size for the whole run
        self._stress_drawn = 0  # hidden stress draws made, so each is a fresh one
        if device == "cuda":
            self._l2_bytes = int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20))
            from kernelevo.profile.calibrate import ensure

            self.calibration = ensure()  # measured once per GPU type, then read from profiling/

    @property
    def run_notes(self) -> tuple[str, ...]:
        """What the judge could not do on this machine, said once per evaluator (no Landlock, say)."""
        return tuple(self._notes)

    def _note(self, text: str) -> None:
        """Say ``text`` once per run (in the evaluation where it first came up)."""
        if text not in self._notes:
            self._notes.append(text)
            self._eval_notes.append(text)

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._ref_worker is not None:
            self._ref_worker.close()
            self._ref_worker = None
        if self._zygote is not None:
            self._zygote.close()
            self._zygote = None
        if not self.settings.keep_jobs and hasattr(self, "_dir"):
            shutil.rmtree(self._dir, ignore_errors=True)

    def _zygote_ready(self) -> sandbox.Zygote:
        if self._zygote is None or self._zygote.dead:
            if self._zygote is not None:
                self._zygote.close()
            self._ref_worker = None
            self._zygote = sandbox.Zygote(self.device, self.settings.allow_tf32)
        return self._zygote

    def _setup(self, role: str) -> P.Setup:
        s = self.settings
        timing = {"cpu_warmup": s.cpu_warmup, "cpu_reps": s.cpu_reps, "gpu_warmup": s.gpu_warmup,
                  "gpu_reps": s.gpu_reps, "l2_bytes": self._l2_bytes,
                  "compile_baseline": s.compile_baseline, "cuda_graph": s.cuda_graph,
                  "gpu_max_time_s": s.gpu_max_time_s / max(1, s.timing_blocks)}  # per block
        return P.Setup(role, self.device, s.allow_tf32, timing, str(self.problem.path), dict(self.problem.overrides))

    # -- one candidate ---------------------------------------------------------------------
    def evaluate(self, candidate: Candidate) -> Evaluation:
        with _TURN:
            return self._evaluate(candidate)

    def _evaluate(self, candidate: Candidate) -> Evaluation:
        start = time.monotonic()  # after the turn: the time limit is the candidate's own
        s = self.settings
        seed = s.seed if s.seed >= 0 else random.SystemRandom().randrange(1 << 31)
        notes: list[str] = []

        def done(verdict: Verdict, reason: str, **kw: Any) -> Evaluation:
            return Evaluation(candidate.name, verdict, reason, self.device, seed=seed, notes=tuple(notes),
                              elapsed_s=round(time.monotonic() - start, 3), **kw)

        if self.static_checks:
            st = check_source(candidate.source)
            if st.verdict is not None:
                return done(st.verdict, st.reason)
        plan = make_plan(self.reference, seed, s.torch_compute_share, s.extra_size_bytes, s.extra_size)
        notes += plan.notes
        job_dir = Path(tempfile.mkdtemp(prefix="candidate-", dir=self._dir))
        (job_dir / CANDIDATE_FILE).write_text(candidate.source)
        worker: _Worker | None = None
        try:
            try:
                worker = _Worker(self._zygote_ready(), "candidate", job_dir, s.timeout_s)
            except sandbox.ZygoteError as e:
                self.close()
                return done(Verdict.CRASH, f"could not start a worker: {e}")
            deadline = start + s.timeout_s
            try:
                return self._judge(worker, plan, deadline, done, notes)
            except _Stop as stop:
                return done(stop.verdict, stop.reason, **stop.kw)
        finally:
            if worker is not None:
                worker.close()
            if not s.keep_jobs:
                shutil.rmtree(job_dir, ignore_errors=True)

    def _judge(self, w: _Worker, plan: Plan, deadline: float, done: Any, notes: list[str]) -> Evaluation:
        s, p = self.settings, self.problem
        share = s.torch_compute_share
        budget_inf = s.allow_torch_compute
        self._facts: list[dict[str, Any]] = []
        self._eval_notes = notes
        ready: P.Ready = w.ask(self._setup("candidate"), deadline, P.Ready)
        if ready.note:
            self._note(ready.note)
        sizes: list[SizeResult] = []
        max_share = 0.0
        ops: set[str] = set()
        passed = 0
        next_id = 0
        for sp in plan.sizes:
            budget = float("inf") if budget_inf else sp.budget
            w.ask(P.Construct(sp.index, sp.label, sp.init_inputs, budget), deadline, P.Done)
            w.ask(P.Load(sp.state_a), deadline, P.Done)
            firsts: dict[int, tuple[torch.Tensor, ...]] = {}
            worst_abs = worst_rel = 0.0
            launches = None
            weights = "A"
            checks = list(sp.calls)
            for planned in checks:
                if planned.weights != weights:
                    w.ask(P.Load(sp.state_b), deadline, P.Done)
                    weights = planned.weights
                out = self._call(w, next_id, planned.inputs, None, deadline)
                firsts[next_id] = out.outputs
                next_id += 1
                max_share = max(max_share, judge.torch_share(out.torch_work, sp.work))
                ops |= set(out.torch_ops)
                j = judge.judge_call(planned, out, sp, p.atol, p.rtol, share, passed)
                if not j.ok:
                    raise _Stop(j.verdict, j.reason, sizes=tuple(sizes), torch_ops=out.torch_ops)
                foreign = judge.foreign_reason(out, share)
                if foreign and not budget_inf:
                    raise _Stop(Verdict.REJECTED, f"size {sp.label}: {foreign}", sizes=tuple(sizes))
                if planned.state_after is not None:
                    wrong = judge.judge_state(w.ask(P.GetState(), deadline, P.State).state_dict, sp, p.atol, p.rtol,
                                              planned.state_after, f"call {next_id - 1}")
                    if wrong:
                        raise _Stop(Verdict.INCORRECT, wrong, sizes=tuple(sizes))
                passed += 1
                launches = out.launches if launches is None else min(launches, out.launches)
                worst_abs, worst_rel = max(worst_abs, j.max_abs_err), max(worst_rel, j.max_rel_err)
                if planned.kind == "weights B" and ready.configs > 1 and not sp.stateful:
                    passed = self._check_configs(w, sp, planned, ready.configs, next_id, deadline, passed)
                    next_id += min(ready.configs, s.max_config_checks)
            reused = judge.judge_recheck(firsts, w.ask(P.Recheck(tuple(firsts)), deadline, P.Outputs).outputs,
                                         sp.label)
            if reused:
                raise _Stop(Verdict.INCORRECT, reused, sizes=tuple(sizes))
            state_problem = judge.judge_state(w.ask(P.GetState(), deadline, P.State).state_dict, sp, p.atol, p.rtol)
            if state_problem:
                raise _Stop(Verdict.INCORRECT, state_problem, sizes=tuple(sizes))
            w.ask(P.Release(tuple(firsts)), deadline, P.Done)
            result = SizeResult(sp.size, worst_abs, worst_rel, launches=launches)
            if not sp.extra:
                result, next_id, passed, reference_s = self._time(w, sp, result, next_id, deadline, passed)
                deadline += reference_s  # the reference's blocks (and its compile) are not the candidate's time
            sizes.append(result)
        timed = [r for r, sp in zip(sizes, plan.sizes, strict=True) if not sp.extra]
        hybrid = budget_inf and max_share > share
        ok_sizes = []
        for r, sp in zip(timed, [sp for sp in plan.sizes if not sp.extra], strict=True):
            r, impossible = with_roofline(r, sp.flops, sp.min_bytes, self.calibration, s, self.dtype)
            if impossible:
                raise _Stop(Verdict.REJECTED, f"size {sp.label}: {impossible}", sizes=tuple(ok_sizes))
            ok_sizes.append(r)
        profile = text = None
        speedup = speedup_compiled = None
        if self.device == "cuda":
            profile, text = profile_of({"cases": self._facts}, tuple(ok_sizes), self.calibration, self.dtype,
                                       s.allow_tf32)
            speedup = geomean_speedup(tuple(ok_sizes))
            speedup_compiled = geomean_speedup(tuple(ok_sizes), "compiled_ms")
        else:
            # Triton's interpreter times a Python loop: the same kernel measured 0.24x, 0.013x and 0.17x in
            # three checks. The timings stay in the sizes, labelled; no speedup is claimed from them.
            ok_sizes = [replace(r, speedup=None, speedup_spread=None, compiled_speedup=None) for r in ok_sizes]
            self._note(CPU_SPEED_NOTE)
        return done(Verdict.CORRECT, "", sizes=tuple(ok_sizes), torch_ops=tuple(sorted(ops)),
                    timing="cuda-events" if self.device == "cuda" else "cpu-interpreter",
                    speedup=speedup, speedup_compiled=speedup_compiled,
                    profile=profile, profile_text=text, hybrid=hybrid, torch_share=round(max_share, 4))

    def _call(self, w: _Worker, call_id: int, inputs: tuple[Any, ...], pin: int | None, deadline: float) -> P.Output:
        return w.ask(P.Call(call_id, inputs, pin), deadline, P.Output)

    def _check_configs(self, w: _Worker, sp: SizePlan, planned: Any, n: int, first_id: int, deadline: float,
                       passed: int) -> int:
        """Every autotune config on one draw: another GPU may pick another one."""
        p = self.problem
        for i in range(min(n, self.settings.max_config_checks)):
            out = self._call(w, first_id + i, planned.inputs, i, deadline)
            j = judge.judge_call(planned, out, sp, p.atol, p.rtol, self.settings.torch_compute_share, passed)
            if not j.ok:
                which = f" ({'; '.join(out.configs)})" if out.configs else ""
                raise _Stop(j.verdict, f"autotune config {i}{which}: {j.reason}")
            passed += 1
        w.ask(P.Release(tuple(range(first_id, first_id + min(n, self.settings.max_config_checks)))), deadline,
              P.Done)
        return passed

    # -- timing ----------------------------------------------------------------------------
    def _timing_draws(self, sp: SizePlan) -> tuple[int, list[tuple[Any, ...]]]:
        s = self.settings
        if self.device == "cuda":
            warmup, reps = s.gpu_warmup, s.gpu_reps
            first = sp.draw(0)
            per = sum(t.numel() * t.element_size() for t in first if isinstance(t, torch.Tensor)) or 1
            n = max(4, min(warmup + reps, s.timing_bytes // per))
            warmup = min(warmup, n // 3)
            return warmup, [first] + [sp.draw(i) for i in range(1, n)]
        return s.cpu_warmup, [sp.draw(i) for i in range(s.cpu_warmup + s.cpu_reps)]

    def _blocks(self, warmup: int, n: int) -> list[tuple[int, int, int]]:
        """Draws ``0..n-1`` cut into interleaved blocks: (start, stop, warm-up calls in the block);
        the first block carries the warm-up."""
        timed = n - warmup
        k = max(1, min(self.settings.timing_blocks, timed))
        cuts = [warmup + timed * j // k for j in range(k + 1)]
        return [(0 if j == 0 else cuts[j], cuts[j + 1], warmup if j == 0 else 0) for j in range(k)]

    def _time(self, w: _Worker, sp: SizePlan, result: SizeResult, next_id: int, deadline: float,
              passed: int) -> tuple[SizeResult, int, int, float]:
        """Candidate and reference timed in alternating blocks (A B A B ..., the controller holding
        one block at a time), each pair on the same draws; the speedup is the median of the
        blocks' ratios, so drift of clocks and temperature between blocks cancels. Returns the
        seconds the reference's blocks took, which the candidate's deadline does not count."""
        s, p = self.settings, self.problem
        warmup, draws = self._timing_draws(sp)
        restore = sp.state_b if sp.stateful else None
        cand_ms: list[tuple[float, ...]] = []
        ref_ms: list[tuple[float, ...]] = []
        comp_ms: list[tuple[float, ...]] = []
        kernel_ms: list[float] = []
        ids: list[int] = []
        extras: dict[str, list[dict[str, Any]]] = {"candidate": [], "reference": []}
        compile_error = None
        reference_s = 0.0
        blocks = self._blocks(warmup, len(draws))
        stressed = self._disguise(sp, draws, blocks)
        lasts: set[int] = set()
        for a, b, wu in blocks:
            cand: P.Timed = w.ask(P.Time(next_id + a, tuple(draws[a:b]), wu, restore), deadline, P.Timed)
            ids += range(next_id + a, next_id + a + wu + len(cand.ms))
            lasts.add(ids[-1])
            if cand.poisoned:
                raise _Stop(Verdict.REJECTED, f"size {sp.label}, timed calls: "
                            f"{judge.torch_reason(cand.torch_work, cand.torch_ops, sp, s.torch_compute_share)}")
            if cand.launches == 0:
                raise _Stop(Verdict.REJECTED, f"size {sp.label}: no kernel of its own launched while timed")
            foreign = judge.foreign_reason(cand, s.torch_compute_share)
            if foreign and not s.allow_torch_compute:
                raise _Stop(Verdict.REJECTED, f"size {sp.label}, timed calls: {foreign}")
            t0 = time.monotonic()
            base = self._time_reference(sp, draws[a:b], wu, restore)
            took = time.monotonic() - t0
            deadline += took
            reference_s += took
            cand_ms.append(_without(cand.ms, a, wu, stressed))
            ref_ms.append(_without(base.ms, a, wu, stressed))
            kernel_ms += cand.kernel_ms
            self.baseline_compiles += bool(base.extra.get("compiled_now"))
            compiled = base.extra.get("compiled_ms")
            if isinstance(compiled, list) and compiled:
                comp_ms.append(tuple(compiled))
            elif isinstance(compiled, str):
                compile_error = compiled
            extras["candidate"].append(cand.extra)
            extras["reference"].append(base.extra)
        sampled = ids if self.device == "cpu" else random.SystemRandom().sample(ids, min(len(ids), s.timed_checks))
        # Every hidden stress draw, and each block's last call (the one a CUDA graph's buffers hold).
        checked = sorted({*sampled, *(next_id + i for i in stressed if next_id + i in ids), *lasts})
        rechecked = w.ask(P.Recheck(tuple(checked)), deadline, P.Outputs)
        for i, d in sorted(rechecked.input_digests.items()):
            if d != digest(list(draws[i - next_id])):
                raise _Stop(Verdict.REJECTED, f"size {sp.label}, timed call {i}: forward modified its inputs; "
                            "inputs are read-only, in timed calls as in checked ones")
        got = rechecked.outputs
        expected = {i: sp.reference(draws[i - next_id]) for i in checked if i - next_id not in stressed}
        wrong = judge.judge_timed(got, expected, sp, p.atol, p.rtol, passed,
                                  {next_id + i: c for i, c in stressed.items() if next_id + i in checked})
        if not wrong and sp.stateful:
            last = max(ids) - next_id
            wrong = judge.judge_state(w.ask(P.GetState(), deadline, P.State).state_dict, sp, p.atol, p.rtol,
                                      sp.reference_state(draws[last]), "the last timed call")
        if wrong:
            raise _Stop(Verdict.INCORRECT, wrong)
        w.ask(P.Release(tuple(ids)), deadline, P.Done)
        med, spread = summarize([x for block in cand_ms for x in block])
        ref_med, _ = summarize([x for block in ref_ms for x in block])
        speedup, speedup_spread = paired_speedup(cand_ms, ref_ms)
        comp_med = comp_speedup = None
        if len(comp_ms) == len(cand_ms):
            comp_med = round(summarize([x for block in comp_ms for x in block])[0], 6)
            comp_speedup = round(paired_speedup(cand_ms, comp_ms)[0], 4)
        elif compile_error:
            self._note(f"torch.compile of the reference failed, no compile baseline: {compile_error}")
        kern = round(statistics.median(kernel_ms), 6) if kernel_ms else None
        if kern is not None and med > 0 and abs(kern - med) > 0.1 * med:
            self._eval_notes.append(disagreement_note(sp.label, med, kern))
        nvml = [e.get("nvml") for side in extras.values() for e in side if e.get("nvml")]
        throttled = any(n.get("throttled") for n in nvml) if nvml else None
        if any(e.get("persisting_l2") for e in extras["candidate"]):
            self._eval_notes.append(f"size {sp.label}: the candidate set aside persisting L2; it was reset "
                                    "before every timed call")
        if self.device == "cuda":
            self._facts.append({"candidate": merge_extras(extras["candidate"]),
                                "reference": merge_extras(extras["reference"])})
        return (replace(result, latency_ms=round(med, 6), latency_spread=round(spread, 4),
                        reference_ms=round(ref_med, 6), compiled_ms=comp_med, throttled=throttled,
                        speedup=round(speedup, 4) if speedup else None, speedup_spread=round(speedup_spread, 4),
                        compiled_speedup=comp_speedup, kernel_ms=kern, blocks=len(cand_ms)),
                max(ids) + 1, passed + len(checked), reference_s)

    def _disguise(self, sp: SizePlan, draws: list[tuple[Any, ...]],
                  blocks: list[tuple[int, int, int]]) -> dict[int, PlannedCall]:
        """Put a stress draw at a random place among the first ten calls of each timing block (a
        GPU block times at least ten). It is judged like the checked stress draws and left out of
        the block's times; to the kernel it is one more timed call. Returns draw index -> plan."""
        rng = random.SystemRandom()
        out: dict[int, PlannedCall] = {}
        for a, b, _ in blocks:
            i = a + rng.randrange(min(10, b - a))
            planned = sp.stressed(self._stress_drawn)
            self._stress_drawn += 1
            if planned is None:
                continue
            draws[i] = planned.inputs
            out[i] = planned
        return out

    def _time_reference(self, sp: SizePlan, draws: list[tuple[Any, ...]], warmup: int,
                        restore: dict[str, torch.Tensor] | None) -> P.Timed:
        """The reference, timed on the same draws in a worker no candidate ever ran in (it lives
        for the whole run; its compiled baseline is compiled once per size, on its own clock)."""
        limit = max(self.settings.timeout_s, 60.0)
        deadline = time.monotonic() + limit
        for attempt in range(2):
            try:
                if self._ref_worker is None:
                    ref_dir = Path(tempfile.mkdtemp(prefix="reference-", dir=self._dir))
                    self._ref_worker = _Worker(self._zygote_ready(), "reference", ref_dir, limit)
                    self._ref_worker.ask(self._setup("reference"), deadline, P.Ready)
                rw = self._ref_worker
                rw.ask(P.Construct(sp.index, sp.label, sp.init_inputs, 0.0, sp.size), deadline, P.Done)
                rw.ask(P.Load(sp.state_b), deadline, P.Done)
                timed = rw.ask(P.Time(0, tuple(draws), warmup, restore), deadline, P.Timed)
                rw.ask(P.Release(tuple(range(warmup + len(timed.ms)))), deadline, P.Done)
                return timed
            except (_Stop, sandbox.ZygoteError) as e:
                if self._ref_worker is not None:
                    self._ref_worker.close()
                    self._ref_worker = None
                if attempt:
                    reason = e.reason if isinstance(e, _Stop) else str(e)
                    raise _Stop(Verdict.CRASH, f"timing the reference failed: {reason}") from None
        raise AssertionError("unreachable")
