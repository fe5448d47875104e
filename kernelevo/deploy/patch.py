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
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode, get_testing_overrides

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
    # Per child in call order: its attribute name, class, extra_repr() and state shapes.
    children: tuple[tuple[str, type, str, tuple[tuple[str, tuple[int, ...]], ...]], ...] = ()
    call: tuple[str, tuple[tuple[str, Any], ...]] | None = None  # a functional call's bound form
    n_tensors: int = 0


def _state_shapes(m: torch.nn.Module) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple((k, tuple(v.shape)) for k, v in sorted(m.state_dict().items()))


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
        return _Form(index, init, tuple((n, type(by_name[n]), by_name[n].extra_repr(), _state_shapes(by_name[n]))
                                        for n, _, _ in order))
    if model.state_dict():
        return "its Model has state but no child module to match"
    rec = _Recorder()
    with torch.no_grad(), rec:
        out = model(*inputs)
    tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
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

@dataclass
class _Undo:
    parent: torch.nn.Module | None  # None: the root's forward ("forward") or a hook handle ("hook")
    name: str
    original: Any


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


def _keep_state_keys(parent: torch.nn.Module, renames: list[tuple[str, str]]) -> list[Any]:
    """A patched model's state_dict has the original model's keys, in the original order, and
    loads the original's checkpoints: the user's modules sit one level deeper inside the
    replacement (``ln.reference.op.weight``), so their keys are renamed on the way out and in."""
    def out(module: torch.nn.Module, state: dict[str, Any], prefix: str, meta: Any) -> None:
        _rename(state, prefix, renames)

    def into(module: torch.nn.Module, state: dict[str, Any], prefix: str, *rest: Any) -> None:
        _rename(state, prefix, [(new, old) for old, new in renames])

    return [parent.register_state_dict_post_hook(out), parent.register_load_state_dict_pre_hook(into)]


_patched: weakref.WeakKeyDictionary[torch.nn.Module, list[_Undo]] = weakref.WeakKeyDictionary()


class _CallSwap(TorchFunctionMode):
    """Routes matching torch calls to exported ops while the patched model's forward runs."""

    def __init__(self, routes: list[tuple[tuple[str, Any], int, Callable[[tuple[Any, ...]], ExportedOp]]]) -> None:
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
        for call, n, module_for in self.routes:
            if bound == call and len(tensors) == n:
                return module_for(())
        return None


def _op_dirs(ops: Iterable[str | Path] | None) -> list[Path]:
    if ops is not None:
        dirs = [Path(o) for o in ops]
        for d in dirs:
            if not (d / "problem.py").is_file():
                raise PatchError(f"{d}: not an exported op folder (no problem.py)")
        return dirs
    root = Path("kernels")
    return sorted(p for p in root.iterdir() if (p / "problem.py").is_file() and gpu_keys(p)) if root.is_dir() else []


def patch(model: torch.nn.Module, ops: Iterable[str | Path] | None = None) -> PatchReport:
    """Swap exported kernels into ``model`` in place (``ops``: op folders; default every exported
    op under ``./kernels``). Returns what was swapped, what was not and why."""
    if not isinstance(model, torch.nn.Module):
        raise PatchError(f"patch needs an nn.Module, got {type(model).__name__}")
    if model in _patched:
        raise PatchError("the model is patched already; unpatch it first")
    report = PatchReport()
    undo: list[_Undo] = []
    routes: list[tuple[tuple[str, Any], int, Callable[[tuple[Any, ...]], ExportedOp]]] = []
    for op_dir in _op_dirs(ops):
        op = _read_op(op_dir)
        if isinstance(op, NotSwapped):
            report.not_swapped.append(op)
            continue
        if op.forms[0].call is not None:
            routes.extend(_function_routes(op, report))
        else:
            _swap_modules(model, op, report, undo)
    if routes:
        original = model.__dict__.get("forward")
        bound_forward = model.forward
        mode = _CallSwap(routes)

        def forward(*args: Any, **kwargs: Any) -> Any:
            with mode:
                return bound_forward(*args, **kwargs)
        model.forward = forward  # type: ignore[method-assign]
        undo.append(_Undo(None, "forward", original))
    _patched[model] = undo
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
        routes.append((form.call, form.n_tensors, lambda _a, e=exported: e))
    return routes


def _swap_modules(model: torch.nn.Module, op: _Op, report: PatchReport, undo: list[_Undo]) -> None:
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
                type(m) is c and m.extra_repr() == r and _state_shapes(m) == s
                for m, (_, c, r, s) in zip(run, f.children, strict=True))), None)
            if form is None:
                verified = sorted({f.children[0][2] for f in op.forms})
                report.not_swapped.append(NotSwapped(where, op.name, f"{type(child).__name__}({child.extra_repr()}) "
                                                     f"has constructor arguments no export verified "
                                                     f"(verified: {'; '.join(verified)})"))
                continue
            try:
                exported = load(op.op_dir, *form.init)
            except LoadError as e:
                report.not_swapped.append(NotSwapped(where, op.name, str(e)))
                return
            for (cname, *_), m in zip(form.children, run, strict=True):
                exported.reference._modules[cname] = m  # the user's modules are the reference: shared weights
            exported.train(child.training)
            for k, m in zip(names[j:j + n], run, strict=True):
                undo.append(_Undo(parent, k, m))
            parent._modules[name] = exported
            for k in names[j + 1:j + n]:
                parent._modules[k] = torch.nn.Identity()
            renames = [(f"{name}.reference.{cname}.", f"{k}.") for (cname, *_), k in
                       zip(form.children, names[j:j + n], strict=True)]
            for handle in _keep_state_keys(parent, renames):
                undo.append(_Undo(None, "hook", handle))
            report.replacements.append(exported)
            what = " + ".join(f"{type(m).__name__}({m.extra_repr()})" for m in run)
            report.swapped.append(Swap(where, op.name, what))


def unpatch(model: torch.nn.Module) -> None:
    """Put back exactly the modules and forward that ``patch`` replaced."""
    undo = _patched.pop(model, None)
    if undo is None:
        raise PatchError("the model is not patched")
    for u in reversed(undo):
        if u.parent is None and u.name == "hook":
            u.original.remove()
        elif u.parent is None:
            if u.original is None:
                del model.forward
            else:
                model.forward = u.original
        else:
            u.parent._modules[u.name] = u.original
