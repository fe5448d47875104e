"""Exported kernels as ``torch.library`` custom ops (namespace ``kernelevo``).

An op takes the call's tensors and the module's state as two tensor lists and returns the
outputs as a list, so one schema fits every problem. Its fake implementation is the
*reference* run on fake tensors: the reference is plain PyTorch, so its output shapes, dtypes
and strides are exactly what the kernel was verified to produce — no hand-written shape
function to get wrong. With a fake implementation the op composes with ``torch.compile`` and
``torch.export``, and ``torch.library.opcheck`` passes on it.

The op is opaque to Inductor (``custom_op``, not ``triton_op``): ``triton_op`` needs every
launch written as ``wrap_triton(kernel)[grid](...)``, and an exported kernel is the verified
source byte for byte, which launches with ``kernel[grid](...)``. Rewriting it would run code
that was never judged.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.func import functional_call
from torch.utils import _pytree as pytree

NAMESPACE = "kernelevo"
_lock = threading.Lock()
_ops: dict[str, Any] = {}  # name -> the registered op (a name can be registered once per process)
_local = threading.local()  # the module a loaded op runs its kernel op with, for the call in progress


@contextlib.contextmanager
def running(module: torch.nn.Module) -> Iterator[None]:
    """Run kernel ops with ``module`` (the caller's own instance: its device, its attributes).
    Outside (``opcheck``, a deserialised graph) an op uses the instance it was registered with."""
    saved = getattr(_local, "module", None)
    _local.module = module
    try:
        yield
    finally:
        _local.module = saved


def _aliases(out: torch.Tensor, tensors: Sequence[torch.Tensor]) -> bool:
    return any(out.untyped_storage().data_ptr() == t.untyped_storage().data_ptr() for t in tensors
               if t.device == out.device and not t.is_meta)


def op_name(op: str, kernel_sha: str, init_key: str, consts: str) -> str:
    """A stable schema name: the same kernel built the same way is the same op in every process."""
    h = hashlib.sha256(f"{kernel_sha}|{init_key}|{consts}".encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() else "_" for c in op)
    return f"{safe}_{h}"


def register(
    name: str,
    kernel: torch.nn.Module,
    reference: torch.nn.Module,
    state_names: Sequence[str],
    template: Sequence[Any],
    slots: Sequence[int],
) -> Callable[..., Any]:
    """The custom op ``kernelevo::<name>`` running ``kernel``'s forward (its state taken from the
    op's ``state`` list) on the tensors of a call shaped like ``template``: its non-tensors fixed, a tensor at each
    of ``slots``.
    Outputs come back flat, in ``pytree`` leaf order; the caller unflattens them. Registered once
    per name; later calls return the same op."""
    with _lock:
        if name in _ops:
            return _ops[name]
        names = list(state_names)

        def call(module: torch.nn.Module, inputs: list[torch.Tensor], state: list[torch.Tensor]) -> list[torch.Tensor]:
            args = list(template)
            for i, t in zip(slots, inputs, strict=True):
                args[i] = t
            return pytree.tree_leaves(functional_call(module, dict(zip(names, state, strict=True)), tuple(args)))

        def impl(inputs: list[torch.Tensor], state: list[torch.Tensor]) -> list[torch.Tensor]:
            module = getattr(_local, "module", None) or kernel
            # A custom op may not return a view of its inputs; a copy keeps the schema honest.
            return [o.clone() if _aliases(o, [*inputs, *state]) else o for o in call(module, inputs, state)]

        def fake(inputs: list[torch.Tensor], state: list[torch.Tensor]) -> list[torch.Tensor]:
            return [o.clone() for o in call(reference, inputs, state)]

        op = torch.library.custom_op(f"{NAMESPACE}::{name}", impl, mutates_args=())
        op.register_fake(fake)
        _ops[name] = op
        return op


def register_dispatch(
    name: str,
    run: Callable[[tuple[torch.Tensor, ...], dict[str, torch.Tensor]], Any],
    reference: torch.nn.Module,
    state_names: Sequence[str],
) -> Callable[..., Any]:
    """The op ``kernelevo::<name>`` that a compiled graph calls for a loaded op: at run time it
    picks the verified kernel or the reference (``run``, given the call's tensors and state), so
    choosing stays eager Python while the graph holds one opaque call. Its fake is the reference."""
    with _lock:
        if name in _ops:
            return _ops[name]
        names = list(state_names)

        def impl(inputs: list[torch.Tensor], state: list[torch.Tensor]) -> list[torch.Tensor]:
            out = pytree.tree_leaves(run(tuple(inputs), dict(zip(names, state, strict=True))))
            return [o.clone() if _aliases(o, [*inputs, *state]) else o for o in out]

        def fake(inputs: list[torch.Tensor], state: list[torch.Tensor]) -> list[torch.Tensor]:
            out = functional_call(reference, dict(zip(names, state, strict=True)), tuple(inputs))
            return [o.clone() for o in pytree.tree_leaves(out)]

        op = torch.library.custom_op(f"{NAMESPACE}::{name}", impl, mutates_args=())
        op.register_fake(fake)

        # The kernels are forward-only. A graph that trains through the op (an exported program
        # fine-tuned later) gets the reference's gradient, recomputed: right, if not fast.
        def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
            ctx.n = len(inputs[0])
            ctx.save_for_backward(*inputs[0], *inputs[1])

        def backward(ctx: Any, grads: list[torch.Tensor]) -> tuple[list[torch.Tensor | None], ...]:
            saved = ctx.saved_tensors

            def ref(*ts: torch.Tensor) -> list[torch.Tensor]:
                out = functional_call(reference, dict(zip(names, ts[ctx.n:], strict=True)), ts[:ctx.n])
                return pytree.tree_leaves(out)
            _, vjp = torch.func.vjp(ref, *saved)
            g = vjp(list(grads))
            return list(g[:ctx.n]), list(g[ctx.n:])

        op.register_autograd(backward, setup_context=setup_context)
        _ops[name] = op
        return op
