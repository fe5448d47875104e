"""``kernelevo.patch``: put exported kernels into a user's model, and ``unpatch`` to take them out.

What an export replaces is read from its problem file by running the problem's ``Model`` once on
the meta device (no memory, no kernels), not from a naming convention:

- a ``Model`` that only applies its child modules one after another (the form ``kernelevo
  hotspots`` writes: ``self.op = nn.LayerNorm(...)``, or a chain ``self.linear``, ``self.act``)
  replaces user submodules of the same classes *and constructor arguments* — compared through
  ``extra_repr()`` and the state's shapes against the problem built at each verified size. A
  chain of two or more is replaced where it sits in an ``nn.Sequential``, the rest becoming
  ``nn.Identity``. The user's own modules become the reference inside the replacement, so the
  weights are shared, not copied;
- a ``Model`` without state whose forward makes one torch call on its inputs (``torch.softmax(x,
  dim=-1)``) replaces the same call — same function or its ``torch``/``F``/``Tensor`` alias, same
  non-tensor arguments once bound to the function's signature — anywhere inside the model's
  forwards, through a ``TorchFunctionMode`` around the model's forward.

Anything else is reported as not swapped, with the reason. ``unpatch`` restores the exact module
objects and forward that were there.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode, get_testing_overrides

from kernelevo.deploy.exported import plain_attributes
from kernelevo.deploy.load import ExportedOp, LoadError, load
from kernelevo.deploy.manifest import gpu_keys
from kernelevo.problem import ProblemError, load_problem


class PatchError(ValueError):
    """Bad arguments to patch (not a model, no such op folder); one line."""


@dataclass(frozen=True)
class Swap:
    where: str  # module path, or "forward" for a functional call
    op: str
    what: str  # e.g. "LayerNorm((32,), eps=1e-05, elementwise_affine=True)" or "torch.softmax(dim=-1)"


@dataclass(frozen=True)
class NotSwapped:
    where: str
    op: str
    reason: str


@dataclass(frozen=True)
class PatchReport:
    swapped: list[Swap] = field(default_factory=list)
    not_swapped: list[NotSwapped] = field(default_factory=list)
    replacements: list[ExportedOp] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"swapped {s.where}: {s.what} -> kernelevo {s.op}" for s in self.swapped]
        lines += [f"not swapped {n.where} ({n.op}): {n.reason}" for n in self.not_swapped]
        return "\n".join(lines) or "nothing to swap"


# -- reading what a problem's Model is ------------------------------------------------------------

_TRIVIAL = {"__get__", "dim", "size", "numel", "__len__"}  # attribute reads, not computations


@functools.cache
def _overrides() -> dict[Callable[..., Any], Callable[..., Any]]:
    return get_testing_overrides()  # builds a lambda per torch function: once per process


@functools.cache
def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    """A torch function's documented signature (torch's own table; builtins carry none)."""
    fn = _overrides().get(func)
    return inspect.signature(fn) if fn else None


def _aliases(name: str) -> frozenset[Callable[..., Any]]:
    """The torch, torch.nn.functional and Tensor spellings of a function name."""
    names = [name, "__matmul__"] if name == "matmul" else [name]
    found = {getattr(ns, n) for ns in (torch, torch.nn.functional, torch.Tensor) for n in names if hasattr(ns, n)}
    return frozenset(f for f in found if f in _overrides())


def _bind(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], tensors: list[torch.Tensor]
          ) -> tuple[str, tuple[tuple[str, Any], ...]] | None:
    """A call as (function name, its non-tensor arguments bound by name, tensors as their index in
    ``tensors``); None for a call not bindable to the function's documented signature."""
    sig = _signature(func)
    name = getattr(func, "__name__", repr(func))
    name = {"__matmul__": "matmul"}.get(name, name)
    try:
        bound = sig.bind(*args, **kwargs) if sig else None
    except TypeError:
        return None
    if bound is None:
        return None
    bound.apply_defaults()

    def norm(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            ids = [i for i, t in enumerate(tensors) if t is v]
            return ("tensor", ids[0]) if ids else ("tensor", None)
        if isinstance(v, (list, tuple)):
            return tuple(norm(x) for x in v)
        return v
    return name, tuple((k, norm(v)) for k, v in bound.arguments.items() if not k.startswith("_"))


class _Recorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], Any]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if getattr(func, "__name__", "") not in _TRIVIAL:
            self.calls.append((func, tuple(args), dict(kwargs), out))
        return out


@dataclass(frozen=True)
class _Form:
    """What one verified size of a problem replaces."""

    size: int
    init: tuple[Any, ...]
    # Per child in call order: its attribute name, class, extra_repr() (for messages) and its
    # constructor-level state: plain attributes and state shapes (what must match a user's module).
    children: tuple[tuple[str, type, str, tuple[Any, ...]], ...] = ()
    call: tuple[str, tuple[tuple[str, Any], ...]] | None = None  # a functional call's bound form
    n_tensors: int = 0


def _identity(m: torch.nn.Module) -> tuple[Any, ...]:
    """What makes two modules of a class interchangeable: plain attributes (``extra_repr()`` leaves
    out ``count_include_pad``, ``align_corners``, ...) and state shapes."""
    return plain_attributes(m), tuple((k, tuple(v.shape)) for k, v in sorted(m.state_dict().items()))


def _form(problem: Any, index: int, size: dict[str, Any]) -> _Form | str:
    """The form of the problem's Model at a size, or why it cannot be patched in."""
    ns = problem.namespace(size)
    with torch.device("meta"):
        init = tuple(ns.get_init_inputs())
        model = ns.Model(*init)
        inputs = list(ns.get_inputs())
    children = list(model.named_children())
    if children:
        own = [n for n, _ in model.named_parameters(recurse=False)] + [n for n, _ in model.named_buffers(recurse=False)]
        order: list[tuple[str, Any, Any]] = []
        hooks = [m.register_forward_hook(lambda mod, a, out, n=n: order.append((n, a, out))) for n, m in children]
        try:
            with torch.no_grad():
                out = model(*inputs)
        finally:
            for h in hooks:
                h.remove()
        chained = bool(order) and len(order) == len(children) and len(inputs) == 1 \
            and order[0][1] and order[0][1][0] is inputs[0] and out is order[-1][2] \
            and all(len(a) == 1 and a[0] is order[k - 1][2] for k, (_, a, _) in enumerate(order) if k)
        if own or not chained:
            return "its Model does more than apply its child modules in a chain (the chain is inside forward code)"
        by_name = dict(children)
        return _Form(index, init, tuple((n, type(by_name[n]), by_name[n].extra_repr(), _identity(by_name[n]))
                                        for n, _, _ in order))
    if model.state_dict():
        return "its Model has state but no child module to match"
    rec = _Recorder()
    with torch.no_grad(), rec:
        out = model(*inputs)
    tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
    if len(tensors) != len(inputs):
        return "its forward takes non-tensor inputs, which a swapped call could not supply"
    if len(rec.calls) != 1 or rec.calls[0][3] is not out:
        return f"its Model's forward makes {len(rec.calls)} torch calls, not one"
    func, args, kwargs, _ = rec.calls[0]
    bound = _bind(func, args, kwargs, tensors)
    if bound is None or any(v == ("tensor", None) for _, v in bound[1]):
        return "its Model's call does not bind to a documented torch signature"
    return _Form(index, init, call=bound, n_tensors=len(tensors))


@dataclass
class _Op:
    op_dir: Path
    name: str
    forms: list[_Form]


def _read_op(op_dir: Path) -> _Op | NotSwapped:
    try:
        problem = load_problem(op_dir / "problem.py", device="cpu")
    except ProblemError as e:
        return NotSwapped(str(op_dir), op_dir.name, str(e))
    sizes: dict[str, dict[str, Any]] = {}
    from kernelevo.deploy.manifest import ManifestError, read_export

    for key in gpu_keys(op_dir):
        try:
            for s in read_export(op_dir, key).manifest.sizes:
                sizes.setdefault(repr(sorted(s["size"].items())), s["size"])
        except ManifestError:
            continue  # load() says why, once, if this op is swapped in at all
    if not sizes:
        return NotSwapped(str(op_dir), problem.name, "no usable export (run kernelevo export)")
    forms: list[_Form] = []
    for i, size in enumerate(sizes.values()):
        try:
            f = _form(problem, i, size)
        except Exception as e:  # noqa: BLE001 - a problem that does not run on meta cannot be matched
            why = f"its Model does not run on the meta device ({type(e).__name__})"
            return NotSwapped(str(op_dir), problem.name, why)
        if isinstance(f, str):
            return NotSwapped(str(op_dir), problem.name, f)
        forms.append(f)
    return _Op(op_dir, problem.name, forms)


# -- swapping ---------------------------------------------------------------------------------------

PATCH_ATTR = "_kernelevo_patch"  # on the patched model: what unpatch restores (copied with the model)


@dataclass
class _Undo:
    parent: torch.nn.Module
    name: str
    original: torch.nn.Module
    replacement: torch.nn.Module


@dataclass
class _Patch:
    swaps: list[_Undo] = field(default_factory=list)
    hooks: list[Any] = field(default_factory=list)
    forward: Any = None  # the model's own instance-level forward before patch (None: its class's)
    routed: bool = False


def _rename(state: dict[str, Any], prefix: str, renames: list[tuple[str, str]]) -> None:
    """Rename ``prefix + old`` keys to ``prefix + new`` in place, keeping the dict's order."""
    def renamed(key: str) -> str:
        for old, new in renames:
            if key.startswith(prefix + old):
                return prefix + new + key[len(prefix + old):]
        return key
    items = [(renamed(k), v) for k, v in state.items()]
    state.clear()
    state.update(items)


class _StateOut:
    """A patched model's state_dict has the original model's keys, in the original order: the
    user's modules sit one level deeper inside the replacement (``ln.reference.op.weight``)."""

    def __init__(self, renames: list[tuple[str, str]]) -> None:
        self.renames = renames

    def __call__(self, module: torch.nn.Module, state: dict[str, Any], prefix: str, meta: Any) -> None:
        _rename(state, prefix, self.renames)


class _StateIn(_StateOut):
    """... and loads the original model's checkpoints."""

    def __call__(self, module: torch.nn.Module, state: dict[str, Any], prefix: str, *rest: Any) -> None:  # type: ignore[override]
        _rename(state, prefix, [(new, old) for old, new in self.renames])


class _CallSwap(TorchFunctionMode):
    """Routes matching torch calls to exported ops while the patched model's forward runs."""

    def __init__(self, routes: list[tuple[tuple[str, Any], int, ExportedOp]]) -> None:
        super().__init__()
        self.routes = routes
        # Most calls are not candidates: one set lookup lets them through (and keeps Dynamo's trace plain).
        self.funcs = frozenset().union(*(_aliases(call[0]) for call, _, _ in routes))

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        kwargs = kwargs or {}
        if func in self.funcs:
            target = self._route(func, args, kwargs)
            if target is not None:
                return target(*[a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)])
        return func(*args, **kwargs)

    @torch.compiler.disable  # binding a signature is Python introspection: a graph break, only at candidate calls
    def _route(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> ExportedOp | None:
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        bound = _bind(func, args, kwargs, tensors)
        for call, n, exported in self.routes:
            if bound == call and len(tensors) == n:
                return exported
        return None


class _RoutedForward:
    """The patched model's forward: its own forward inside the call-swapping mode. A class, not
    a closure, so a deep copy of the model (an EMA copy, say) routes its own forward, not the
    original's, and the model still pickles."""

    def __init__(self, model: torch.nn.Module, mode: _CallSwap, original: Any) -> None:
        self.model, self.mode, self.original = model, mode, original

    # Entering the mode stays eager (Dynamo would recompile this frame per mode-stack state); the
    # model's forward inside is compiled as usual, with the mode on its stack.
    @torch.compiler.disable(recursive=False)
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        forward = self.original if self.original is not None else type(self.model).forward.__get__(self.model)
        with self.mode:
            return forward(*args, **kwargs)


def op_dirs(ops: Iterable[str | Path] | None) -> list[Path]:
    """The op folders given (each must hold a problem.py), or every exported op under ./kernels."""
    if ops is not None:
        dirs = [Path(o) for o in ops]
        for d in dirs:
            if not (d / "problem.py").is_file():
                raise PatchError(f"{d}: not an exported op folder (no problem.py)")
        return dirs
    root = Path("kernels")
    return sorted(p for p in root.iterdir() if (p / "problem.py").is_file() and gpu_keys(p)) if root.is_dir() else []


def patch(model: torch.nn.Module, ops: Iterable[str | Path] | None = None, *, chains: bool = False) -> PatchReport:
    """Swap exported kernels into ``model`` in place (``ops``: op folders; default every exported
    op under ``./kernels``). Returns what was swapped, what was not and why.

    Chains (two or more modules of an ``nn.Sequential`` fused into one kernel) are swapped only with
    ``chains=True``: afterwards ``seq[0]`` returns the fused output and the rest are
    ``nn.Identity``, which code that indexes or iterates the Sequential would see."""
    if not isinstance(model, torch.nn.Module):
        raise PatchError(f"patch needs an nn.Module, got {type(model).__name__}")
    patched = [n or "the model" for n, m in model.named_modules() if PATCH_ATTR in m.__dict__]
    if patched or any(isinstance(m, ExportedOp) for m in model.modules()):
        where = patched[0] if patched else "part of it"
        raise PatchError(f"{where} is patched already; unpatch it first")
    report = PatchReport()
    record = _Patch()
    routes: list[tuple[tuple[str, Any], int, ExportedOp]] = []
    for op_dir in op_dirs(ops):
        op = _read_op(op_dir)
        if isinstance(op, NotSwapped):
            report.not_swapped.append(op)
            continue
        if op.forms[0].call is not None:
            routes.extend(_function_routes(op, report))
        else:
            _swap_modules(model, op, report, record, chains)
    if routes:
        record.forward = model.__dict__.get("forward")
        record.routed = True
        model.forward = _RoutedForward(model, _CallSwap(routes), record.forward)  # type: ignore[method-assign]
    model.__dict__[PATCH_ATTR] = record
    return report


def _function_routes(op: _Op, report: PatchReport) -> list[Any]:
    routes = []
    seen: dict[Any, ExportedOp] = {}
    for form in op.forms:
        assert form.call is not None
        if form.call in seen:
            continue
        try:
            exported = load(op.op_dir, *form.init)
        except LoadError as e:
            report.not_swapped.append(NotSwapped("forward", op.name, str(e)))
            return []
        seen[form.call] = exported
        report.replacements.append(exported)
        args = ", ".join(f"{k}={v!r}" for k, v in form.call[1] if not (isinstance(v, tuple) and v[:1] == ("tensor",)))
        report.swapped.append(Swap("forward", op.name, f"{form.call[0]}({args})"))
        routes.append((form.call, form.n_tensors, exported))
    return routes


def _swap_modules(model: torch.nn.Module, op: _Op, report: PatchReport, record: _Patch, chains: bool) -> None:
    first_cls = op.forms[0].children[0][1]
    n = len(op.forms[0].children)
    for path, parent in list(model.named_modules()):
        if isinstance(parent, ExportedOp):
            continue
        names = list(parent._modules)
        for j, name in enumerate(names):
            child = parent._modules[name]
            if type(child) is not first_cls or child is None:
                continue
            where = f"{path}.{name}" if path else name
            run = [parent._modules[k] for k in names[j:j + n]]
            classes = [c for _, c, _, _ in op.forms[0].children]
            if n > 1 and not (isinstance(parent, torch.nn.Sequential) and [type(m) for m in run] == classes):
                continue  # not this chain (only nn.Sequential says which module runs next)
            form = next((f for f in op.forms if len(run) == n and all(
                type(m) is c and _identity(m) == ident
                for m, (_, c, _, ident) in zip(run, f.children, strict=True))), None)
            if form is None:
                verified = sorted({f.children[0][2] for f in op.forms})
                report.not_swapped.append(NotSwapped(where, op.name, f"{type(child).__name__}({child.extra_repr()}) "
                                                     f"has constructor arguments no export verified "
                                                     f"(verified: {'; '.join(verified)})"))
                continue
            if n > 1 and not chains:
                report.not_swapped.append(NotSwapped(where, op.name, "a chain: swapped with patch(..., chains=True), "
                                                     "after which indexing the Sequential sees the fused output"))
                continue
            try:
                exported = load(op.op_dir, *form.init)
            except LoadError as e:
                report.not_swapped.append(NotSwapped(where, op.name, str(e)))
                return
            for (cname, *_), m in zip(form.children, run, strict=True):
                exported.reference._modules[cname] = m  # the user's modules are the reference: shared weights
            if n == 1:  # a plain attribute, not a submodule: the module is already the reference's child
                exported.__dict__["direct"] = child
            exported._call_signature = _signature_of_forward(child)
            exported.train(child.training)
            parent._modules[name] = exported
            record.swaps.append(_Undo(parent, name, child, exported))
            for k, m in zip(names[j + 1:j + n], run[1:], strict=True):
                identity = torch.nn.Identity()
                parent._modules[k] = identity
                record.swaps.append(_Undo(parent, k, m, identity))
            renames = [(f"{name}.reference.{cname}.", f"{k}.") for (cname, *_), k in
                       zip(form.children, names[j:j + n], strict=True)]
            record.hooks += [parent.register_state_dict_post_hook(_StateOut(renames)),
                             parent.register_load_state_dict_pre_hook(_StateIn(renames))]
            report.replacements.append(exported)
            what = " + ".join(f"{type(m).__name__}({m.extra_repr()})" for m in run)
            report.swapped.append(Swap(where, op.name, what))


def _signature_of_forward(module: torch.nn.Module) -> inspect.Signature | None:
    try:
        return inspect.signature(module.forward)
    except (TypeError, ValueError):
        return None


def unpatch(model: torch.nn.Module) -> list[str]:
    """Put back the modules and forward that ``patch`` replaced. A slot the user has filled with
    another module since is left as it is; returns those slots' names."""
    record = model.__dict__.pop(PATCH_ATTR, None)
    if record is None:
        raise PatchError("the model is not patched")
    kept = []
    for h in record.hooks:
        h.remove()
    for u in reversed(record.swaps):
        if u.parent._modules.get(u.name) is u.replacement:
            u.parent._modules[u.name] = u.original
        else:
            kept.append(u.name)
    if record.routed:
        if record.forward is None:
            model.__dict__.pop("forward", None)
        else:
            model.forward = record.forward  # type: ignore[method-assign]
    return kept
