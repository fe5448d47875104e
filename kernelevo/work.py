"""How much work an aten op does: the yardstick for compute attribution.

The reference's forward is metered here (:class:`WorkRecorder`) and a candidate's PyTorch calls
are charged in its worker by the same :func:`work_of`, so a share is like for like: FLOPs for
matmuls, convolutions and attention (PyTorch's own FLOP formulas), the most elements any tensor
of the call holds for everything else, nothing for glue (allocation, views, layout copies, casts
and fills).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Ops that only allocate, view, copy, cast or fill: glue a candidate may use freely.
GLUE_OPS = frozenset(
    """
    empty empty_like empty_strided empty_permuted new_empty new_empty_strided zeros zeros_like ones ones_like
    full full_like new_zeros new_ones new_full scalar_tensor fill zero resize resize_as set eye arange linspace
    normal uniform random randn randn_like rand rand_like randint randint_like randperm bernoulli exponential
    geometric log_normal cauchy
    view _unsafe_view view_as reshape _reshape_alias as_strided expand expand_as permute transpose t squeeze
    unsqueeze select slice split split_with_sizes chunk unbind flatten unflatten narrow alias detach lift_fresh
    lift_fresh_copy diagonal movedim swapaxes view_as_real view_as_complex unfold
    contiguous clone copy _copy_from _copy_from_and_resize _to_copy to cat stack constant_pad_nd repeat flip
    roll _unsafe_view_copy view_copy expand_copy permute_copy transpose_copy t_copy squeeze_copy unsqueeze_copy
    select_copy slice_copy split_copy unbind_copy alias_copy detach_copy as_strided_copy _reshape_copy
    record_stream _pin_memory pin_memory is_pinned
    """.split()
)

# Ops returning no tensor that still read tensor data (host reads and comparisons).
HOST_READS = frozenset({"_local_scalar_dense", "is_nonzero", "equal"})


def base_name(op_name: str) -> str:
    """``aten::add_.Tensor`` -> ``add``: the op whatever its overload and in-place form."""
    name = op_name.split("::")[-1].split(".")[0]
    return name if name.startswith("__") else name.removesuffix("_")


def _numel(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel()
    if isinstance(x, (list, tuple)):
        return max((_numel(v) for v in x), default=0)
    return 0


def work_of(packet: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> float:
    """The work one op call does: its FLOPs where PyTorch's FLOP counter has a formula (matmuls,
    convolutions, attention), else the most elements any of its tensors holds. 0 for glue."""
    base = base_name(name)
    if base in GLUE_OPS:
        return 0.0
    if not isinstance(out, (torch.Tensor, list, tuple)) and base not in HOST_READS:
        return 0.0  # metadata (sizes, flags)
    from torch.utils.flop_counter import flop_registry

    formula = flop_registry.get(packet)
    if formula is not None:
        try:
            return float(formula(*args, **kwargs, out_val=out))
        except Exception:  # a formula that does not fit this overload: count elements instead
            pass
    return float(max(_numel(args), _numel(list(kwargs.values())), _numel(out), 1))


class WorkRecorder(TorchDispatchMode):
    """The controller's meter: the work of every outermost op a call dispatches."""

    def __init__(self) -> None:
        super().__init__()
        self.work = 0.0
        self.ops: Counter[str] = Counter()

    @property
    def compute_ops(self) -> frozenset[str]:
        """The ops that did work (glue left out)."""
        return frozenset(self.ops)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), "CompositeImplicitAutograd"):
            with self:  # charged through its parts, as in the worker
                return func.decompose(*args, **kwargs)
        out = func(*args, **kwargs)
        w = work_of(func.overloadpacket, func.name(), args, kwargs, out)
        if w:
            self.work += w
            self.ops[base_name(func.name())] += 1
        return out
