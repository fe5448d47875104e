"""Runtime guards inside a candidate's worker.

Imported by the zygote before any candidate exists, so the originals captured here are the
real clocks and launchers. Checked after every forward; comparison of outputs happens in
the controller, out of the candidate's reach.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

# The functions a timer or a launch counter relies on, captured before candidate code runs.
_WATCHED: dict[str, tuple[Any, str]] = {
    "time.perf_counter": (time, "perf_counter"),
    "time.perf_counter_ns": (time, "perf_counter_ns"),
    "time.time": (time, "time"),
    "time.monotonic": (time, "monotonic"),
    "torch.cuda.synchronize": (torch.cuda, "synchronize"),
    "torch.cuda.Event": (torch.cuda, "Event"),
    "torch.cuda.Event.record": (torch.cuda.Event, "record"),
    "torch.cuda.Event.elapsed_time": (torch.cuda.Event, "elapsed_time"),
    "torch.cuda.Event.synchronize": (torch.cuda.Event, "synchronize"),
    "torch.Tensor.clone": (torch.Tensor, "clone"),
    "torch.Tensor.cpu": (torch.Tensor, "cpu"),
    "torch.allclose": (torch, "allclose"),
    "threading.active_count": (threading, "active_count"),
}
_ORIGINALS: dict[str, Any] = {name: getattr(obj, attr) for name, (obj, attr) in _WATCHED.items()}

clock_ns: Callable[[], int] = time.perf_counter_ns  # the worker's clock, whatever happens to time.*
active_threads: Callable[[], int] = threading.active_count


def tf32_state() -> tuple[bool, bool, str]:
    return (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )


class Guard:
    """Process state a forward must leave as it found it."""

    def __init__(self) -> None:
        self.threads = active_threads()
        self.tf32 = tf32_state()

    def violation(self) -> str | None:
        """A one-line reason when the candidate tampered with the process, else None."""
        for name, (obj, attr) in _WATCHED.items():
            if getattr(obj, attr, None) is not _ORIGINALS[name]:
                return f"replaced {name} (patching the timer or the harness is not allowed)"
        if active_threads() > self.threads:
            return "forward left a thread running (work after return is not timed)"
        if tf32_state() != self.tf32:
            return "forward changed the TF32 / matmul precision settings"
        return None


class LaunchCounter:
    """Completed launches of the candidate's own kernels; ``kernels`` are the JIT functions seen
    (their compile caches hold registers, spills and shared memory for the profile)."""

    def __init__(self) -> None:
        self.n = 0
        self.kernels: dict[str, Any] = {}

    def __call__(self) -> int:
        return self.n

    def watch(self) -> contextlib.AbstractContextManager[None]:
        """Around a call whose launches must be seen; Triton launches are counted anyway."""
        return contextlib.nullcontext()


_GLOBAL_FN = re.compile(r"__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+(\w+)")


def cuda_kernel_names(source: str) -> set[str]:
    """Names of the ``__global__`` functions a candidate's CUDA sources define."""
    return set(_GLOBAL_FN.findall(source))


class ProfiledLaunchCounter(LaunchCounter):
    """For CUDA C++ candidates (CuPy RawKernel/RawModule, load_inline), whose launches no Python
    hook sees: kernels recorded by the CUDA profiler (CUPTI sees every stream) during a watched
    call whose names the candidate's source defines. Watching costs time, so timed calls are not
    watched; a cached answer is caught by the timed output check instead."""

    def __init__(self, names: set[str]) -> None:
        super().__init__()
        self.names = names

    @contextlib.contextmanager
    def watch(self) -> Iterator[None]:
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            yield
            _ORIGINALS["torch.cuda.synchronize"]()
        for e in prof.events():
            # load_inline kernels are C++-mangled: the plain name appears inside the symbol.
            if e.device_type == DeviceType.CUDA and any(n in e.name for n in self.names):
                self.n += 1
                self.kernels.setdefault(e.name, None)


def install_launch_counter(candidate_file: str) -> LaunchCounter:
    """Count completed launches of Triton kernels defined in ``candidate_file``.

    A launch that raises is not counted, so a ``try: kernel[grid](...) except: torch_op()``
    fallback shows zero launches. Launches of library kernels (e.g. Inductor's) do not count.
    """
    counter = LaunchCounter()

    def owns(jit_fn: Any) -> bool:
        fn = getattr(jit_fn, "fn", None)
        code = getattr(fn, "__code__", None)
        return code is not None and code.co_filename == candidate_file

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def run(self: Any, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> Any:
            result = original(self, *args, grid=grid, warmup=warmup, **kwargs)
            if not warmup and owns(self):
                counter.n += 1
                counter.kernels.setdefault(getattr(self.fn, "__name__", "kernel"), self)
            return result

        return run

    from triton.runtime.jit import JITFunction

    JITFunction.run = wrap(JITFunction.run)  # type: ignore[method-assign]
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover - every supported Triton has the interpreter
        pass
    else:
        InterpretedFunction.run = wrap(InterpretedFunction.run)  # type: ignore[method-assign]
    return counter


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
