"""What a call looks like, as far as choosing a kernel goes: input shapes and dtypes, non-tensor
arguments, and the shapes of the module's state.

A kernel is run only on calls it was verified for: a signature equal to a verified size's, or
one inside the *bucket* those sizes span (same ranks, dtypes, non-tensor arguments and state
names; every dimension between the smallest and the largest verified). Within a bucket the
champion of the nearest verified size is chosen: the per-size champions measured fastest there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kernelevo.problem import Problem


@dataclass(frozen=True)
class TensorArg:
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorArg | str, ...]  # a tensor's shape and dtype, or repr() of anything else
    state: tuple[tuple[str, TensorArg], ...]  # the module's state_dict entries

    def structure(self) -> tuple[Any, ...]:
        """Everything but the sizes of dimensions: calls with equal structures share a bucket."""
        def shape_free(a: TensorArg | str) -> Any:
            return (len(a.shape), a.dtype) if isinstance(a, TensorArg) else a
        return (tuple(shape_free(a) for a in self.inputs), tuple((n, shape_free(a)) for n, a in self.state))

    def dims(self) -> tuple[int, ...]:
        out: list[int] = []
        for a in (*self.inputs, *(a for _, a in self.state)):
            if isinstance(a, TensorArg):
                out.extend(a.shape)
        return tuple(out)

    def dtypes(self) -> set[str]:
        return {a.dtype for a in self.inputs if isinstance(a, TensorArg)}

    def describe(self) -> str:
        parts = [f"{a.dtype.removeprefix('torch.')}{list(a.shape)}" if isinstance(a, TensorArg) else a
                 for a in self.inputs]
        return ", ".join(parts)


def _arg(x: Any) -> TensorArg | str:
    if isinstance(x, torch.Tensor):
        return TensorArg(tuple(int(d) for d in x.shape), str(x.dtype))
    return repr(x)


def signature_of(inputs: Sequence[Any], state: Mapping[str, torch.Tensor]) -> Signature:
    return Signature(tuple(_arg(x) for x in inputs),
                     tuple((k, TensorArg(tuple(v.shape), str(v.dtype))) for k, v in sorted(state.items())))


def size_signature(problem: Problem, size: Mapping[str, Any]) -> Signature:
    """The signature of a problem size, built on the meta device: no memory for its tensors
    (a verified GPU size of a matmul would otherwise need gigabytes to describe)."""
    ns = problem.namespace(size)
    try:
        with torch.device("meta"):
            init = list(ns.get_init_inputs())
            model = ns.Model(*init)
            inputs = list(ns.get_inputs())
    except Exception:  # noqa: BLE001 - an op without a meta kernel: describe real tensors instead
        init = list(ns.get_init_inputs())
        model = ns.Model(*init)
        inputs = list(ns.get_inputs())
    return signature_of(inputs, model.state_dict())


def _distance(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    return sum(abs(math.log(max(x, 1) / max(y, 1))) for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class Match:
    index: int  # the verified size whose champion runs
    exact: bool


def match(sig: Signature, verified: Sequence[Signature]) -> Match | None:
    """The verified size to run ``sig`` as, or None when it lies outside every bucket."""
    for i, v in enumerate(verified):
        if v == sig:
            return Match(i, True)
    same = [(i, v) for i, v in enumerate(verified) if v.structure() == sig.structure()]
    if not same:
        return None
    dims = sig.dims()
    for k, d in enumerate(dims):
        lo = min(v.dims()[k] for _, v in same)
        hi = max(v.dims()[k] for _, v in same)
        if not lo <= d <= hi:
            return None
    return Match(min(same, key=lambda iv: _distance(iv[1].dims(), dims))[0], False)
