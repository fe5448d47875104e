"""A worker: a forked child of the zygote that serves the controller one step at a time.

Two roles. A **candidate** worker confines itself (Landlock, an audit hook, PyTorch's compute
poisoned, host reads refused, the judge's modules hidden), imports the candidate before any
input exists in its process, then builds, loads, calls and times ``ModelNew`` as asked,
answering each step with what it saw: outputs (copied to the CPU), launches of its own
kernels, PyTorch compute it did, whether it left the process as it found it. A
**reference** worker is a process no candidate ever ran in: the poison is taken out and it
times the reference ``Model``. Neither sees an expected output; the controller judges.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import socket
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import torch

from kernelevo.candidate import detect_language
from kernelevo.evaluate import confine, interpreter, landlock, launches, poison
from kernelevo.evaluate import protocol as P
from kernelevo.evaluate.timing import Clock, Samples, synchronize, time_cpu, time_device
from kernelevo.evaluate.warm import warm_sizes
from kernelevo.problem import flatten_outputs, load_problem
from kernelevo.profile.gpu import merge_samples
from kernelevo.profile.triton_meta import compiled_kernels, cupy_kernels
from kernelevo.reference import fp32_precision

CANDIDATE_FILE = "candidate.py"
PROGRESS_FILE = "progress"
LOG_FILE = "log"
_NUMPY = torch.Tensor.numpy  # the harness's own host reads, before anything replaces them


class Failure(Exception):
    """Ends the job with a verdict the controller passes on."""

    def __init__(self, verdict: str, reason: str, tb: str | None = None):
        super().__init__(reason)
        self.verdict, self.reason, self.tb = verdict, reason, tb


def describe(e: BaseException, candidate_file: str) -> tuple[str, str, str]:
    """(verdict, one-line reason, traceback excerpt) for an exception from candidate code."""
    kind = "runtime_error"
    try:
        from triton.compiler.errors import CompilationError

        if isinstance(e, CompilationError):
            kind = "compile_error"
    except ImportError:  # pragma: no cover
        pass
    if isinstance(e, (SyntaxError, ImportError)):
        kind = "compile_error"
    msg = str(e).strip().splitlines()
    # NVRTC (CuPy) and nvcc (load_inline) report pages of text; the lines saying "error" are the ones
    # a model can act on.
    if type(e).__name__ == "CompileException" or "Error building extension" in str(e):
        kind = "compile_error"
        errors = [ln.strip() for ln in msg if re.search(r"\berror\b", ln, re.IGNORECASE)]
        msg = ["; ".join(errors[:3]) or (msg[0] if msg else "")]
    frames = traceback.extract_tb(e.__traceback__)
    mine = [f for f in frames if f.filename == candidate_file]
    where = f" (candidate line {mine[-1].lineno}: {(mine[-1].line or '').strip()})" if mine else ""
    tb_lines = "".join(traceback.format_exception(e)).splitlines()
    tb = "\n".join(tb_lines[-25:])
    fault = interpreter.interpreter_fault(e, tb)
    if fault:
        return "runtime_error", fault + where, tb
    return kind, f"{type(e).__name__}: {msg[0][:300] if msg else ''}{where}", tb


def digest(values: Any) -> str:
    """SHA-256 of every tensor's bytes, shape and dtype (and of the other values' reprs)."""
    h = hashlib.sha256()
    for v in flatten_outputs(values):
        if isinstance(v, torch.Tensor):
            t = v.detach().to("cpu", copy=True).contiguous()
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            h.update(_NUMPY(t.reshape(-1).view(torch.uint8)).tobytes())
        else:
            h.update(repr(v).encode())
    return h.hexdigest()


def to_device(values: Any, device: str) -> Any:
    if isinstance(values, torch.Tensor):
        return values.to(device, copy=True)
    if isinstance(values, (list, tuple)):
        return type(values)(to_device(v, device) for v in values)
    return values


def to_host(out: Any) -> tuple[torch.Tensor, ...]:
    return tuple(o.detach().to("cpu", copy=True) for o in flatten_outputs(out))


def aliases(outputs: list[torch.Tensor], inputs: list[Any]) -> bool:
    """Whether any output shares memory with any input tensor."""
    spans = []
    for t in inputs:
        if isinstance(t, torch.Tensor) and t.numel():
            s = t.untyped_storage()
            spans.append((s.data_ptr(), s.data_ptr() + s.nbytes()))
    for o in outputs:
        if o.numel() == 0:
            continue
        s = o.untyped_storage()
        lo, hi = s.data_ptr(), s.data_ptr() + s.nbytes()
        if any(lo < e and b < hi for b, e in spans):
            return True
    return False


def _progress(job_dir: Path, text: str) -> None:
    try:
        with open(job_dir / PROGRESS_FILE, "a") as f:
            f.write(text + "\n")
    except OSError:
        pass


class _Model:
    """The model being judged and the process state each step must leave as found."""

    def __init__(self, chan: P.Channel, setup: P.Setup, job_dir: Path, cls: type, candidate: str,
                 counter: launches.LaunchCounter | None, meter: poison.Meter | None,
                 state: confine.ProcessState | None):
        self.chan, self.setup, self.job_dir = chan, setup, job_dir
        self.cls, self.candidate = cls, candidate
        self.counter, self.meter, self.state = counter, meter, state
        self.device = setup.device
        self.model: Any = None
        self.budget = 0.0
        self.kept: dict[int, Any] = {}
        self.kept_inputs: dict[int, list[Any]] = {}  # candidate: what timed calls read, until released
        self.models: dict[Any, Any] = {}  # reference worker: one per size, reused across evaluations
        self.clock: Clock | None = None  # the GPU's timing side (built before the candidate's import)
        self.compiled_now = False  # reference worker: the last block compiled the torch.compile baseline

    # -- steps ------------------------------------------------------------------------------
    def construct(self, msg: P.Construct) -> None:
        _progress(self.job_dir, f"size {msg.label}: constructing the model")
        self.budget = msg.budget
        if self.meter is None and msg.size in self.models:
            self.model = self.models[msg.size]
            return
        self._begin(float("inf"))  # a constructor may compute what its reference constructor computes
        self.model = self._guarded(lambda: self.cls(*msg.init_inputs), f"size {msg.label}: constructing the model")
        self.model = self.model.to(self.device)
        if self.meter is None:
            self.models[msg.size] = self.model

    def warm(self, msg: P.Warm) -> P.WarmedUp:
        _progress(self.job_dir, "compiling ahead")
        self._begin(float("inf"))
        w = warm_sizes(self.cls, msg.sizes, os.environ.get("TRITON_INTERPRET") == "1",
                       lambda e: describe(e, self.candidate)[1])
        return P.WarmedUp(w.kernels, w.skipped, w.seconds)

    def load(self, msg: P.Load) -> None:
        try:
            self.model.load_state_dict(to_device(msg.state_dict, self.device), strict=True)
        except Exception as e:
            first = str(e).strip().splitlines()
            raise Failure("rejected", f"ModelNew's state_dict does not match the reference: "
                          f"{first[0] if first else e}") from e

    def _traced(self) -> Any:
        """Every call of a candidate on a GPU, checked or timed alike, runs under the CUDA profiler:
        its kernels on every stream, for CUDA C++ launch counts and for kernels it did not write."""
        return launches.kernel_trace() if self.device == "cuda" and self.counter is not None else _null()

    def _foreign(self, trace: list[tuple[str, float]]) -> tuple[tuple[str, ...], float]:
        if isinstance(self.counter, launches.ProfiledLaunchCounter):
            self.counter.count(trace)
        if not trace or self.counter is None:
            return (), 0.0
        return launches.foreign_kernels(trace, self.counter.own_names())

    def call(self, msg: P.Call) -> P.Output:
        args = to_device(list(msg.inputs), self.device)
        before = self.counter() if self.counter else 0
        self._begin(self.budget)
        def traced() -> tuple[Any, list[Any]]:
            # The sync and the profiler's exit are where a kernel's fault surfaces on a GPU: inside
            # _guarded, so it is the candidate's runtime error, not a crash of the worker.
            with self._traced() as trace:
                out = self._checked_forward(*args)
                if self.device == "cuda":
                    synchronize()
            return out, trace

        with launches.pin(self.counter, msg.pin) if self.counter else _null() as used:
            out, trace = self._guarded(traced, f"call {msg.id}")
        flat = self._check_outputs(out, args, f"call {msg.id}")
        self.kept[msg.id] = flat
        self._violation(f"call {msg.id}")
        foreign, share = self._foreign(trace)
        m = self.meter
        return P.Output(
            msg.id, to_host(flat), (self.counter() - before) if self.counter else 0, digest(args),
            m.spent if m else 0.0, m.top_ops() if m else (), bool(m and m.poisoned),
            tuple(sorted(self.counter.dtypes)) if self.counter else (), foreign, share, tuple(used),
        )

    def recheck(self, msg: P.Recheck) -> P.Outputs:
        return P.Outputs({i: to_host(self.kept[i]) for i in msg.ids if i in self.kept},
                         {i: digest(self.kept_inputs[i]) for i in msg.ids if i in self.kept_inputs})

    def release(self, msg: P.Release) -> None:
        for i in msg.ids:
            self.kept.pop(i, None)
            self.kept_inputs.pop(i, None)

    def get_state(self) -> P.State:
        return P.State({k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()})

    def time(self, msg: P.Time) -> P.Timed:
        """One timing block (``timing.time_device`` on a GPU, ``time_cpu`` here); on a GPU the
        candidate's timed launches are counted from the profiler's trace, not by a hook."""
        t = self.setup.timing
        draws = list(msg.draws)
        restore = to_device(msg.restore, self.device) if msg.restore is not None else None
        spent, poisoned, ops = [0.0], [False], set[str]()

        def before(i: int) -> None:
            if restore is not None:
                self.model.load_state_dict(restore)
            if self.meter is not None:
                spent[0] = max(spent[0], self.meter.spent)
                poisoned[0] = poisoned[0] or self.meter.poisoned
                ops.update(self.meter.top_ops())
                self._begin(self.budget)

        def stage(i: int) -> list[Any]:
            return to_device(list(draws[i]), self.device)

        before_n = self.counter() if self.counter else 0
        fn = self._forward
        foreign: tuple[str, ...] = ()
        share = 0.0
        if self.device == "cuda":
            assert self.clock is not None
            clock = self.clock
            with self.counter.quiet() if self.counter else _null():
                s = self._guarded(lambda: time_device(fn, stage, before, len(draws), msg.warmup, clock,
                                                      t["gpu_max_time_s"], graph=bool(t.get("cuda_graph"))),
                                  "timing")
            if self.counter is not None:
                self.counter.count_traced(s.trace)
                foreign, share = launches.foreign_kernels(s.trace, self.counter.own_names())
        else:
            s = self._guarded(lambda: time_cpu(fn, lambda i: (before(i), stage(i))[1], len(draws), msg.warmup),
                              "timing")
        if self.meter is not None:
            spent[0], poisoned[0] = max(spent[0], self.meter.spent), poisoned[0] or self.meter.poisoned
            ops.update(self.meter.top_ops())
        # A timed call is held to what a checked one is (no output aliasing an input; its inputs
        # digested when the controller rechecks it): the two must not be told apart by a kernel.
        read = dict(s.inputs) if self.setup.role == "candidate" else {}
        for i, out in enumerate(s.outputs):
            self.kept[msg.first_id + i] = self._check_outputs(out, read.get(i, []), f"timed call {msg.first_id + i}")
        for i, args in read.items():
            self.kept_inputs[msg.first_id + i] = args
        self._violation("timing")
        extra = self._device_facts(s) if self.device == "cuda" else {}
        if self.meter is None and t.get("compile_baseline"):
            extra["compiled_ms"] = self._compiled(msg, stage, before)
            extra["compiled_now"] = self.compiled_now
        return P.Timed(s.ms, (self.counter() - before_n) if self.counter else 0, s.graph, extra, spent[0],
                       poisoned[0], tuple(sorted(ops)), foreign, share, s.kernel_ms)

    # -- helpers ----------------------------------------------------------------------------
    def _forward(self, *args: Any) -> Any:
        with torch.no_grad():
            return self.model(*args)

    def _checked_forward(self, *args: Any) -> Any:
        with confine.fresh_memory_filled(self.state.refusals if self.state else []):
            return self._forward(*args)

    def _begin(self, budget: float) -> None:
        if self.meter is not None:
            self.meter.begin(budget)

    def _guarded(self, fn: Any, what: str) -> Any:
        try:
            return fn()
        except Failure:
            raise
        except Exception as e:
            kind, reason, tb = describe(e, self.candidate)
            problem = self.state.violation() if self.state else None
            if problem:  # the error came from a refusal (or happened alongside one): say that
                raise Failure("rejected", f"{what}: {problem}", tb) from e
            raise Failure(kind, f"{what}: {reason}", tb) from e

    def _check_outputs(self, out: Any, inputs: list[Any], what: str) -> list[torch.Tensor]:
        flat = list(flatten_outputs(out))
        for o in flat:
            if type(o) is not torch.Tensor:
                raise Failure("rejected", f"{what}: forward returned {type(o).__name__}; outputs must be plain "
                              "torch.Tensor")
        if inputs and aliases(flat, inputs):
            raise Failure("rejected", f"{what}: an output shares memory with an input; return a new tensor")
        return flat

    def _violation(self, what: str) -> None:
        problem = self.state.violation() if self.state else None
        if problem:
            raise Failure("rejected", f"{what}: {problem}")

    def _device_facts(self, s: Samples) -> dict[str, Any]:
        from dataclasses import asdict

        facts: dict[str, Any] = {"nvml": merge_samples(s.nvml),
                                 "persisting_l2": bool(self.clock and self.clock.persisting_seen)}
        if self.counter is not None:
            metas = [m for jit in self.counter.jit.values() if jit is not None for m in compiled_kernels(jit)]
            if isinstance(self.counter, launches.ProfiledLaunchCounter):
                module = sys.modules.get("candidate")
                objects = [*vars(module).values()] if module is not None else []
                objects += [v for mod in self.model.modules() for v in vars(mod).values()]
                metas += cupy_kernels(objects, self.counter.cuda_names)
            facts["kernels"] = [asdict(m) for m in metas]
        return facts

    def _compiled(self, msg: P.Time, stage: Any, before: Any) -> list[float] | str:
        """The reference under torch.compile, compiled once per size in this (reference) worker,
        which lives for the whole run: no candidate's time limit pays for the compile."""
        key = ("compiled", id(self.model))
        self.compiled_now = key not in self.models
        try:
            if self.compiled_now:
                import torch._dynamo.config as dynamo_config
                import torch._inductor.config as inductor_config

                dynamo_config.disable = False
                inductor_config.compile_threads = 1  # no compile worker pool inside a worker we may kill
                self.models[key] = torch.compile(self.model)
            compiled = self.models[key]

            def fn(*args: Any) -> Any:
                with torch.no_grad():
                    return compiled(*args)

            t = self.setup.timing
            warmup = max(msg.warmup, 1) if self.compiled_now else msg.warmup  # the first call compiles
            if self.device == "cuda":
                assert self.clock is not None
                s = time_device(fn, stage, before, len(msg.draws), warmup, self.clock, t["gpu_max_time_s"])
            else:
                s = time_cpu(fn, lambda i: (before(i), stage(i))[1], len(msg.draws), warmup)
            return list(s.ms)
        except Exception as e:  # the baseline failing to compile is not the candidate's fault
            return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]


class _null:
    def __enter__(self) -> list[Any]:
        return []

    def __exit__(self, *exc: object) -> None:
        return None


def _load_candidate(path: str) -> type:
    spec = importlib.util.spec_from_file_location("candidate", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["candidate"] = module
    spec.loader.exec_module(module)
    cls = getattr(module, "ModelNew", None)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise Failure("rejected", "the module defines no class ModelNew(nn.Module)")
    return cls


def _confine(job_dir: Path, candidate: str, device: str, refusals: list[str], host_reads: list[str]) -> str | None:
    """Everything that must be in place before the candidate's first line runs."""
    os.environ["TMPDIR"] = str(job_dir)  # the one folder it may write besides the compile caches
    tempfile.tempdir = str(job_dir)
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if interpreted:
        interpreter.install()
    note = landlock.confine(landlock.writable_caches(job_dir))
    confine.install_audit(candidate, refusals)
    poison.Poison.refuse_host_reads(host_reads)
    return note


def _clock(setup: P.Setup) -> Any:
    if setup.device != "cuda":
        return None
    from kernelevo.evaluate.cuda_clock import CudaClock  # Triton kernels: only where CUDA is

    return CudaClock(int(setup.timing["l2_bytes"]), torch.cuda.current_device())


def serve(sock: socket.socket, key: bytes, job_dir: Path, role: str, pois: poison.Poison | None) -> int:
    """Run one worker until the controller says goodbye; every outcome goes back as a message."""
    chan = P.Channel(sock, key)
    candidate = str(job_dir / CANDIDATE_FILE)
    setup: P.Setup = chan.recv()
    meter = state = counter = None
    try:
        with fp32_precision(setup.allow_tf32):
            if role == "reference":
                if pois is not None:
                    pois.remove()  # no candidate ever runs here: PyTorch at full speed
                problem = load_problem(setup.problem_path, setup.overrides, device=setup.device)
                model = _Model(chan, setup, job_dir, type(None), candidate, None, None, None)
                model.cls = None
                model.clock = _clock(setup)
                chan.send(P.Ready())
                return _loop(chan, model, problem)
            refusals: list[str] = []
            host_reads: list[str] = []
            clock = _clock(setup)  # ctypes and CUDA set up by the harness, before any candidate code
            note = _confine(job_dir, candidate, setup.device, refusals, host_reads)
            note = "; ".join(n for n in (note, *(clock.notes if clock else ())) if n)
            source = Path(candidate).read_text()
            if setup.device == "cuda" and detect_language(source) == "cuda":
                counter = launches.ProfiledLaunchCounter(candidate, launches.cuda_kernel_names(source))
            else:
                counter = launches.install(candidate, os.environ.get("TRITON_INTERPRET") == "1")
            meter = pois.meter if pois is not None else None
            if pois is not None:
                pois.exempt(__file__)  # the harness's own copies of outputs to the host
            state = confine.ProcessState(confine.Snapshot(), refusals, host_reads)
            confine.hide_judge(refusals)
            _progress(job_dir, "importing the candidate")
            if meter is not None:
                meter.begin(float("inf"))
            try:
                cls = _load_candidate(candidate)
            except Failure:
                raise
            except BaseException as e:
                kind, reason, tb = describe(e, candidate)
                problem = state.violation()
                if problem:
                    raise Failure("rejected", f"at import: {problem}", tb) from e
                raise Failure("compile_error" if kind == "compile_error" else "runtime_error",
                              f"importing the candidate failed: {reason}", tb) from e
            problem = state.violation()
            if problem:
                raise Failure("rejected", f"at import: {problem}")
            model = _Model(chan, setup, job_dir, cls, candidate, counter, meter, state)
            model.clock = clock
            chan.send(P.Ready(tuple(sorted(counter.names | getattr(counter, "cuda_names", set()))),
                              launches.autotune_configs(counter), note or ""))
            return _loop(chan, model, None)
    except Failure as f:
        m = meter
        chan.send(P.Failed(f.verdict, f.reason, f.tb, None, m.spent if m else 0.0, m.top_ops() if m else ()))
    except P.ChannelError:
        return 3
    return 0


def _loop(chan: P.Channel, model: _Model, problem: Any) -> int:
    while True:
        msg = chan.recv()
        try:
            if isinstance(msg, P.Bye):
                return 0
            if isinstance(msg, P.Construct):
                if problem is not None:
                    namespace = problem.namespace(msg.problem_size)
                    model.cls = namespace.Model
                model.construct(msg)
                chan.send(P.Done())
            elif isinstance(msg, P.Load):
                model.load(msg)
                chan.send(P.Done())
            elif isinstance(msg, P.Call):
                chan.send(model.call(msg))
            elif isinstance(msg, P.Recheck):
                chan.send(model.recheck(msg))
            elif isinstance(msg, P.Release):
                model.release(msg)
                chan.send(P.Done())
            elif isinstance(msg, P.GetState):
                chan.send(model.get_state())
            elif isinstance(msg, P.Time):
                chan.send(model.time(msg))
            elif isinstance(msg, P.Warm):
                chan.send(model.warm(msg))
            else:
                raise Failure("crash", f"the worker got a message it does not serve ({type(msg).__name__})")
        except Failure as f:
            m = model.meter
            call = msg.id if isinstance(msg, P.Call) else None
            chan.send(P.Failed(f.verdict, f.reason, f.tb, call, m.spent if m else 0.0,
                               m.top_ops() if m else ()))
            return 0
