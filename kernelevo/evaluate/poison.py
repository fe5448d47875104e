"""Compute attribution: PyTorch's compute is poisoned in a candidate's process.

Every aten op that computes (anything beyond allocation, views, layout copies, casts and
fills) gets a kernel of ours registered at the backend keys (CPU, CUDA) before any
candidate code exists in the process. Each call is charged its work (FLOPs for matmul-like
ops, elements touched for the rest); a forward may spend a small share of the reference's
own work on such glue (a ``.sum().item()`` for a normaliser, a final ``torch.sum`` over
per-row losses), and every op past that budget returns random values. The rule is the same
on every call, checked or timed, so no probe can tell calls apart, and it sits below the
Python dispatch key: a dispatch mode popped or excluded, a redispatch, ``torch.compile``
(Dynamo is off in the worker) or TorchScript all end in these kernels. Host reads of tensor
data are charged too (``.item()`` through the dispatcher; a CUDA tensor's copy to the host at
the CUDA key) or refused (``.numpy()``, ``.tolist()``, ``__array__``, a CPU tensor's
``__dlpack__``: NumPy on the host is compute that no kernel of the candidate's did).

The state lives in closures held by the dispatcher, not in module globals, so candidate
code has no name to reach it by. The controller charges the reference's forward with the
same ``work_of`` (``kernelevo.work``), so shares are like for like.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from kernelevo.work import GLUE_OPS, WorkRecorder, base_name, work_of

__all__ = ["GLUE_OPS", "Meter", "Poison", "WorkRecorder", "base_name", "install", "work_of"]
@dataclass
class Meter:
    """What the candidate's PyTorch compute did in the current call. Owned by the harness."""

    budget: float = math.inf
    spent: float = 0.0
    poisoned: bool = False
    ops: Counter[str] = field(default_factory=Counter)

    def begin(self, budget: float) -> None:
        self.budget, self.spent, self.poisoned = budget, 0.0, False
        self.ops.clear()

    def top_ops(self, n: int = 4) -> tuple[str, ...]:
        return tuple(f"aten::{k}" for k, _ in self.ops.most_common(n))


class Poison:
    """The installed poison: its meter, and how to take it out again (reference workers)."""

    def __init__(self, meter: Meter, destroy: Callable[[], None], exempt: set[str]):
        self.meter = meter
        self._destroy = destroy
        self._exempt = exempt

    def exempt(self, *files: str) -> None:
        """Torch ops called directly from code in these (harness) files are never charged: the
        harness's own copies of outputs to the host."""
        self._exempt.update(files)

    def remove(self) -> None:
        self._destroy()

    @staticmethod
    def refuse_host_reads(refused: list[str]) -> dict[str, Callable[..., Any]]:
        return _refuse_host_reads(refused)


def to_host(dst: torch.Tensor, src: torch.Tensor) -> bool:
    """Whether a copy brings a device tensor's data to the host (where NumPy could compute on it)."""
    return dst.device.type == "cpu" and src.device.type != "cpu"


def _garbage(t: torch.Tensor, gen: dict[str, torch.Generator]) -> None:
    """Overwrite ``t`` with random values unrelated to what it held."""
    if t.numel() == 0:
        return
    key = str(t.device.type)
    if key not in gen:
        gen[key] = torch.Generator(device=t.device).manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
    g = gen[key]
    with torch.no_grad():
        if t.is_floating_point() or t.is_complex():
            t.normal_(0.0, 3.0, generator=g)
        elif t.dtype == torch.bool:
            t.random_(0, 2, generator=g)
        else:
            t.random_(0, 7, generator=g)


def _mutated(schema: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    """The tensors an in-place or ``out=`` op writes (per its schema)."""
    written = []
    for i, a in enumerate(schema.arguments):
        if a.alias_info is not None and a.alias_info.is_write:
            v = kwargs.get(a.name, args[i] if i < len(args) else None)
            written += [v] if isinstance(v, torch.Tensor) else [x for x in (v or ()) if isinstance(x, torch.Tensor)]
    return written


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def install(device_keys: tuple[str, ...] = ("CPU", "CUDA"), copy_keys: tuple[str, ...] | None = None,
            host_read: Callable[[torch.Tensor, torch.Tensor], bool] = to_host) -> Poison:
    """Register the poison for every computing aten op at ``device_keys``, and a charge on
    ``copy_`` at ``copy_keys`` (default: the device keys but the CPU's) for copies that
    ``host_read`` says bring data to the host. Call once, before any candidate code runs; the
    zygote does, and reference workers call ``remove()`` after forking."""
    if copy_keys is None:
        copy_keys = tuple(k for k in device_keys if k != "CPU")
    meter = Meter()
    exempt: set[str] = set()
    gens: dict[str, torch.Generator] = {}
    depth = [0]
    getframe = sys._getframe

    def charge(name: str, work: float) -> bool:
        """Charge ``work``; True when it is over the budget (the result must be garbage)."""
        if getframe(2).f_code.co_filename in exempt:
            return False
        meter.spent += work
        meter.ops[base_name(name)] += 1
        if meter.spent > meter.budget:
            meter.poisoned = True
            return True
        return False

    def make(op: Any, kernel: Any) -> Callable[..., Any]:
        name, packet, schema = op.name(), op.overloadpacket, op._schema
        tensor_args = _tensor_positions(schema)

        def impl(keyset: Any, *args: Any, **kwargs: Any) -> Any:
            if tensor_args:
                args, kwargs = _rewrap(tensor_args, args, kwargs)
            if depth[0]:  # inside another op we already charge: a composite's parts
                return kernel.call_boxed(keyset, *args, **kwargs)
            depth[0] += 1
            try:
                out = kernel.call_boxed(keyset, *args, **kwargs)
                work = work_of(packet, name, args, kwargs, out)
                if work and charge(name, work):
                    if not isinstance(out, (torch.Tensor, list, tuple)):
                        return type(out)(int.from_bytes(os.urandom(2), "little") % 7) if out is not None else out
                    for t in {id(t): t for t in _tensors(out) + _mutated(schema, args, kwargs)}.values():
                        _garbage(t, gens)
                return out
            finally:
                depth[0] -= 1

        return impl

    def make_copy(kernel: Any) -> Callable[..., Any]:
        """A device's ``copy_``: a copy to the host is a host read of the data, charged like compute."""

        def impl(keyset: Any, dst: torch.Tensor, src: torch.Tensor, *rest: Any, **kw: Any) -> Any:
            out = kernel.call_boxed(keyset, dst, src, *rest, **kw)
            if not depth[0] and host_read(dst, src) and charge("aten::_copy_to_host", float(src.numel())):
                _garbage(dst, gens)
            return out

        return impl

    lib = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Overriding a previously registered kernel", once per op
        for full in torch._C._dispatch_get_all_op_names():
            if not full.startswith("aten::"):
                continue
            base = base_name(full)
            for key in dict.fromkeys(device_keys + copy_keys):
                host_copy = base == "copy" and key in copy_keys  # glue is free, but not a read of the data
                if not host_copy and (base in GLUE_OPS or key not in device_keys):
                    continue
                # Ops that only decompose (CompositeImplicitAutograd) are charged through their parts;
                # a kernel of ours at their backend key would stop the decomposition.
                if not any(torch._C._dispatch_has_kernel_for_dispatch_key(full, k) for k in (key, *_EXPLICIT)):
                    continue
                op = _overload(full)
                if op is None:
                    continue
                kernel = torch.library.get_kernel(full, key)
                fn = make_copy(kernel) if host_copy else make(op, kernel)
                lib.impl(full.split("::", 1)[1], fn, key, with_keyset=True)
    _detach_finalizer(lib)
    return Poison(meter, lib._destroy, exempt)


def _tensor_positions(schema: Any) -> dict[str, int]:
    """Tensor-typed parameters of a schema (name -> position): where the dispatcher may hand a
    Python kernel a plain number (a "wrapped number" such as the 2 in ``x * 2``)."""
    out = {}
    for i, a in enumerate(schema.arguments):
        t = a.type
        inner = t.getElementType() if isinstance(t, torch._C.OptionalType) else t
        if isinstance(inner, torch._C.TensorType):
            out[a.name] = i
    return out


_SCALAR_DTYPES = {bool: torch.bool, int: torch.int64, complex: torch.complex64}


def _as_tensor(v: Any) -> Any:
    if isinstance(v, (bool, int, float, complex)):
        # A 0-dim tensor of the dtype a wrapped number promotes like (floats: the default dtype).
        return torch.scalar_tensor(v, dtype=_SCALAR_DTYPES.get(type(v), torch.get_default_dtype()))
    return v


def _rewrap(positions: dict[str, int], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """Numbers passed for Tensor parameters back into tensors, as the boxed kernel expects."""
    if any(i < len(args) and isinstance(args[i], (bool, int, float, complex)) for i in positions.values()):
        args = tuple(_as_tensor(a) if i in positions.values() else a for i, a in enumerate(args))
    if kwargs and any(isinstance(kwargs.get(n), (bool, int, float, complex)) for n in positions):
        kwargs = {k: _as_tensor(v) if k in positions else v for k, v in kwargs.items()}
    return args, kwargs


_EXPLICIT = ("CompositeExplicitAutograd", "CompositeExplicitAutogradNonFunctional")


def _overload(full: str) -> Any:
    name, _, overload = full.split("::", 1)[1].partition(".")
    try:
        packet = getattr(torch.ops.aten, name)
        return getattr(packet, overload or "default")
    except (AttributeError, RuntimeError):
        return None


def _detach_finalizer(lib: Any) -> None:
    """A Library undoes its registrations when collected, through a finalizer anyone could call
    from ``weakref.finalize``'s registry. Ours lives as long as the process: detach it."""
    import weakref

    for f in list(getattr(weakref.finalize, "_registry", {})):
        info = f.peek()
        if info is not None and info[0] is lib:
            f.detach()


def _refuse_host_reads(refused: list[str]) -> dict[str, Callable[..., Any]]:
    """``.numpy()``, ``.tolist()``, ``__array__`` and a CPU tensor's ``__dlpack__`` hand tensor data
    to the host: refused, and logged in ``refused``. Returns the originals (the harness's own reads).
    The replacements close over nothing but that log: no way to the meter from them."""
    originals: dict[str, Callable[..., Any]] = {}

    def guard(name: str, original: Callable[..., Any], cpu_only: bool) -> Callable[..., Any]:
        def method(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if cpu_only and self.device.type != "cpu":  # CuPy shares CUDA tensors this way
                return original(self, *args, **kwargs)
            refused.append(name)
            raise RuntimeError(f"Tensor.{name}() is refused in the judge: reading tensor data on the host "
                               "is compute outside your kernels")

        method.__name__ = name
        return method

    for name, cpu_only in (("numpy", False), ("tolist", False), ("__array__", False), ("__dlpack__", True)):
        originals[name] = getattr(torch.Tensor, name)
        setattr(torch.Tensor, name, guard(name, originals[name], cpu_only))
    return originals
