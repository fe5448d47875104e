"""Which kernels are the candidate's own, and how often they ran.

A kernel is the candidate's when its Python function was defined in the candidate's file
(Triton), or when its name is one the candidate's CUDA sources define (CuPy, load_inline).
Triton launches are counted by Triton's own launch hook, which sees every launch however it
is made — ``kernel[grid](...)``, an autotuner, or a handle precompiled with ``warmup`` and
launched later, as Triton's fused-softmax tutorial does; in the CPU interpreter, which has
no launch hooks, by the interpreted function's ``run``. CUDA C++ launches are counted by the
CUDA profiler (every stream), names matched exactly.

Every autotuned kernel can be pinned to one of its configs (``pin``): the judge checks each
config for correctness, since another GPU may pick another one.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

from kernelevo.evaluate.timing import FLUSH_KERNEL, MARK_KERNEL, Kernel, synchronize

HARNESS_KERNELS = frozenset({FLUSH_KERNEL, MARK_KERNEL})
# The profiler reports copies and fills ("Memcpy DtoD (Device -> Device)", "Memset (Device)") as
# device events too: data movement (state restores, clones), not compute anyone wrote.
_COPIES = ("Memcpy", "Memset")


class LaunchCounter:
    """Completed launches of the candidate's own kernels; ``jit`` maps names to their JIT functions
    (whose compile caches hold registers, spills and shared memory for the profile)."""

    def __init__(self, candidate_file: str) -> None:
        self.file = candidate_file
        self.n = 0
        self.names: set[str] = set()  # Triton kernels defined in the candidate's file
        self.jit: dict[str, Any] = {}
        self.dtypes: set[str] = set()  # floating dtypes of tensors its kernels received (interpreter)
        self.autotuners: list[Any] = []  # the candidate's @triton.autotune'd kernels

    def __call__(self) -> int:
        return self.n

    def on_launch(self, metadata: Any) -> None:
        """Triton's launch hook: counts the launch when the kernel is one of the candidate's. Triton
        passes a ``LazyDict`` whose ``get()`` takes no key and would run the kernel's own
        ``launch_metadata`` callback; its eager ``data`` already holds the name."""
        data = getattr(metadata, "data", metadata)
        if isinstance(data, dict) and data.get("name") in self.names:
            self.n += 1

    def count_traced(self, trace: Sequence[Kernel]) -> int:
        """Count the launches of its own kernels in a profiler trace (a timed block: no hook runs there)."""
        own = self.own_names()
        n = sum(1 for k in trace if kernel_base_name(k.name) in own)
        self.n += n
        return n

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Triton's launch hook off for the block: a timed launch must not pay for a Python call of
        ours. Launches there are counted from the trace (``count_traced``)."""
        import triton

        hook = triton.knobs.runtime.launch_enter_hook
        if hasattr(hook, "remove") and hasattr(hook, "add"):
            present = self.on_launch in getattr(hook, "calls", [self.on_launch])
            if present:
                hook.remove(self.on_launch)
            try:
                yield
            finally:
                if present:
                    hook.add(self.on_launch)
            return
        if hook == self.on_launch:  # Triton 3.4 and older: a single callable
            triton.knobs.runtime.launch_enter_hook = None
            try:
                yield
            finally:
                triton.knobs.runtime.launch_enter_hook = hook
            return
        yield

    def own_names(self) -> set[str]:
        return set(self.names) | set(getattr(self, "cuda_names", set()))

    def owns(self, jit_fn: Any) -> bool:
        code = getattr(getattr(jit_fn, "fn", None), "__code__", None)
        return code is not None and code.co_filename == self.file


def install(candidate_file: str, interpreted: bool) -> LaunchCounter:
    """Start counting the candidate's Triton launches. Call before the candidate is imported."""
    counter = LaunchCounter(candidate_file)
    from triton.runtime.jit import JITFunction

    original_init = JITFunction.__init__

    def init(self: Any, fn: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, fn, *args, **kwargs)
        if getattr(getattr(fn, "__code__", None), "co_filename", None) == candidate_file:
            counter.names.add(fn.__name__)
            counter.jit[fn.__name__] = self

    JITFunction.__init__ = init  # type: ignore[method-assign]
    _record_autotuners(counter)
    if interpreted:
        _count_interpreted(counter)
    else:
        import triton

        hook = triton.knobs.runtime.launch_enter_hook
        if hasattr(hook, "add"):
            hook.add(counter.on_launch)
        else:  # Triton 3.4 and older: a single callable
            triton.knobs.runtime.launch_enter_hook = counter.on_launch
    return counter


def _record_autotuners(counter: LaunchCounter) -> None:
    from triton.runtime.autotuner import Autotuner

    original = Autotuner.__init__

    def init(self: Any, fn: Any, *args: Any, **kwargs: Any) -> None:
        original(self, fn, *args, **kwargs)
        if getattr(getattr(self, "base_fn", None), "__code__", None) is not None and \
                self.base_fn.__code__.co_filename == counter.file:
            counter.autotuners.append(self)

    Autotuner.__init__ = init  # type: ignore[method-assign]


def _count_interpreted(counter: LaunchCounter) -> None:
    from triton.runtime.interpreter import InterpretedFunction

    original_init, original_run = InterpretedFunction.__init__, InterpretedFunction.run

    def init(self: Any, fn: Any, **kwargs: Any) -> None:
        original_init(self, fn, **kwargs)
        if getattr(getattr(fn, "__code__", None), "co_filename", None) == counter.file:
            counter.names.add(fn.__name__)
            counter.jit[fn.__name__] = self

    def run(self: Any, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> Any:
        result = original_run(self, *args, grid=grid, warmup=warmup, **kwargs)
        if not warmup and counter.owns(self):
            counter.n += 1
            for a in (*args, *kwargs.values()):
                dtype = getattr(a, "dtype", None)
                if dtype is not None and getattr(dtype, "is_floating_point", False):
                    counter.dtypes.add(str(dtype).removeprefix("torch."))
        return result

    InterpretedFunction.__init__ = init  # type: ignore[method-assign]
    InterpretedFunction.run = run  # type: ignore[method-assign]


# -- CUDA C++ candidates -------------------------------------------------------------------------

_GLOBAL_FN = re.compile(r"__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(?:\w+\s+)*?void\s+(\w+)")
_RAW_KERNEL = re.compile(r"(?:RawKernel\([^,]+,\s*|get_function\(\s*)[\"'](\w+)[\"']")
_DEMANGLED = re.compile(r"(?:^|[\s*&])(?:[\w]+::)*(\w+)\s*(?:<.*>)?\s*\(")


def cuda_kernel_names(source: str) -> set[str]:
    """Names of the ``__global__`` functions and CuPy kernels a candidate's source defines."""
    return set(_GLOBAL_FN.findall(source)) | set(_RAW_KERNEL.findall(source))


def kernel_base_name(symbol: str) -> str:
    """A profiler's kernel name reduced to the function's own name: ``void ns::add<float>(float*, int)``
    -> ``add``; an unmangled ``add_kernel`` stays itself."""
    m = _DEMANGLED.search(symbol)
    return m.group(1) if m else symbol.strip()


# PyTorch's own kernels: its glue (fills, copies, casts) and, when its ops ran, compute the
# poison has already charged. Anything else a call ran that the candidate did not write (a CuPy
# library routine, an Inductor kernel) did work outside the candidate's kernels and PyTorch's ops.
_TORCH_KERNEL = re.compile(r"\b(?:at|c10|at_cuda_detail)::")


def foreign_kernels(trace: Sequence[Kernel], own: set[str]) -> tuple[tuple[str, ...], float]:
    """Kernels in ``trace`` neither the candidate (``own``, exact base names) nor PyTorch (nor the
    timing loop's flush and markers) wrote, most time first, and their share of the traced
    device time."""
    trace = [k for k in trace if k.name not in HARNESS_KERNELS and not k.name.startswith(_COPIES)]
    total = sum(k.us for k in trace)
    foreign: dict[str, float] = {}
    for name, t, *_ in trace:
        if kernel_base_name(name) in own or _TORCH_KERNEL.search(name):
            continue
        foreign[name] = foreign.get(name, 0.0) + t
    names = tuple(sorted(foreign, key=lambda n: -foreign[n]))
    return names, (sum(foreign.values()) / total if total > 0 else 0.0)


@contextlib.contextmanager
def kernel_trace() -> Iterator[list[Kernel]]:
    """Every kernel the GPU ran inside the block, on every stream (the CUDA profiler), with its
    device time and start (microseconds)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    trace: list[Kernel] = []
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        yield trace
        synchronize()
    for e in prof.events():
        if e.device_type == DeviceType.CUDA:
            us = float(getattr(e, "device_time", 0.0) or getattr(e, "cuda_time", 0.0) or 0.0)
            trace.append(Kernel(e.name, us, float(e.time_range.start)))


class ProfiledLaunchCounter(LaunchCounter):
    """CUDA C++ launches, which no Python hook sees: kernels the CUDA profiler recorded, counted when
    their name is exactly one the candidate's source defines (``count`` is given each call's trace)."""

    def __init__(self, candidate_file: str, names: set[str]) -> None:
        super().__init__(candidate_file)
        self.cuda_names = names

    def count(self, trace: Sequence[Kernel]) -> None:
        for k in trace:
            if kernel_base_name(k.name) in self.cuda_names:
                self.n += 1
                self.jit.setdefault(k.name, None)


@contextlib.contextmanager
def pin(counter: LaunchCounter, index: int | None) -> Iterator[list[str]]:
    """Every autotuned kernel of the candidate runs config number ``index`` (of those it would
    consider) for the duration; yields the configs used, for the reason when one is wrong."""
    used: list[str] = []
    if index is None or not counter.autotuners:
        yield used
        return
    from triton.runtime.autotuner import Autotuner

    original = Autotuner.prune_configs

    def prune(self: Any, kwargs: dict[str, Any]) -> list[Any]:
        configs = original(self, kwargs)
        if self not in counter.autotuners:
            return configs
        choice = configs[index % len(configs)]
        used.append(f"{getattr(self.base_fn, '__name__', 'kernel')} with {choice}")
        return [choice]

    for a in counter.autotuners:  # nothing cached before is used, nothing pinned outlives the call
        a.cache.clear()
    Autotuner.prune_configs = prune  # type: ignore[method-assign]
    try:
        yield used
    finally:
        Autotuner.prune_configs = original  # type: ignore[method-assign]
        for a in counter.autotuners:
            a.cache.clear()


def autotune_configs(counter: LaunchCounter) -> int:
    """The most configs any of the candidate's autotuned kernels has (1 when none is autotuned)."""
    return max((len(a.configs) for a in counter.autotuners), default=1)
