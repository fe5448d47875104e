"""Local workers: one per visible GPU, or per core on a CPU (Triton's interpreter is CPU-bound).

A single worker is a thread in the driver: a one-worker run costs no extra process. With more,
every worker is a spawned process owning one GPU through ``CUDA_VISIBLE_DEVICES``, set before
torch is imported there, so every ``cuda`` in the evaluator means that GPU and two timed
evaluations never share one. None stays in the driver: the judge's own Python work (comparing
outputs, planning draws) would share the controller's GIL; on a 2-core CPU two worker processes
judged 50% more candidates per minute than a driver thread plus one process (BENCHMARKS.md).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Any

from kernelevo.candidate import Candidate
from kernelevo.execute.base import HostInfo, HostResult, ProblemSpec, WorkerLost
from kernelevo.execute.dispatch import Dispatcher
from kernelevo.execute.host import Host, serve
from kernelevo.settings import EvalSettings

START_TIMEOUT_S = 120.0  # a worker's imports (torch, Triton) on a loaded 2-core machine
MAX_CPU_WORKERS = 8  # each holds a zygote and the reference's expected outputs (~0.5 GB)


class ThreadSlot:
    """The driver's own worker."""

    def __init__(self, settings: EvalSettings, name: str = "local-0"):
        self.name = name
        self.host = Host(settings, name)

    def info(self, spec: ProblemSpec) -> HostInfo:
        return self.host.info(spec)

    def evaluate(self, spec: ProblemSpec, candidate: Candidate) -> HostResult:
        return self.host.evaluate(spec, candidate)

    def restart(self) -> None:  # a thread is not lost: its evaluator restarts its own zygote
        pass

    def close(self) -> None:
        self.host.close()


class ProcessSlot:
    """A spawned worker process: its own interpreter, GIL and (on a GPU) device."""

    def __init__(self, settings: EvalSettings, name: str, env: dict[str, str]):
        self.name, self.settings, self.env = name, settings, env
        self.proc: Any = None
        self.conn: Any = None
        self.pid: int | None = None
        self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # fork would copy the driver's threads and CUDA state
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=serve, args=(child, self.settings, self.name, self.env), daemon=True,
                                name=f"kernelevo-{self.name}")
        self.proc.start()
        child.close()
        self.conn = parent
        self.pid = None

    def _wait_ready(self) -> None:
        if self.pid is not None:
            return
        if not self.conn.poll(START_TIMEOUT_S):
            self._kill()
            raise WorkerLost(f"worker {self.name} did not start within {START_TIMEOUT_S:g} s")
        tag, pid = self._recv()
        self.pid = pid

    def _recv(self) -> tuple[str, Any]:
        while True:
            if self.conn.poll(0.5):
                try:
                    return self.conn.recv()
                except (EOFError, OSError) as e:
                    raise WorkerLost(f"worker {self.name} {self._status()}") from e
            if not self.proc.is_alive():
                raise WorkerLost(f"worker {self.name} {self._status()}")

    def _status(self) -> str:
        self.proc.join(timeout=1.0)
        code = self.proc.exitcode
        if code is None:
            return "stopped answering"
        return f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"

    def _ask(self, op: str, spec: ProblemSpec, candidate: Candidate | None) -> Any:
        self._wait_ready()
        try:
            self.conn.send((op, spec, candidate))
        except (BrokenPipeError, OSError) as e:
            raise WorkerLost(f"worker {self.name} {self._status()}") from e
        tag, answer = self._recv()
        if tag == "error":
            raise RuntimeError(answer)
        return answer

    def info(self, spec: ProblemSpec) -> HostInfo:
        return self._ask("info", spec, None)

    def evaluate(self, spec: ProblemSpec, candidate: Candidate) -> HostResult:
        return self._ask("evaluate", spec, candidate)

    def restart(self) -> None:
        self._kill()
        self._start()
        self._wait_ready()

    def _kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)

    def close(self) -> None:
        try:
            self.conn.close()  # the worker sees the pipe close and shuts its evaluator down
        except OSError:
            pass
        if self.proc is not None:
            self.proc.join(timeout=10)
        self._kill()


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries."""
    import torch

    n = torch.cuda.device_count()
    named = [x.strip() for x in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if x.strip()]
    return named[:n] if len(named) >= n else [str(i) for i in range(n)]


def default_workers(device: str) -> int:
    if device == "cuda":
        return max(1, len(visible_gpus()))
    return max(1, min(os.cpu_count() or 1, MAX_CPU_WORKERS))


def local_executor(settings: EvalSettings, device: str, workers: int = 0, max_retries: int = 3,
                   compile_ahead: bool = True) -> Dispatcher:
    """``workers`` evaluation workers on this machine (0: one per GPU, or per core up to 8 on a CPU).
    On a GPU machine more workers than GPUs are refused: two timed evaluations on one GPU would
    time each other."""
    auto = default_workers(device)
    n = auto if workers <= 0 else workers
    if device == "cuda" and n > auto:
        raise ValueError(f"--workers {n}: this machine has {auto} visible GPU(s); one evaluation worker per GPU")
    gpus = visible_gpus() if device == "cuda" else []
    # The cores shared out, as Ray does for its actors: each of two workers taking both cores of a
    # 2-core machine for torch's thread pool made two workers barely faster than one (+21% vs +125%).
    threads = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // n))}
    slots: list[Any] = [ThreadSlot(settings)] if n == 1 else [
        ProcessSlot(settings, f"local-{i}", {**threads, **({"CUDA_VISIBLE_DEVICES": gpus[i]} if gpus else {})})
        for i in range(n)]
    prepare: list[Any] = []
    if device == "cuda" and compile_ahead:  # on a CPU nothing compiles: the interpreter runs the Python
        from kernelevo.execute.prepare import PrepareSlot

        # ptxas is single-threaded; a compile slot per 4 cores (at most one per GPU) keeps up with the GPUs.
        k = min(n, max(1, (os.cpu_count() or 1) // 4))
        prepare = [PrepareSlot(settings, f"prepare-{i}") for i in range(k)]
    return Dispatcher({"": slots}, max_retries, "local", prepare)

