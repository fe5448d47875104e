"""Compile metadata of Triton kernels that have run: registers, spills, shared memory, warps, stages.

Read from a JIT function's compile cache after its launches, so it costs nothing extra. Triton 3.x keeps
``jit_fn.device_caches``: device -> tuple whose first item is ``{key: CompiledKernel}`` (3.6 and 3.9 differ
in the rest of the tuple); older releases keep ``jit_fn.cache``: device -> ``{key: CompiledKernel}``.
``CompiledKernel.n_regs`` / ``n_spills`` exist only after ``_init_handles()`` (which loads the binary);
``metadata`` is a namedtuple (3.x) or a dict (older). Under the interpreter nothing is compiled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class KernelMeta:
    name: str
    registers: int | None
    spills: int | None
    shared_bytes: int | None
    num_warps: int | None
    num_stages: int | None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _meta_field(metadata: Any, name: str) -> Any:
    if metadata is None:
        return None
    if isinstance(metadata, dict):
        return metadata.get(name)
    try:
        return getattr(metadata, name, None)
    except Exception:  # a metadata object whose attribute access fails is simply unknown
        return None


def _compiled(entry: Any) -> Any | None:
    """The CompiledKernel in a cache entry; async compilation leaves Futures, used once resolved."""
    if hasattr(entry, "metadata"):
        return entry
    done, result = getattr(entry, "done", None), getattr(entry, "result", None)
    if callable(done) and callable(result):
        try:
            if done():
                got = result()
                return got if hasattr(got, "metadata") else None
        except Exception:
            return None
    return None


def _kernel_dicts(jit_fn: Any) -> Iterable[dict]:
    """Every ``{key: CompiledKernel}`` dict of a JIT function (descending through autotuner/heuristics ``.fn``)."""
    obj = jit_fn
    for _ in range(4):  # Autotuner -> Heuristics -> JITFunction -> python function
        caches = getattr(obj, "device_caches", None)
        if isinstance(caches, dict):
            for per_device in list(caches.values()):  # never index: a defaultdict would build a binder
                first = per_device[0] if isinstance(per_device, (tuple, list)) and per_device else per_device
                if isinstance(first, dict):
                    yield first
            return
        old = getattr(obj, "cache", None)
        if isinstance(old, dict) and old and all(isinstance(v, dict) for v in old.values()):
            yield from old.values()
            return
        obj = getattr(obj, "fn", None)
        if obj is None:
            return


def _describe(kernel: Any, fallback: str) -> KernelMeta:
    metadata = getattr(kernel, "metadata", None)
    if getattr(kernel, "n_regs", None) is None:
        init = getattr(kernel, "_init_handles", None)
        if callable(init):
            try:
                init()  # loads the binary (GPU only); reports n_regs / n_spills
            except Exception:
                pass
    name = getattr(kernel, "name", None) or _meta_field(metadata, "name") or fallback
    return KernelMeta(
        name=str(name),
        registers=_int(getattr(kernel, "n_regs", None)),
        spills=_int(getattr(kernel, "n_spills", None)),
        shared_bytes=_int(_meta_field(metadata, "shared")),
        num_warps=_int(_meta_field(metadata, "num_warps")),
        num_stages=_int(_meta_field(metadata, "num_stages")),
    )


def compiled_kernels(jit_fn: Any) -> list[KernelMeta]:
    """Metadata of every compiled specialisation of ``jit_fn``; [] under the interpreter. Never raises."""
    try:
        fallback = getattr(jit_fn, "__name__", None) or getattr(getattr(jit_fn, "fn", None), "__name__", "kernel")
        out = []
        for kernels in _kernel_dicts(jit_fn):
            for entry in list(kernels.values()):
                kernel = _compiled(entry)
                if kernel is not None:
                    out.append(_describe(kernel, str(fallback)))
        return out
    except Exception:
        return []


def cupy_kernels(objects: Iterable[Any], names: set[str]) -> list[KernelMeta]:
    """Metadata of a CUDA candidate's CuPy kernels among ``objects`` (its module's globals, its
    model's attributes): each ``RawKernel``, and each of ``names`` a ``RawModule`` holds (kernels
    fetched with ``get_function`` inside forward are reached through their module). Never raises."""
    out: dict[str, KernelMeta] = {}

    def describe(kernel: Any, name: str) -> None:
        try:
            out.setdefault(name, KernelMeta(name=name, registers=_int(getattr(kernel, "num_regs", None)), spills=None,
                                            shared_bytes=_int(getattr(kernel, "shared_size_bytes", None)),
                                            num_warps=None, num_stages=None))
        except Exception:  # compiling for the attributes failed: nothing to report
            pass

    for obj in objects:
        kind = type(obj)
        if not kind.__module__.startswith("cupy"):
            continue
        if kind.__name__ == "RawKernel":
            describe(obj, str(getattr(obj, "name", "") or "kernel"))
        elif kind.__name__ == "RawModule":
            for name in sorted(names):
                try:
                    describe(obj.get_function(name), name)
                except Exception:  # not in this module
                    continue
    return list(out.values())


def summarize(metas: Sequence[KernelMeta]) -> dict:
    """JSON-ready: every kernel's fields, and the worst case over them."""

    def known(field: str) -> list[int]:
        return [v for m in metas if (v := getattr(m, field)) is not None]

    regs, spills, shared = known("registers"), known("spills"), known("shared_bytes")
    return {
        "kernels": [asdict(m) for m in metas],
        "count": len(metas),
        "max_registers": max(regs) if regs else None,
        "total_spills": sum(spills) if spills else None,
        "max_shared_bytes": max(shared) if shared else None,
    }
