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

import hashlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.func import functional_call
from torch.utils import _pytree as pytree

NAMESPACE = "kernelevo"
_lock = threading.Lock()
_ops: dict[str, Any] = {}  # name -> the registered op (a name can be registered once per process)


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
            # A custom op may not return a view of its inputs; a copy keeps the schema honest.
            return [o.clone() if _aliases(o, [*inputs, *state]) else o for o in call(kernel, inputs, state)]

        def fake(inputs: list[torch.Tensor], state: list[torch.Tensor]) -> list[torch.Tensor]:
            return [o.clone() for o in call(reference, inputs, state)]

        op = torch.library.custom_op(f"{NAMESPACE}::{name}", impl, mutates_args=())
        op.register_fake(fake)
        _ops[name] = op
        return op
