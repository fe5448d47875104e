"""A host: the process that owns an evaluator and judges whatever problem a job names.

The same class runs in the driver (one local worker), in a spawned process per GPU or core
(``serve``), and as a Ray actor. It keeps one warm evaluator: a suite moves from problem to
problem, and each evaluator holds a zygote and the reference's expected outputs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from kernelevo.candidate import Candidate
from kernelevo.execute.base import HostInfo, HostResult, ProblemSpec
from kernelevo.settings import EvalSettings


class Host:
    def __init__(self, settings: EvalSettings, name: str = "local"):
        self.settings = settings
        self.name = name
        self._key: Any = None
        self._evaluator: Any = None  # kernelevo.evaluate.evaluator.Evaluator
        self._scratch = Path(tempfile.mkdtemp(prefix="kernelevo-host-"))

    @property
    def evaluator(self) -> Any:
        return self._evaluator

    def _ready(self, spec: ProblemSpec) -> Any:
        if self._key != spec.key:
            from kernelevo.evaluate.evaluator import Evaluator

            self._close_evaluator()
            self._evaluator = Evaluator(spec.load(self._scratch), spec.device, self.settings)
            self._key = spec.key
        return self._evaluator

    def info(self, spec: ProblemSpec) -> HostInfo:
        ev = self._ready(spec)
        cal, ceilings = ev.calibration, None
        if cal is not None:
            ceilings = (cal.copy_bytes_per_s, cal.peak_flops(ev.dtype, self.settings.allow_tf32))
        return HostInfo(self.name, self.gpu_key(spec.device),
                        tuple((float(c.flops), float(c.min_bytes)) for c in ev.reference.cases), ceilings, cal,
                        tuple(ev.reference.warnings))

    def evaluate(self, spec: ProblemSpec, candidate: Candidate) -> HostResult:
        ev = self._ready(spec)
        evaluation = ev.evaluate(candidate)
        return HostResult(evaluation, self.name, self.gpu_key(spec.device), tuple(ev.run_notes))

    @staticmethod
    def gpu_key(device: str) -> str:
        if device != "cuda":
            return "cpu"
        from kernelevo.profile.gpu import gpu_fingerprint

        return gpu_fingerprint().key

    def _close_evaluator(self) -> None:
        if self._evaluator is not None:
            self._evaluator.close()
            self._evaluator, self._key = None, None

    def close(self) -> None:
        self._close_evaluator()
        shutil.rmtree(self._scratch, ignore_errors=True)


def serve(conn: Connection, settings: EvalSettings, name: str, env: dict[str, str]) -> None:
    """A spawned worker process: ``env`` (the GPU it owns) is set before torch is imported; then it
    answers ("info" | "evaluate", spec, candidate) requests until the pipe closes. The driver dying
    closes the pipe, so an orphaned worker exits instead of holding its GPU."""
    _die_with_parent()
    os.environ.update(env)
    host = Host(settings, name)
    try:
        conn.send(("ready", os.getpid()))
        while True:
            try:
                op, spec, candidate = conn.recv()
            except (EOFError, OSError):
                return
            try:
                answer: Any = host.info(spec) if op == "info" else host.evaluate(spec, candidate)
                conn.send(("ok", answer))
            except (BrokenPipeError, EOFError):
                return
            except Exception as e:  # the driver records it as the evaluator's failure, never a lost run
                conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        host.close()


def _die_with_parent() -> None:
    """Linux: killed when the driver dies, so a SIGKILLed run leaves no worker holding a GPU (its
    zygote then sees its socket close and kills the candidate it was judging)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pipe's EOF still ends the worker
        pass
