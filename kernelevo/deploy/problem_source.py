"""One hot op as a problem file (KernelBench's format), for ``kernelevo hotspots``.

The profiler (:mod:`kernelevo.deploy.hotspots`) records each call as an :class:`Op` (its target,
its arguments with each tensor replaced by a :class:`Slot`, and a ``torch.nn`` module's
constructor arguments, read back from the module by :func:`constructor`) and groups identical
calls into a :class:`Group`. :func:`problem_source` writes a group's problem file: a ``Model`` that makes the
call, one shape global per dim (a constructor int equal to a dim is that dim's global), ``SIZES``
as observed and ``CPU_SIZES`` shrunk for Triton's interpreter. The file is checked before it is
returned: it loads, its declared sizes give the observed shapes, and its CPU sizes run.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import keyword
import math
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn

from kernelevo.problem import load_problem

Shape = tuple[tuple[tuple[int, ...], str], ...]  # one call's tensor inputs: (shape, dtype) each

_INPUT_LIMIT = 1 << 14  # elements per input at a CPU size: the Triton interpreter stays quick
_PARAM_LIMIT = 1 << 18  # elements per weight at a CPU size
SMALL_CTOR = 8  # constructor ints below this (kernel sizes, strides) stay literals
NORM_MODULES = (nn.LayerNorm, nn.RMSNorm)
_OPERATORS = {"add": "+", "__add__": "+", "sub": "-", "__sub__": "-", "mul": "*", "__mul__": "*", "div": "/",
              "__truediv__": "/", "matmul": "@", "__matmul__": "@"}
_RESERVED = frozenset({"torch", "nn", "Model", "get_inputs", "get_init_inputs", "SIZES", "CPU_SIZES", "ATOL", "RTOL"})


class Unwritable(Exception):
    """Why one op gets no problem file (the op is listed as skipped, the run goes on)."""


@dataclass(frozen=True)
class Slot:
    """A tensor argument's place in a recorded call."""

    index: int  # which tensor argument stands here


@dataclass(frozen=True)
class Op:
    """One distinct op: a leaf module's call (with its constructor) or a functional call."""

    kind: Literal["module", "function"]
    target: str
    key: str
    args: tuple[Any, ...]  # the call's arguments, tensors replaced by Slot
    kwargs: tuple[tuple[str, Any], ...]
    cls: type[nn.Module] | None = None
    ctor: tuple[tuple[str, Any], ...] = ()
    params: tuple[tuple[int, ...], ...] = ()
    unwritable: str = ""


@dataclass
class Call:
    """One recorded call of an op in a forward."""

    index: int
    op: Op
    path: str
    shapes: Shape
    follows: bool  # its only tensor input is the previous recorded call's output


@dataclass
class Group:
    """Identical calls (or chains of two) that make one hotspot."""

    kind: Literal["module", "function", "chain"]
    ops: tuple[Op, ...]
    uses: list[tuple[Call, ...]] = field(default_factory=list)


def _template(value: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        tensors.append(value)
        return Slot(len(tensors) - 1)
    if isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
        return type(value)(_template(v, tensors) for v in value)
    return value


def templated(args: Any, kwargs: Mapping[str, Any]) -> tuple[Any, tuple[tuple[str, Any], ...], list[torch.Tensor]]:
    """A call's arguments with each tensor replaced by a slot, and the tensors in slot order."""
    tensors: list[torch.Tensor] = []
    return _template(tuple(args), tensors), tuple((k, _template(v, tensors)) for k, v in kwargs.items()), tensors


def literal(value: Any, names: Mapping[int, str] | Callable[[int], str] | None = None) -> str:
    """Python source for a call argument; ``names`` turns slots (or shape ints) into names."""
    if isinstance(value, Slot):
        assert callable(names)
        return names(value.index)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return repr(value)
    if isinstance(value, int):
        return names.get(value, repr(value)) if isinstance(names, Mapping) and value >= SMALL_CTOR else repr(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f"float('{value}')"
    if isinstance(value, torch.Size):
        return f"torch.Size([{', '.join(map(str, value))}])"
    if isinstance(value, (list, tuple)):
        items = [literal(v, names) for v in value]
        if isinstance(value, tuple):
            return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
        return f"[{', '.join(items)}]"
    if isinstance(value, (torch.dtype, torch.memory_format, torch.layout)):
        return str(value)
    raise Unwritable(f"cannot write the argument {type(value).__name__} {value!r:.40} literally")


def _arguments(op: Op, names: Callable[[int], str]) -> list[str]:
    return [literal(a, names) for a in op.args] + [f"{k}={literal(v, names)}" for k, v in op.kwargs]


def _call_text(op: Op, names: Callable[[int], str]) -> str:
    args = _arguments(op, names)
    short = op.target.rsplit(".", 1)[-1]
    if op.target.startswith("torch.Tensor.") and op.args and isinstance(op.args[0], Slot):
        if short in _OPERATORS and len(op.args) == 2 and not op.kwargs:
            return f"{args[0]} {_OPERATORS[short]} {args[1]}"
        return f"{args[0]}.{short}({', '.join(args[1:])})"
    return f"{op.target}({', '.join(args)})"


def constructor(module: nn.Module) -> tuple[tuple[tuple[str, Any], ...], str]:
    """The arguments that rebuild ``module`` (read from its same-named attributes), or why none do."""
    cls = type(module)
    if getattr(nn, cls.__name__, None) is not cls:
        return (), f"{cls.__name__} is not a torch.nn class"
    dtypes = {p.dtype for p in itertools.chain(module.parameters(), module.buffers()) if p.is_floating_point()}
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
    args: dict[str, Any] = {}
    for name, p in list(inspect.signature(cls.__init__).parameters.items())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name in ("device", "dtype"):
            if dtype != torch.float32:  # both, in order, so init inputs stay positional
                args[name] = None if name == "device" else dtype
            continue
        value = getattr(module, name, inspect.Parameter.empty)
        if isinstance(p.default, bool) and (value is None or isinstance(value, torch.Tensor)):
            value = value is not None  # bias=True becomes a bias tensor
        elif isinstance(value, (torch.Tensor, nn.Module)) or value is inspect.Parameter.empty:
            value = p.default
        if value is inspect.Parameter.empty:
            return (), f"{cls.__name__}: no attribute gives its constructor argument {name!r}"
        args[name] = value
    try:
        with torch.device("meta"):  # shapes and repr only: no memory, no initialisation
            rebuilt = cls(**args)
    except Exception as e:  # noqa: BLE001 - any failure means "cannot rebuild"
        return (), f"{cls.__name__}({args}) fails: {type(e).__name__}: {e}".splitlines()[0]
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}
    if rebuilt.extra_repr() != module.extra_repr() or shapes != {
            k: (tuple(v.shape), v.dtype) for k, v in rebuilt.state_dict().items()}:
        return (), f"{cls.__name__} rebuilt from its attributes differs from the original ({rebuilt.extra_repr()})"
    return tuple(args.items()), ""


@dataclass(frozen=True)
class _Spec:
    """What a problem file needs besides its sizes: the class body and the call."""

    inputs: tuple[str, ...]
    ctor: tuple[tuple[str, Any], ...]  # Model.__init__'s parameters and their observed values
    init: tuple[str, ...]  # __init__ body lines
    forward: str  # the returned expression
    params: tuple[tuple[int, ...], ...]
    probe: Callable[[list[torch.Tensor]], Any] | None = None  # runs the op's modules (on meta tensors)


def _spec(group: Group) -> _Spec:
    def child(attr: str, op: Op, params: tuple[tuple[str, Any], ...]) -> str:
        assert op.cls is not None
        args = ", ".join(f"{k}={p}" for (k, _), (p, _) in zip(op.ctor, params, strict=True))
        line = f"self.{attr} = nn.{op.cls.__name__}({args})"
        if issubclass(op.cls, nn.modules.batchnorm._NormBase):  # the model was profiled in eval mode
            line += f"\n        self.{attr}.eval()  # running statistics, as in the model, not the batch's"
        return line

    def probe(op: Op, combine: Callable[[list[torch.Tensor]], list[torch.Tensor]] = list) -> Any:
        def run(tensors: list[torch.Tensor]) -> Any:
            assert op.cls is not None
            module = op.cls(**dict(op.ctor))
            fill = functools.partial(_fill, tensors=combine(tensors))
            return module(*fill(op.args), **{k: fill(v) for k, v in op.kwargs})
        return run

    op = group.ops[0]
    n = len(group.uses[0][0].shapes)
    names = ("x", "y", "z", *(f"x{i}" for i in range(3, n)))[:n]
    if group.kind == "function":
        return _Spec(names, (), (), _call_text(op, lambda i: names[i]), ())
    if group.kind == "module":
        forward = f"self.op({', '.join(_arguments(op, lambda i: names[i]))})"
        return _Spec(names, op.ctor, (child("op", op, op.ctor),), forward, op.params, probe(op))
    a, b = group.ops
    if b.cls in NORM_MODULES:
        return _Spec(("x", "residual"), b.ctor, (child("norm", b, b.ctor),), "self.norm(x + residual)", b.params,
                     probe(b, lambda t: [t[0] + t[1]]))
    clash = {k for k, _ in a.ctor} & {k for k, _ in b.ctor}
    b_ctor = tuple((f"act_{k}" if k in clash else k, v) for k, v in b.ctor)  # one __init__ takes both
    if b.cls is not None:
        return _Spec(("x",), a.ctor + b_ctor, (child("linear", a, a.ctor), child("act", b, b_ctor)),
                     "self.act(self.linear(x))", a.params + b.params, probe(a))
    return _Spec(("x",), a.ctor, (child("linear", a, a.ctor),), _call_text(b, lambda i: "self.linear(x)"), a.params,
                 probe(a))


def _fill(value: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(value, Slot):
        return tensors[value.index]
    if isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
        return type(value)(_fill(v, tensors) for v in value)
    return value


def _runs(probe: Callable[[list[torch.Tensor]], Any], shapes: list[list[int]], dtypes: list[str]) -> bool:
    try:
        with torch.device("meta"), torch.no_grad():
            probe([torch.empty(s, dtype=getattr(torch, d)) for s, d in zip(shapes, dtypes, strict=True)])
        return True
    except Exception:  # noqa: BLE001 - any failure: these shapes do not fit the module
        return False


def _coincidences(spec: _Spec, call: Shape, positions: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """The input dims among ``positions`` that only happen to equal a constructor argument: the
    module (on the meta device) still runs when they change. A dim is changed together with the
    same dim of same-rank inputs, so a tie between inputs (x + residual) is not taken for one."""
    shapes = [list(s) for s, _ in call]
    dtypes = [d for _, d in call]
    if spec.probe is None or not _runs(spec.probe, shapes, dtypes):
        return set()
    free: set[tuple[int, int]] = set()
    for i, j in positions:
        together = [(k, j) for k, s in enumerate(shapes) if len(s) == len(shapes[i]) and (k, j) in positions]
        trial = [list(s) for s in shapes]
        for k, jj in together:
            trial[k][jj] += 1
        if _runs(spec.probe, trial, dtypes):
            free.update(together)
    return free


def _alias(param: str, k: int | None, n: int) -> str:
    if param == "normalized_shape":
        return "dim" if n == 1 else f"dim{k}"
    return param if k is None else f"{param}{k}"


def _shrink(values: dict[str, int], tensors: list[tuple[list[str | int], int]], ctor: set[str],
            shrink_ctor: bool) -> dict[str, int]:
    """Halve dims until every tensor is under its limit: free dims first, constructor dims last."""
    values = dict(values)
    for _ in range(10_000):
        over = [dims for dims, limit in tensors
                if math.prod(values[d] if isinstance(d, str) else d for d in dims) > limit]
        if not over:
            break
        free = [d for d in over[0] if isinstance(d, str) and values[d] > 1]
        pool = [d for d in free if d not in ctor] or ([d for d in free if d in ctor] if shrink_ctor else [])
        if not pool:
            break
        name = max(pool, key=lambda d: (values[d], d))
        values[name] //= 2
    return values


@dataclass
class _Dim:
    """One shape global: its value in each observed call, the input dims it gives, and the
    constructor argument it also is (if any)."""

    sig: tuple[int, ...]
    positions: list[tuple[int, int]] = field(default_factory=list)
    ctor: str = ""
    name: str = ""


def _source(spec: _Spec, observed: list[Shape], stats: list[tuple[bool, int]], doc: str, shrink_ctor: bool) -> str:
    """The problem file. Each shape global is one dim value (dims equal in every observed call share
    one); a constructor int equal to a dim is that dim's global, so shrinking it shrinks both."""
    n = len(observed)
    groups: list[_Dim] = []  # one per shape global
    by_value: dict[tuple[int, ...], _Dim] = {}
    for i, (shape, _) in enumerate(observed[0]):
        for j in range(len(shape)):
            sig = tuple(o[i][0][j] for o in observed)
            if sig not in by_value:
                by_value[sig] = _Dim(sig)
                groups.append(by_value[sig])
            by_value[sig].positions.append((i, j))
    param_dims = {d for s in spec.params for d in s}
    for param, value in spec.ctor:
        items = list(enumerate(value)) if isinstance(value, (tuple, list)) else [(None, value)]
        for k, v in items:
            if not isinstance(v, int) or isinstance(v, bool) or v < SMALL_CTOR:
                continue
            dim = by_value.get((v,) * n)
            if dim is None and v in param_dims:  # a weight's dim only (out_features): still shrinkable
                dim = by_value[(v,) * n] = _Dim((v,) * n)
                groups.append(dim)
            if dim is None or dim.ctor:
                continue
            dim.ctor = _alias(param, k, len(items))
            free = _coincidences(spec, observed[0], dim.positions)
            if free:
                groups.append(_Dim(dim.sig, [p for p in dim.positions if p in free]))
                dim.positions = [p for p in dim.positions if p not in free]

    taken = set(_RESERVED) | set(spec.inputs)
    for dim in sorted(groups, key=lambda d: not d.ctor):
        wanted = [(-1, dim.ctor)] if dim.ctor else []
        for i, j in dim.positions:
            rank = len(observed[0][i][0])
            if i > 0:
                wanted.append((4, f"{spec.inputs[i]}_dim{j}"))
            elif j == rank - 1:
                wanted.append((0, "dim"))
            elif j == 0:
                wanted.append((1, "batch_size"))
            else:
                wanted.append((2 if rank == 3 else 3, "seq_len" if rank == 3 else f"dim{j}"))
        name = next((w for _, w in sorted(wanted) if w not in taken and not keyword.iskeyword(w)), None)
        dim.name = name or next(f"size{k}" for k in itertools.count() if f"size{k}" not in taken)
        taken.add(dim.name)
    order = [d.name for d in groups]
    sizes = [{d.name: d.sig[o] for d in groups} for o in range(n)]
    dim_of = {pos: d.name for d in groups for pos in d.positions}
    ctor_ints = {d.sig[0]: d.name for d in groups if d.ctor}
    tensors: list[tuple[list[str | int], int]] = [
        ([dim_of[(i, j)] for j in range(len(shape))], _INPUT_LIMIT) for i, (shape, _) in enumerate(observed[0])]
    tensors += [([ctor_ints.get(d, d) for d in s], _PARAM_LIMIT) for s in spec.params]
    cpu = [_shrink(s, tensors, set(ctor_ints.values()), shrink_ctor) for s in sizes]

    inputs = []
    for i, (shape, dtype) in enumerate(observed[0]):
        dims = [dim_of[(i, j)] for j in range(len(shape))]
        nonneg, top = stats[i] if i < len(stats) else (False, 0)
        as_tuple = f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"
        kind = getattr(torch, dtype)
        if kind == torch.bool:
            inputs.append(f"torch.rand({as_tuple}) < 0.5")
        elif kind.is_floating_point or kind.is_complex:
            fn = "torch.rand" if nonneg and kind.is_floating_point else "torch.randn"  # rsqrt, log: keep the sign
            inputs.append(f"{fn}({', '.join(dims) or '()'}{'' if dtype == 'float32' else f', dtype=torch.{dtype}'})")
        else:
            dt = "" if dtype == "int64" else f", dtype=torch.{dtype}"
            # Indices: bounded by the constructor's count (an embedding's rows) when one covers them,
            # so a CPU size that shrinks the count shrinks the indices too.
            bound = min((v for v in ctor_ints if v > top), default=None)
            inputs.append(f"torch.randint(0, {top + 1 if bound is None else ctor_ints[bound]}, {as_tuple}{dt})")
    half = {d for call in observed for _, d in call} | {str(v) for _, v in spec.ctor if isinstance(v, torch.dtype)}
    half &= {"float16", "bfloat16", "torch.float16", "torch.bfloat16"}

    def size_list(items: list[dict[str, int]]) -> str:
        unique = list({repr(s): s for s in items}.values())
        rows = ("    {" + ", ".join(f'"{k}": {v}' for k, v in s.items()) + "},\n" for s in unique)
        return "[\n" + "".join(rows) + "]"

    ctor_params = ", ".join(["self", *(k for k, _ in spec.ctor)])
    lines = [f'"""{doc}"""', "", "import torch", "import torch.nn as nn", ""]
    lines += [f"{k} = {sizes[0][k]}" for k in order] + ["", "", "class Model(nn.Module):",
              f"    def __init__({ctor_params}):", "        super().__init__()"]
    lines += [f"        {line}" for line in spec.init]
    lines += ["", f"    def forward(self, {', '.join(spec.inputs)}):", f"        return {spec.forward}", "", "",
              "def get_inputs():", f"    return [{', '.join(inputs)}]", "", "",
              "def get_init_inputs():", f"    return [{', '.join(literal(v, ctor_ints) for _, v in spec.ctor)}]", ""]
    if order:
        lines += ["", "# The shapes seen in the model.", f"SIZES = {size_list(sizes)}",
                  "# Small enough for a quick check in Triton's interpreter.", f"CPU_SIZES = {size_list(cpu)}"]
    if half:
        lines += ["# Half precision: the reference itself is only this close to exact.",
                  f"ATOL = {2e-2 if any('bfloat16' in h for h in half) else 1e-2}", "RTOL = ATOL"]
    return "\n".join(lines) + "\n"


def _validate(source: str, observed: list[Shape]) -> None:
    """The file loads, its SIZES give the observed shapes (on the meta device: no memory) and its
    Model runs at every CPU size."""
    with tempfile.TemporaryDirectory(prefix="kernelevo-hotspot-") as tmp:
        path = Path(tmp) / "problem.py"
        path.write_text(source)
        try:
            problem = load_problem(path, device="cpu")
            declared = getattr(problem.namespace({}), "SIZES", None) or [{}]
            for size, shapes in zip(declared, observed, strict=True):
                with torch.device("meta"):
                    got = tuple((tuple(t.shape), str(t.dtype).removeprefix("torch."))
                                for t in problem.namespace(size).get_inputs())
                if got != shapes:
                    raise Unwritable(f"its SIZES give inputs {got}, the model's were {shapes}")
            for size in problem.sizes:
                ns = problem.namespace(size)
                with torch.no_grad():
                    ns.Model(*ns.get_init_inputs())(*ns.get_inputs())
        except Unwritable:
            raise
        except Exception as e:  # noqa: BLE001 - whatever stops the file is why it is not written
            raise Unwritable(f"its problem file does not run: {type(e).__name__}: {e}".splitlines()[0]) from e


def problem_source(group: Group, observed: list[Shape], stats: list[tuple[bool, int]], doc: str) -> str:
    """``group``'s problem file, checked: it loads, its SIZES give ``observed`` (the distinct input
    shapes) and its CPU sizes run. ``stats`` is each input's (all >= 0, max int), ``doc`` the
    file's docstring. Raises :class:`Unwritable` when no file passes."""
    spec = _spec(group)
    try:
        source = _source(spec, observed, stats, doc, shrink_ctor=True)
        _validate(source, observed)
    except Unwritable:
        source = _source(spec, observed, stats, doc, shrink_ctor=False)  # a shrunk constructor dim may not fit
        _validate(source, observed)
    return source
