"""The GPU side of the timing loop (:class:`kernelevo.evaluate.timing.Clock`): events, the L2
flush, the markers that bound each call in the profiler's trace, and NVML samples.

The flush writes twice the L2 size with a Triton kernel of its own name, so the profiler's
trace can tell it from any kernel a candidate or PyTorch runs. Before it, persisting L2 is
dropped when the process has set some aside (``cudaLimitPersistingL2CacheSize`` > 0; only
CUDA C++ can, through an access policy window): lines marked persisting survive a flush, so
a candidate could keep its inputs resident across calls. Querying the limit is a host call
that does not wait on the GPU, so the queue stays full when nothing was set aside.
"""

from __future__ import annotations

import contextlib
import ctypes
from dataclasses import asdict
from typing import Any

import torch
import triton
import triton.language as tl

from kernelevo.evaluate.launches import kernel_trace
from kernelevo.evaluate.timing import _EVENT, _SYNC, FLUSH_KERNEL, MARK_KERNEL, Kernel
from kernelevo.profile.gpu import nvml_sample

_PERSISTING_L2_LIMIT = 0x06  # cudaLimitPersistingL2CacheSize


@triton.jit
def _kernelevo_l2_flush_kernel(buf_ptr, n, BLOCK: tl.constexpr):
    """Writes ``n`` int32 words of ``buf`` (2 x L2 bytes): every line a candidate left in L2 is evicted."""
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    tl.store(buf_ptr + offs, tl.zeros((BLOCK,), dtype=tl.int32), mask=offs < n)


@triton.jit
def _kernelevo_mark_kernel(buf_ptr):
    """One store: the end of a timed call's window in the trace (a few microseconds, untimed)."""
    tl.store(buf_ptr, 1)


assert _kernelevo_l2_flush_kernel.fn.__name__ == FLUSH_KERNEL and _kernelevo_mark_kernel.fn.__name__ == MARK_KERNEL


def _cudart() -> Any:
    """The CUDA runtime this process loaded (the one torch uses), or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "libcudart" in line}
        for path in sorted(paths):
            return ctypes.CDLL(path)
    except OSError:
        pass
    for name in ("libcudart.so", "libcudart.so.13", "libcudart.so.12"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def _persisting_l2_calls(rt: Any) -> tuple[Any, Any, Any] | None:
    """cudaDeviceGetLimit, cudaCtxResetPersistingL2Cache and cudaDeviceSetLimit, resolved now (a
    missing symbol must not surface later, inside a candidate's timing)."""
    if rt is None:
        return None
    try:
        get, reset, set_ = rt.cudaDeviceGetLimit, rt.cudaCtxResetPersistingL2Cache, rt.cudaDeviceSetLimit
    except AttributeError:
        return None
    get.argtypes, get.restype = [ctypes.POINTER(ctypes.c_size_t), ctypes.c_int], ctypes.c_int
    set_.argtypes, set_.restype = [ctypes.c_int, ctypes.c_size_t], ctypes.c_int
    reset.argtypes, reset.restype = [], ctypes.c_int
    return get, reset, set_


class CudaClock:
    """Events, flush, markers, the kernel trace and NVML for one device. Built before the
    candidate is imported (it resolves the CUDA runtime through ctypes, which candidates
    may not use)."""

    def __init__(self, l2_bytes: int, device_index: int = 0) -> None:
        words = max(2 * l2_bytes, 1 << 20) // 4
        self._buf = torch.empty(words, dtype=torch.int32, device="cuda")
        self._mark = torch.empty(1, dtype=torch.int32, device="cuda")
        self._n = words
        self._device = device_index
        self._limits = _persisting_l2_calls(_cudart())
        self.persisting_seen = False  # the process set aside persisting L2 at some point
        self.notes: list[str] = []
        if self._limits is None:
            self.notes.append("persisting L2 could not be checked (no CUDA runtime found through ctypes)")
        # Before the candidate exists: the flush and marker compiled, CUPTI and NVML started (the
        # profiler's first start imports torch internals; NVML's first sample loads its library),
        # so nothing of that lands in a timed block. The markers must show in the trace, or no
        # per-call kernel time can be claimed.
        with kernel_trace() as warm:
            self.flush()
            self.mark()
        names = {k.name for k in warm}
        self.windows = FLUSH_KERNEL in names and MARK_KERNEL in names
        if not self.windows:
            self.notes.append("the profiler did not see the timing markers: no per-call kernel time")
        self.sample()

    def event(self) -> Any:
        return _EVENT(enable_timing=True)

    def synchronize(self) -> None:
        _SYNC()

    def _drop_persisting_l2(self) -> None:
        if self._limits is None:
            return
        get, reset, set_ = self._limits
        size = ctypes.c_size_t(0)
        if get(ctypes.byref(size), _PERSISTING_L2_LIMIT) == 0 and size.value > 0:
            self.persisting_seen = True
            reset()
            set_(_PERSISTING_L2_LIMIT, ctypes.c_size_t(0))

    def flush(self) -> None:
        self._drop_persisting_l2()
        block = 8192
        _kernelevo_l2_flush_kernel[(triton.cdiv(self._n, block),)](self._buf, self._n, BLOCK=block)

    def mark(self) -> None:
        _kernelevo_mark_kernel[(1,)](self._mark)

    def trace(self) -> contextlib.AbstractContextManager[list[Kernel]]:
        return kernel_trace()

    def sample(self) -> Any:
        s = nvml_sample(self._device)
        return None if s is None else asdict(s)
