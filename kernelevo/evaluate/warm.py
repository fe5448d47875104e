"""Compiling a candidate ahead of the GPU: its Triton kernels built into the shared cache by a
confined worker that runs no kernel, while the GPU judges another candidate.

Triton compiles a kernel at its first launch, for the argument types, constexprs and alignments
of that launch; on a GPU that is 0.3-3 s per kernel (every config of an autotuned one) in which
the GPU waits. Which launches a forward makes is only known by running its Python, so the
warming worker runs the candidate's forward on *meta* tensors of each size's shapes (no memory,
no kernels) with every Triton launch turned into ``warmup`` (compile, don't launch) and every
autotuned kernel compiling all its configs. The binaries land in Triton's on-disk cache, where
the timed worker's first launch finds them. A meta tensor's ``data_ptr()`` is 0, aligned like
the caching allocator's blocks, so the specialisation matches the real launch's.

CUDA C++ is compiled the same way: ``load_inline`` builds at import (the warming worker's import
fills the extensions folder), and every CuPy ``RawKernel``/``RawModule`` the module or the model
holds is compiled with NVRTC (``.compile()``) into CuPy's on-disk kernel cache.

Nothing here is a verdict: a forward that cannot run on meta tensors (``.item()``, host reads)
is simply not warmed, and compiles when judged, as it would have anyway. Under Triton's
interpreter nothing compiles; the launches are recorded, which is what the CPU tests check.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

WARM_TIMEOUT_S = 120.0  # compiling every config of a big autotuned kernel


@dataclass(frozen=True)
class Warmed:
    """What the warming worker compiled (or, interpreted, would have), and what it could not run."""

    kernels: tuple[str, ...]  # "name[constexpr=value,...]" per launch compiled, in order
    skipped: tuple[str, ...] = ()  # per size that could not be warmed: why
    seconds: float = 0.0


# -- worker side ------------------------------------------------------------------------------

@contextlib.contextmanager
def compile_only(interpreted: bool) -> Iterator[list[str]]:
    """Inside, Triton launches compile instead of running. Yields the launches, as names with
    their constexpr keyword arguments."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    seen: list[str] = []

    def label(fn: Any, kwargs: dict[str, Any]) -> str:
        name = getattr(getattr(fn, "fn", None), "__name__", "kernel")
        consts = ",".join(f"{k}={v}" for k, v in sorted(kwargs.items()) if isinstance(v, (int, bool, str)))
        return f"{name}[{consts}]"

    jit_run = JITFunction.run

    def run(self: Any, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> Any:
        seen.append(label(self, kwargs))
        return jit_run(self, *args, grid=grid, warmup=True, **kwargs)

    def tune(self: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("warmup", None)
        for config in self.configs:  # another GPU, or another size, may pick any of them
            self.fn.run(*args, warmup=True, **{**kwargs, **config.all_kwargs()})

    patches: list[tuple[Any, str, Any]] = [(JITFunction, "run", run), (Autotuner, "run", tune)]
    if interpreted:
        from triton.runtime.interpreter import InterpretedFunction

        def record(self: Any, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> Any:
            seen.append(label(self, kwargs))  # the interpreter would run it on meta tensors: record only

        patches.append((InterpretedFunction, "run", record))
    saved = [(cls, name, getattr(cls, name)) for cls, name, _ in patches]
    for cls, name, fn in patches:
        setattr(cls, name, fn)
    try:
        yield seen
    finally:
        for cls, name, fn in saved:
            setattr(cls, name, fn)


def _cupy_kernels(*holders: Any) -> list[tuple[str, Any]]:
    """CuPy RawKernel / RawModule objects held by the candidate's module or its model."""
    import sys

    cp = sys.modules.get("cupy")
    if cp is None:
        return []
    kinds = tuple(k for k in (getattr(cp, "RawKernel", None), getattr(cp, "RawModule", None)) if k is not None)
    found: dict[int, tuple[str, Any]] = {}
    for h in holders:
        values = vars(h).values() if hasattr(h, "__dict__") else ()
        for v in values:
            if kinds and isinstance(v, kinds):
                found[id(v)] = (str(getattr(v, "name", None) or type(v).__name__), v)
    return list(found.values())


def _compile_cupy(holders: list[Any], kernels: list[str], skipped: list[str], describe: Any) -> None:
    for name, k in _cupy_kernels(*holders):
        label = f"cupy:{name}"
        if label in kernels:
            continue
        try:
            k.compile()  # NVRTC, into CuPy's kernel cache, without a launch
            kernels.append(label)
        except Exception as e:  # compiled (and reported) when judged instead
            skipped.append(f"{label}: {describe(e)}")


def warm_sizes(cls: type, sizes: tuple[tuple[tuple[Any, ...], tuple[Any, ...]], ...], interpreted: bool,
               describe: Any) -> Warmed:
    """``ModelNew`` built and called on meta tensors for each (init inputs, inputs)."""
    import sys

    start = time.monotonic()
    kernels: list[str] = []
    skipped: list[str] = []
    holders: list[Any] = [sys.modules.get(cls.__module__)]
    for i, (init, inputs) in enumerate(sizes):
        try:
            with torch.device("meta"), compile_only(interpreted) as seen:
                model = cls(*init)
                holders.append(model)
                model(*inputs)
            kernels += [k for k in seen if k not in kernels]
        except BaseException as e:  # noqa: BLE001 - anything a forward does on meta tensors: not warmed
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            skipped.append(f"size {i}: {describe(e)}")
    if not interpreted:
        _compile_cupy([h for h in holders if h is not None], kernels, skipped, describe)
    return Warmed(tuple(kernels), tuple(skipped), round(time.monotonic() - start, 3))


# -- controller side --------------------------------------------------------------------------

def meta_sizes(problem: Any) -> tuple[tuple[tuple[Any, ...], tuple[Any, ...]], ...]:
    """Each declared size's init inputs and inputs, as meta tensors (the problem's own code, run here)."""
    out = []
    for size in problem.sizes or [{}]:
        ns = problem.namespace(size)
        with torch.device("meta"):
            init = tuple(ns.get_init_inputs()) if hasattr(ns, "get_init_inputs") else ()
            inputs = tuple(ns.get_inputs())
        out.append((tuple(_meta(v) for v in init), tuple(_meta(v) for v in inputs)))
    return tuple(out)


def _meta(v: Any) -> Any:
    return v.to("meta") if isinstance(v, torch.Tensor) else v


class Warmer:
    """Compiles candidates of one problem ahead of their evaluation: a zygote of its own and the
    problem's shapes, no reference (it judges nothing)."""

    def __init__(self, problem: Any, device: str, allow_tf32: bool = False):
        from kernelevo.evaluate import sandbox

        self.problem, self.device = problem, device
        self.sizes = meta_sizes(problem)
        self._zygote = sandbox.Zygote(device, allow_tf32)
        self._dir = Path(tempfile.mkdtemp(prefix="kernelevo-warm-"))
        self.allow_tf32 = allow_tf32

    def warm(self, source: str) -> Warmed:
        from kernelevo.evaluate import protocol as P
        from kernelevo.evaluate.evaluator import _Stop, _Worker
        from kernelevo.evaluate.worker import CANDIDATE_FILE

        job = Path(tempfile.mkdtemp(prefix="warm-", dir=self._dir))
        (job / CANDIDATE_FILE).write_text(source)
        worker = None
        try:
            if self._zygote.dead:
                from kernelevo.evaluate import sandbox

                self._zygote.close()
                self._zygote = sandbox.Zygote(self.device, self.allow_tf32)
            worker = _Worker(self._zygote, "candidate", job, WARM_TIMEOUT_S)
            deadline = time.monotonic() + WARM_TIMEOUT_S
            worker.ask(P.Setup("candidate", self.device, self.allow_tf32, {"l2_bytes": 0}), deadline, P.Ready)
            answer = worker.ask(P.Warm(self.sizes), deadline, P.WarmedUp)
            return Warmed(answer.kernels, answer.skipped, answer.seconds)
        except _Stop as stop:
            return Warmed((), (f"not warmed: {stop.reason}",))
        finally:
            if worker is not None:
                worker.close()
            shutil.rmtree(job, ignore_errors=True)

    def close(self) -> None:
        self._zygote.close()
        shutil.rmtree(self._dir, ignore_errors=True)
