"""``kernelevo hotspots``: profile a model file and write its hottest ops as problem files.

A model file is a problem file (KernelBench's format). Its forward runs under ``torch.profiler``
with every leaf ``torch.nn`` module and every functional call made outside one wrapped in a
``record_function`` label, so each op's self time is its label's time less the labels nested in
it. Identical ops (same class and constructor arguments, or same function and non-tensor
arguments, and the same input ranks and dtypes) are one hotspot. Two patterns worth fusing are
chains: an ``nn.Linear`` whose output goes straight into an activation, and an add whose output
goes straight into a LayerNorm/RMSNorm. Each hotspot's problem file is checked before it is
returned: it loads, its declared sizes give the observed shapes, and its CPU sizes run.
"""

from __future__ import annotations

import functools
import itertools
import re
import textwrap
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
from torch.autograd import DeviceType
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile, record_function, schedule

from kernelevo.deploy.problem_source import (
    NORM_MODULES,
    SMALL_CTOR,
    Call,
    Group,
    Op,
    Shape,
    Slot,
    Unwritable,
    constructor,
    literal,
    problem_source,
    templated,
)
from kernelevo.problem import ProblemError, load_problem

_LABEL = "kernelevo::"
# Views, copies, casts and queries: moving or describing data, nothing a kernel would speed up.
_TRIVIAL = frozenset("""view view_as reshape reshape_as transpose permute t contiguous expand expand_as squeeze
    unsqueeze flatten unflatten size dim numel stride chunk split split_with_sizes tensor_split unbind narrow select
    movedim moveaxis swapaxes swapdims as_strided broadcast_to __getitem__ __setitem__ __len__ __iter__ __format__
    __repr__ __bool__ __hash__ item tolist to type type_as float half bfloat16 double int long bool cpu cuda clone
    detach dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout cat concat concatenate stack
    hstack vstack repeat tile zeros_like ones_like empty_like full_like rand_like randn_like new_zeros new_ones
    new_empty new_full new_tensor requires_grad_ is_contiguous is_floating_point element_size data_ptr""".split())
_TRIVIAL_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity, nn.Flatten,
                    nn.Unflatten)
_ACT_MODULES = (nn.GELU, nn.ReLU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Mish, nn.Hardswish,
                nn.Softplus, nn.ReLU6, nn.Hardsigmoid)
_ACT_FUNCS = frozenset(f"torch.nn.functional.{n}" for n in "gelu relu silu mish hardswish leaky_relu elu softplus "
                       "relu6 hardsigmoid tanh sigmoid".split()) | {
    "torch.relu", "torch.tanh", "torch.sigmoid", "torch.Tensor.relu", "torch.Tensor.tanh", "torch.Tensor.sigmoid"}
_ADDS = frozenset({"torch.add", "torch.Tensor.add", "torch.Tensor.__add__"})


class HotspotError(ValueError):
    """A model file that cannot be profiled. ``str()`` is one line naming the file."""


@dataclass(frozen=True)
class Hotspot:
    name: str  # file-name safe: the problem's folder under ``write_problems``' ``out``
    kind: Literal["module", "function", "chain"]
    target: str  # "torch.nn.LayerNorm", "torch.softmax", "torch.nn.Linear+torch.nn.GELU"
    where: tuple[str, ...]  # module paths it was seen at ("Model" for the top-level forward)
    calls: int  # per forward
    self_ms: float  # per forward, summed over its calls: device time on cuda, CPU time on cpu
    share: float  # self_ms / the whole forward's time
    shapes: tuple[Shape, ...]  # the distinct input shapes and dtypes it was called with
    source: str  # its problem file

    def to_json(self) -> dict[str, Any]:
        """Everything but the problem file's text (``write_problems`` writes that)."""
        return {"name": self.name, "kind": self.kind, "target": self.target, "where": list(self.where),
                "calls": self.calls, "self_ms": self.self_ms, "share": self.share,
                "shapes": [[{"shape": list(s), "dtype": d} for s, d in call] for call in self.shapes]}


class Hotspots(list[Hotspot]):
    """``find_hotspots``' answer: the hotspots, hottest first, and what was passed over."""

    def __init__(self, items: list[Hotspot], total_ms: float, skipped: tuple[str, ...]):
        super().__init__(items)
        self.total_ms = total_ms  # one forward
        self.skipped = skipped  # "target at path: why", for hot ops that got no problem file


@functools.cache
def _names() -> dict[int, tuple[Any, str]]:
    import torch.nn.functional as F

    table: dict[int, tuple[Any, str]] = {}
    spaces = (("torch.nn.functional", F), ("torch", torch), ("torch.special", torch.special),
              ("torch.linalg", torch.linalg), ("torch.fft", torch.fft), ("torch.Tensor", torch.Tensor))
    for prefix, space in spaces:
        for attr in dir(space):
            obj = getattr(space, attr, None)
            if callable(obj) and not isinstance(obj, type) and (not attr.startswith("_") or prefix == "torch.Tensor"):
                table.setdefault(id(obj), (obj, f"{prefix}.{attr}"))  # the object is kept: ids stay unique
    return table


def _target(func: Callable[..., Any]) -> str | None:
    hit = _names().get(id(func))
    if hit is not None and hit[0] is func:
        return hit[1]
    if isinstance(func, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return f"torch.ops.{func}"
    return None


class _Tracer(TorchFunctionMode):
    """Records leaf-module calls (via wrapped forwards) and functional calls made outside them."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.calls: list[list[Call]] = []  # one list per forward
        self.labels = False  # wrap each recorded call in a profiler label
        self.stats: dict[tuple[str, int], tuple[bool, int]] = {}  # (op, input): (all >= 0, max int)
        self.collect_stats = False
        self._model = model
        self._stack: list[str] = []
        self._leaf = 0
        self._quiet = False
        self._last: torch.Tensor | None = None
        self._counter = itertools.count()
        self._ops: dict[str, Op] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
        kwargs = kwargs or {}
        if self._leaf or self._quiet:
            return func(*args, **kwargs)
        target = _target(func)
        if target is None or target.rsplit(".", 1)[-1] in _TRIVIAL:
            return func(*args, **kwargs)
        tpl_args, tpl_kwargs, tensors = templated(args, kwargs)
        if not tensors:  # a factory (torch.arange): nothing comes in to work on
            return func(*args, **kwargs)
        index = next(self._counter)
        out = self._run(index, func, args, kwargs)
        outs = [o for o in _flat(out) if isinstance(o, torch.Tensor)]
        if not outs or all(_shares_storage(o, tensors) for o in outs):
            return out  # a view, an in-place update or a query: nothing for a kernel to do
        key = f"{target}|{tpl_args!r}|{tpl_kwargs!r}|{_ranks(tensors)}"
        if key not in self._ops:
            unwritable = ""
            try:
                literal((tpl_args, tpl_kwargs), lambda i: "x")
            except Unwritable as e:
                unwritable = str(e)
            self._ops[key] = Op("function", target, key, tpl_args, tpl_kwargs, unwritable=unwritable)
        self._record(index, self._ops[key], tensors, outs[0])
        return out

    def _run(self, index: int, func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        if not self.labels:
            return func(*args, **kwargs)
        with record_function(f"{_LABEL}{index}"):
            return func(*args, **kwargs)

    def _record(self, index: int, op: Op, tensors: list[torch.Tensor], out: torch.Tensor | None) -> None:
        quiet, self._quiet = self._quiet, True  # our own tensor queries are not the model's calls
        try:
            shapes = tuple((tuple(t.shape), str(t.dtype).removeprefix("torch.")) for t in tensors)
            follows = len(tensors) == 1 and tensors[0] is self._last
            self._last = out
            if self.collect_stats:
                for i, t in enumerate(tensors):
                    nonneg = t.numel() == 0 or t.dtype == torch.bool or bool((t >= 0).all())
                    top = int(t.max()) if t.numel() and not t.is_floating_point() and not t.is_complex() else 0
                    old = self.stats.get((op.key, i), (True, 0))
                    self.stats[(op.key, i)] = (old[0] and nonneg, max(old[1], top))
            path = self._stack[-1] if self._stack else ""
            self.calls[-1].append(Call(index, op, path or "Model", shapes, follows))
        finally:
            self._quiet = quiet

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Every module's forward wrapped (leaf modules labelled); the wrappers removed after."""
        wrapped: list[tuple[nn.Module, Any]] = []
        try:
            for path, module in self._model.named_modules():
                own = module.__dict__.get("forward")
                module.forward = self._wrap(module, path)
                wrapped.append((module, own))
            yield
        finally:
            for module, own in wrapped:
                del module.forward
                if own is not None:
                    module.forward = own

    def run(self, inputs: list[Any]) -> None:
        """One forward, its calls recorded as one list (and labelled ``forward`` when profiling)."""
        self.calls.append([])
        self._last = None
        try:
            with record_function(f"{_LABEL}forward") if self.labels else nullcontext(), self:
                self._model(*inputs)
        finally:
            self._last = None

    def _wrap(self, module: nn.Module, path: str) -> Callable[..., Any]:
        inner = module.forward
        torch_leaf = type(module).__module__.startswith("torch.nn.") and not any(True for _ in module.children())
        ctor: tuple[tuple[tuple[str, Any], ...], str] | None = None
        params: tuple[tuple[int, ...], ...] = ()
        if torch_leaf and not isinstance(module, _TRIVIAL_MODULES):
            params = tuple(tuple(v.shape) for v in module.state_dict().values())
            try:
                ctor = constructor(module)
            except Exception as e:  # noqa: BLE001 - an odd module is skipped, not the whole model
                ctor = (), f"{type(module).__name__}: reading its constructor arguments failed: {_first_line(e)}"

        def forward(*args: Any, **kwargs: Any) -> Any:
            self._stack.append(path)
            try:
                if not torch_leaf:
                    return inner(*args, **kwargs)
                if ctor is None:  # dropout and the like: their calls are not the model's ops
                    self._leaf += 1
                    try:
                        return inner(*args, **kwargs)
                    finally:
                        self._leaf -= 1
                return self._module_call(module, ctor, params, inner, args, kwargs)
            finally:
                self._stack.pop()

        return forward

    def _module_call(self, module: nn.Module, ctor: tuple[tuple[tuple[str, Any], ...], str],
                     params: tuple[tuple[int, ...], ...], inner: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        quiet, self._quiet = self._quiet, True
        tpl_args, tpl_kwargs, tensors = templated(args, kwargs)
        cls = type(module)
        key = f"{cls.__module__}.{cls.__name__}|{ctor[0]!r}|{tpl_args!r}|{tpl_kwargs!r}|{_ranks(tensors)}"
        self._quiet = quiet
        index = next(self._counter)
        self._leaf += 1
        try:
            out = self._run(index, inner, args, kwargs)
        finally:
            self._leaf -= 1
        if key not in self._ops:
            self._ops[key] = Op("module", f"torch.nn.{cls.__name__}", key, tpl_args, tpl_kwargs, cls, ctor[0],
                                 params, ctor[1])
        first = next((o for o in _flat(out) if isinstance(o, torch.Tensor)), None)
        if tensors:
            self._record(index, self._ops[key], tensors, first)
        return out


def _flat(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flat(v)]
    return [value]


def _ranks(tensors: list[torch.Tensor]) -> str:
    return ",".join(f"{t.dim()}{str(t.dtype).removeprefix('torch.')}" for t in tensors)


def _shares_storage(out: torch.Tensor, tensors: list[torch.Tensor]) -> bool:
    try:
        ptr = out.untyped_storage().data_ptr()
        return ptr != 0 and any(t.untyped_storage().data_ptr() == ptr for t in tensors)
    except (RuntimeError, NotImplementedError):  # sparse and other storage-less tensors
        return False


def _label_times(prof: profile, cuda: bool) -> tuple[dict[int, float], float]:
    """Self time (µs) of each call's label, and the forwards' summed time."""
    totals: dict[int, float] = {}
    forward = 0.0
    for e in prof.events():
        if e.device_type != DeviceType.CPU or not e.name.startswith(_LABEL):
            continue
        t = e.device_time_total if cuda else e.cpu_time_total
        if e.name == f"{_LABEL}forward":
            forward += t
            continue
        index = int(e.name[len(_LABEL):])
        totals[index] = totals.get(index, 0.0) + t
        parent = e.cpu_parent
        while parent is not None and not parent.name.startswith(_LABEL):
            parent = parent.cpu_parent
        if parent is not None and parent.name != f"{_LABEL}forward":  # nested: not the parent's own time
            pi = int(parent.name[len(_LABEL):])
            totals[pi] = totals.get(pi, 0.0) - t
    return totals, forward


def _groups(forwards: list[list[Call]]) -> dict[str, Group]:
    groups: dict[str, Group] = {}
    for calls in forwards:
        i = 0
        while i < len(calls):
            a, b = calls[i], calls[i + 1] if i + 1 < len(calls) else None
            if b is not None and b.follows and _chains(a, b):
                groups.setdefault(f"chain|{a.op.key}|{b.op.key}", Group("chain", (a.op, b.op))).uses.append((a, b))
                i += 2
                continue
            groups.setdefault(a.op.key, Group(a.op.kind, (a.op,))).uses.append((a,))
            i += 1
    return groups


def _chains(a: Call, b: Call) -> bool:
    if a.op.cls is nn.Linear:
        return (isinstance(b.op.cls, type) and issubclass(b.op.cls, _ACT_MODULES)) or b.op.target in _ACT_FUNCS
    return (a.op.target in _ADDS and a.op.args == (Slot(0), Slot(1)) and not a.op.kwargs
            and a.shapes[0] == a.shapes[1] and b.op.cls in NORM_MODULES)


def _short(op: Op) -> str:
    if op.cls is not None:
        parts = [str(v) for _, v in op.ctor for v in (v if isinstance(v, tuple) else (v,))
                 if isinstance(v, int) and not isinstance(v, bool) and v >= SMALL_CTOR][:3]
        return "_".join([op.cls.__name__.lower()] + (["x".join(parts)] if parts else []))

    def part(v: Any) -> str:
        if isinstance(v, (list, tuple)):
            return "x".join(part(x) for x in v)
        return f"{v:g}" if isinstance(v, float) else str(v).removeprefix("torch.").lower()
    name = op.target.rsplit(".", 1)[-1].strip("_")
    extra = [part(a) for a in op.args if not isinstance(a, Slot)] + [f"{k}{part(v)}" for k, v in op.kwargs]
    return "_".join([name] + extra)


def _name(group: Group, dtype: str) -> str:
    if group.kind == "chain":
        a, b = group.ops
        if b.cls in NORM_MODULES:
            text = f"add_{_short(b)}"
        else:
            linear = _short(a).split("_", 1)
            text = "_".join([linear[0], _short(b).split("_")[0], *linear[1:]])
    else:
        text = _short(group.ops[0])
    if dtype != "float32":
        text += f"_{dtype}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "", text)[:80].strip("._-") or "op"


def _hotspot(group: Group, name: str, file: Path, device: str, self_ms: float, share: float, calls: int,
             stats: list[tuple[bool, int]]) -> Hotspot:
    for member in group.ops:
        if member.unwritable:
            raise Unwritable(member.unwritable)
    where = tuple(dict.fromkeys("+".join(c.path for c in use) for use in group.uses))
    observed = list(dict.fromkeys(use[0].shapes for use in group.uses))
    target = "+".join(o.target for o in group.ops)
    seen = ", ".join(where[:8]) + (f" and {len(where) - 8} more" if len(where) > 8 else "")
    doc = "\n\n".join(textwrap.fill(text, 100) for text in (
        f"{target} in {file}: {share:.1%} of the model's time on {device} ({calls} call"
        f"{'s' if calls != 1 else ''} per forward, {self_ms:.3g} ms).",
        f"Seen at {seen}. Written by `kernelevo hotspots` for `kernelevo optimize`: SIZES are the shapes seen "
        "in the model, CPU_SIZES the same op small enough for a quick check in Triton's interpreter."))
    doc = (doc + "\n").replace("\\", "/").replace('"""', "'''")
    source = problem_source(group, observed, stats, doc)
    return Hotspot(name, group.kind, target, where, calls, self_ms, share, tuple(observed), source)


def _to(value: Any, device: str) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device) for v in value)
    return value


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def find_hotspots(model_file: Path, *, top: int = 5, device: str = "cpu",
                  overrides: Mapping[str, Any] | None = None, repeats: int = 3) -> Hotspots:
    """Profile ``model_file``'s forward and return its ``top`` hottest ops, each with a problem file.

    Times are per forward, averaged over ``repeats`` profiled forwards after one warm-up; the
    model runs in eval mode under ``torch.no_grad()`` at its first size (``CPU_SIZES`` on a CPU).
    """
    model_file = Path(model_file)
    if top < 1 or repeats < 1:
        raise HotspotError(f"{model_file}: top and repeats must be at least 1, got {top} and {repeats}")
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise HotspotError(f"{model_file}: --device {device}: no CUDA device is visible to PyTorch")
    try:
        problem = load_problem(model_file, overrides, device="cuda" if cuda else "cpu")
    except ProblemError as e:
        raise HotspotError(str(e)) from e
    try:
        ns = problem.namespace(problem.sizes[0])
        model = ns.Model(*ns.get_init_inputs()).to(device).eval()
        inputs = _to(list(ns.get_inputs()), device)
    except Exception as e:  # the user's file: any error is theirs, in one line
        raise HotspotError(f"{model_file}: building the model failed: {_first_line(e)}") from e
    with torch.no_grad():
        try:
            model(*inputs)
        except Exception as e:  # noqa: BLE001
            raise HotspotError(f"{model_file}: Model.forward raised {_first_line(e)}") from e
        tracer = _Tracer(model)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        try:
            with tracer.installed():
                tracer.collect_stats = True  # a warm-up that also learns the inputs' value ranges
                tracer.run(inputs)
                tracer.calls.clear()
                tracer.collect_stats, tracer.labels = False, True
                # The profiler's first step pays its own start-up; it is run and thrown away.
                steps = schedule(wait=0, warmup=1, active=repeats)
                with profile(activities=activities, schedule=steps, acc_events=True) as prof:
                    for step in range(repeats + 1):
                        if step == 1:
                            tracer.calls.clear()
                        tracer.run(inputs)
                        if cuda:
                            torch.cuda.synchronize()
                        prof.step()
        except Exception as e:  # noqa: BLE001
            raise HotspotError(f"{model_file}: the profiled forward raised {_first_line(e)}") from e
    times, forward = _label_times(prof, cuda)
    total_ms = forward / 1000 / repeats
    ranked = []
    for group in _groups(tracer.calls).values():
        self_ms = sum(times.get(c.index, 0.0) for use in group.uses for c in use) / 1000 / repeats
        ranked.append((self_ms, group))
    ranked.sort(key=lambda r: (-r[0], r[1].ops[0].key))
    found: list[Hotspot] = []
    skipped: list[str] = []
    for self_ms, group in ranked:
        if len(found) == top or self_ms <= 0 or total_ms <= 0:
            break
        uses = group.uses
        name = _name(group, uses[0][0].shapes[0][1] if uses[0][0].shapes else "float32")
        taken = {h.name for h in found}
        name = next(n for k in itertools.count(1) if (n := name if k == 1 else f"{name}_{k}") not in taken)
        stats = [tracer.stats.get((group.ops[0].key, i), (False, 0)) for i in range(len(uses[0][0].shapes))]
        calls = max(1, round(len(uses) / repeats))
        try:
            found.append(_hotspot(group, name, model_file, device, self_ms, min(1.0, self_ms / total_ms), calls, stats))
        except Unwritable as e:
            skipped.append(f"{'+'.join(o.target for o in group.ops)} at {uses[0][0].path}: {e}")
    return Hotspots(found, total_ms, tuple(skipped))


def write_problems(hotspots: list[Hotspot], out: Path) -> list[Path]:
    """``out/<name>/problem.py`` for each hotspot (a folder per op, as ``kernels/<op>/problem.py``)."""
    paths = []
    for h in hotspots:
        path = Path(out) / h.name / "problem.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(h.source)
        paths.append(path)
    return paths
