"""``kernelevo.load``: an exported op as an ``nn.Module`` that runs the kernel only where it was
verified, and the reference everywhere else.

Where the kernel runs: tensors on a device whose type has an export (a GPU's key; ``cpu`` only
when Triton runs in its interpreter, the one place a CPU export was verified), a call whose
shapes, dtypes and state match a verified size or lie inside the bucket the verified sizes span
(:mod:`kernelevo.deploy.signature`), no autograd (the kernels are forward-only), and an export
whose files still hash to their manifest. A shape inside a bucket but not itself verified is
checked once against the reference, on its first call, within the problem's tolerance. Anything
else runs the reference and says why once (logger ``kernelevo``). A kernel that raises is
switched off for the process and the call is answered by the reference: a user's model never
breaks because of kernelevo.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import linecache
import logging
import sys
import threading
import types
import weakref
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils import _pytree as pytree

from kernelevo.candidate import source_digest
from kernelevo.deploy import library
from kernelevo.deploy.manifest import CPU_KEY, Export, Manifest, ManifestError, gpu_keys, read_export
from kernelevo.deploy.signature import Signature, match, signature_of, size_signature
from kernelevo.evaluate.compare import compare_outputs
from kernelevo.problem import Problem, ProblemError, flatten_outputs, load_problem

log = logging.getLogger("kernelevo")
REFERENCE = "reference"


class LoadError(ValueError):
    """An op folder that cannot even give the reference (no problem file); one line."""


_modules: dict[str, types.ModuleType] = {}  # kernel sha256 -> its module: import (and JIT) once
_modules_lock = threading.Lock()
_serial = itertools.count()  # dispatch ops are per module: each holds its own choices and notes


def import_kernel(path: Path, source: str) -> types.ModuleType:
    """Import the text whose hash was checked (not the file again: it could change in between),
    with its lines in ``linecache`` so Triton's JIT can read the kernels' source."""
    sha = source_digest(source)
    with _modules_lock:
        if sha in _modules:
            return _modules[sha]
        name = f"kernelevo_export_{sha[:16]}"
        filename = f"{path} [kernelevo {sha[:12]}]"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        spec = importlib.util.spec_from_loader(name, loader=None)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        module.__file__ = filename
        sys.modules[name] = module
        try:
            exec(compile(source, filename, "exec"), module.__dict__)
        except BaseException:
            del sys.modules[name]
            raise
        _modules[sha] = module
        return module


@dataclass
class _Entry:
    """One GPU type's export with its kernels built for this module's constructor arguments."""

    export: Export
    problem: Problem
    kernels: dict[str, torch.nn.Module]
    verified: list[Signature]
    broken: set[str] = field(default_factory=set)  # kernel files that raised: off for the process

    @property
    def manifest(self) -> Manifest:
        return self.export.manifest


@dataclass
class _Plan:
    """How calls of one shape run."""

    entry: _Entry
    file: str
    sig: Signature
    unchecked: bool  # a bucket shape not yet compared with the reference
    op: Any  # the kernel's torch.ops.kernelevo op
    spec: pytree.TreeSpec  # how the op's flat outputs nest

    @property
    def label(self) -> str:
        return f"{self.entry.manifest.gpu_key}/{self.file}"


def _tie(kernel: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Make the kernel module's state the reference's tensors (shared storage), unless it is already:
    after ``.to()`` or a parameter replaced by the user, the kernel must not compute with old weights."""
    now = tuple((v.data_ptr(), v.shape, v.dtype) for v in state.values())
    if getattr(kernel, "_kernelevo_tied", None) != now:
        kernel.load_state_dict(state, strict=True, assign=True)
        kernel._kernelevo_tied = now


def _needs_grad(tensors: list[torch.Tensor], module: torch.nn.Module) -> bool:
    """Whether autograd would record this call (state_dict() detaches, so ask the parameters)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in [*tensors, *module.parameters()])


def _device_key(device: torch.device, cache: dict[str, str]) -> str | None:
    from kernelevo.settings import triton_interpreted

    if device.type == "cpu":
        return CPU_KEY if triton_interpreted() else None
    if device.type != "cuda":
        return None
    k = str(device)
    if k not in cache:
        from kernelevo.profile.gpu import gpu_fingerprint

        cache[k] = gpu_fingerprint(device.index or 0).key
    return cache[k]


class ExportedOp(torch.nn.Module):
    """The reference ``Model`` of an exported op, and its verified kernels beside it.

    ``reference`` holds the state (parameters and buffers); kernels run with that state through
    ``torch.func.functional_call``, so both sides always see the same weights. ``last`` says
    what answered the last call (``"reference"`` or ``"<gpu-key>/<file>"``) and ``calls`` counts
    them; ``notes`` holds every reason the reference ran instead.
    """

    def __init__(self, op: str, op_dir: Path, reference: torch.nn.Module, init_inputs: tuple[Any, ...],
                 entries: dict[str, _Entry], notes: list[str], out_spec: pytree.TreeSpec | None) -> None:
        super().__init__()
        self._out_spec_default = out_spec
        self.op, self.op_dir = op, op_dir
        self.reference = reference
        self.init_inputs = init_inputs
        self._entries = entries
        self.notes: list[str] = list(notes)
        self.calls: Counter[str] = Counter()
        self.last = REFERENCE
        self._said: set[str] = set()
        self._keys: dict[str, str] = {}
        self._plans: dict[Any, _Plan | None] = {}  # per call shape: how it runs (None: the reference)
        for note in notes:
            self._say(note)
        me = weakref.ref(self)

        def run(inputs: tuple[torch.Tensor, ...], state: dict[str, torch.Tensor]) -> Any:
            owner = me()
            assert owner is not None, "a compiled graph outlived its kernelevo module"
            params = {f"reference.{k}": v for k, v in state.items()}
            return torch.func.functional_call(owner, params, inputs)

        self.kernel_ops: dict[str, Any] = {}  # "<gpu-key>/<file>" -> its torch.ops.kernelevo op, once used
        name = f"{library.op_name(op, '', repr(init_inputs), '')}_{next(_serial)}"
        self.dispatch_op = library.register_dispatch(name, run, reference, list(reference.state_dict()))

    @property
    def gpu_keys(self) -> list[str]:
        return sorted(self._entries)

    def _say(self, reason: str) -> None:
        if reason not in self._said:
            self._said.add(reason)
            log.warning("kernelevo: %s: %s; the reference runs there", self.op, reason)
            if reason not in self.notes:
                self.notes.append(reason)

    def _apply(self, fn: Any, recurse: bool = True) -> ExportedOp:  # .to()/.cuda()/.half() reach the kernels
        super()._apply(fn, recurse)
        for entry in self._entries.values():
            for k in entry.kernels.values():
                k._apply(fn, recurse)
        return self

    def _plan(self, args: tuple[Any, ...], state: dict[str, torch.Tensor]) -> _Plan | None:
        """How calls shaped like this one run: the export, the kernel file and its op; or None
        (the reason said once). Worked out on a shape's first call and cached."""
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if not tensors:
            return None
        devices = {t.device for t in [*tensors, *state.values()]}
        if len(devices) != 1:
            self._say(f"tensors on several devices ({', '.join(sorted(map(str, devices)))})")
            return None
        device = devices.pop()
        key = _device_key(device, self._keys)
        if key is None:
            why = "CPU tensors (a CPU export runs only in Triton's interpreter)" if device.type == "cpu" \
                else f"tensors on {device}"
            self._say(why)
            return None
        entry = self._entries.get(key)
        if entry is None:
            self._say(f"no export for this GPU type ({key}; exports: {', '.join(self.gpu_keys) or 'none'})")
            return None
        sig = signature_of(args, state)
        verified_dtypes = set().union(*(v.dtypes() for v in entry.verified))
        if not sig.dtypes() <= verified_dtypes:
            bad = ", ".join(sorted(d.removeprefix("torch.") for d in sig.dtypes() - verified_dtypes))
            self._say(f"dtype {bad} was not verified on {key} "
                      f"(verified: {', '.join(sorted(d.removeprefix('torch.') for d in verified_dtypes))})")
            return None
        m = match(sig, entry.verified)
        if m is None:
            self._say(f"inputs ({sig.describe()}) lie outside the sizes verified on {key}")
            return None
        file = entry.manifest.champion_for(m.index).file
        if file in entry.broken:
            return None
        names = list(state)
        template = [None if isinstance(a, torch.Tensor) else a for a in args]
        name = library.op_name(self.op, source_digest(entry.export.sources[file]), repr(self.init_inputs),
                               repr(template))
        slots = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        op = library.register(name, entry.kernels[file], self.reference, names, template, slots)
        self.kernel_ops[f"{key}/{file}"] = op
        return _Plan(entry, file, sig, not m.exact, op, self._out_spec(args))

    def _out_spec(self, args: tuple[Any, ...]) -> pytree.TreeSpec:
        meta = [torch.empty_like(a, device="meta") if isinstance(a, torch.Tensor) else a for a in args]
        state = {k: torch.empty_like(v, device="meta") for k, v in self.reference.state_dict().items()}
        with torch.no_grad():
            out = torch.func.functional_call(self.reference, state, tuple(meta))
        return pytree.tree_flatten(out)[1]

    def forward(self, *args: Any) -> Any:
        if torch.compiler.is_compiling():
            return self._traced(args)
        return self._eager(args)

    def _traced(self, args: tuple[Any, ...]) -> Any:
        """Under torch.compile/export: one opaque dispatch call, chosen at run time; or the plain
        reference where kernels never run (non-tensor arguments, autograd)."""
        state = self.reference.state_dict()
        tensors_only = all(isinstance(a, torch.Tensor) for a in args)
        # Exporting: the graph is for deployment, so the kernel's op, whose gradient is the reference's.
        grad = not torch.compiler.is_exporting() and _needs_grad(list(args), self.reference)
        if not tensors_only or self._out_spec_default is None or grad:
            return self.reference(*args)
        leaves = self.dispatch_op(list(args), list(state.values()))
        return pytree.tree_unflatten(leaves, self._out_spec_default)

    def _eager(self, args: tuple[Any, ...]) -> Any:
        if _needs_grad([a for a in args if isinstance(a, torch.Tensor)], self.reference):
            self._say("autograd is on (the exported kernels are forward-only)")
            return self._reference(args)
        state = self.reference.state_dict()
        # The plan of a shape is worked out once: on a GPU a small op's kernel takes a few
        # microseconds, so choosing must not cost more than a dictionary lookup.
        shape = (tuple((a.shape, a.dtype, a.device) if isinstance(a, torch.Tensor) else repr(a) for a in args),
                 tuple((k, v.shape, v.dtype, v.device) for k, v in state.items()))
        if shape not in self._plans:
            self._plans[shape] = self._plan(args, state)
        plan = self._plans[shape]
        if plan is None:
            return self._reference(args)
        key = plan.entry.manifest.gpu_key
        kernel = plan.entry.kernels[plan.file]
        try:
            # Eager calls go to the kernel module itself, its state tied to the reference's: the
            # custom op's dispatch and functional_call cost ~70 us a call here, more than a small
            # kernel takes on a GPU. Compiled graphs call the op (see _traced).
            _tie(kernel, state)
            out = kernel(*args)
        except Exception as e:  # noqa: BLE001 - a kernel that fails here must not take the model down
            plan.entry.broken.add(plan.file)
            self._plans.clear()  # every shape that chose this kernel chooses again
            self._say(f"{key}/{plan.file} raised {_one_line(e)} (switched off for this process)")
            return self._reference(args)
        if plan.unchecked:
            expected = self.reference(*args)
            c = compare_outputs(list(flatten_outputs(out)), list(flatten_outputs(expected)),
                                plan.entry.manifest.atol, plan.entry.manifest.rtol)
            plan.unchecked = False
            if not c.ok:
                self._plans[shape] = None
                self._say(f"inputs ({plan.sig.describe()}) are inside the verified sizes on {key} but "
                          f"{plan.file} disagreed with the reference there: {c.reason}")
                return self._reference(args)
        self.last = plan.label
        self.calls[plan.label] += 1
        return out

    def _reference(self, args: tuple[Any, ...]) -> Any:
        self.last = REFERENCE
        self.calls[REFERENCE] += 1
        return self.reference(*args)

    def extra_repr(self) -> str:
        return f"op={self.op!r}, exports={self.gpu_keys}"


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _build_entry(op_dir: Path, key: str, reference: torch.nn.Module, init: tuple[Any, ...]) -> _Entry:
    export = read_export(op_dir, key)
    m = export.manifest
    try:
        problem = load_problem(export.problem_path, m.overrides, device="cpu")
        verified = [size_signature(problem, s["size"]) for s in m.sizes]
    except Exception as e:  # noqa: BLE001 - a problem that no longer runs here: say so, keep the reference
        raise ManifestError(f"{export.problem_path}: cannot describe the verified sizes "
                            f"({type(e).__name__}: {e})") from None
    kernels: dict[str, torch.nn.Module] = {}
    for entry in m.entries:
        if entry.file in kernels:
            continue
        try:
            module = import_kernel(export.folder / entry.file, export.sources[entry.file])
            kernel = module.ModelNew(*init)
            kernel.load_state_dict(reference.state_dict(), strict=True)
        except Exception as e:  # noqa: BLE001
            raise ManifestError(f"{export.folder / entry.file}: cannot be built here "
                                f"({_one_line(e)})") from None
        kernels[entry.file] = kernel.eval()
    return _Entry(export, problem, kernels, verified)


def load(op_dir: str | Path, *init_inputs: Any, strict: bool = False) -> ExportedOp:
    """The exported op in ``op_dir`` (``kernels/<op>``) as a module built with ``init_inputs``
    (default: the problem file's ``get_init_inputs()``).

    Every GPU type exported there is loaded; an export that cannot be used (tampered, stale, built
    for an API this machine lacks) is left out with one logged line — or raises with
    ``strict=True``. Only a folder without a usable problem file raises regardless: then there is
    no reference to fall back on.
    """
    op_dir = Path(op_dir)
    problem_path = op_dir / "problem.py"
    try:
        problem = load_problem(problem_path, device="cpu")
    except ProblemError as e:
        raise LoadError(f"{op_dir}: no usable reference: {e}") from None
    ns = problem.namespace({}, keep=True)  # the reference's code may be traced by torch.compile
    init = tuple(init_inputs) if init_inputs else tuple(ns.get_init_inputs())
    reference = ns.Model(*init).eval()
    out_spec = None
    try:
        with torch.device("meta"), torch.no_grad():
            out_spec = pytree.tree_flatten(copy.deepcopy(reference).to("meta")(*ns.get_inputs()))[1]
    except Exception:  # noqa: BLE001 - no meta kernel: compiled graphs call the reference instead
        pass
    entries: dict[str, _Entry] = {}
    notes: list[str] = []
    keys = gpu_keys(op_dir)
    if not keys:
        notes.append(f"{op_dir} holds no export (run kernelevo export)")
    for key in keys:
        try:
            entries[key] = _build_entry(op_dir, key, reference, init)
        except ManifestError as e:
            if strict:
                raise
            notes.append(f"export {key} refused: {e}")
    return ExportedOp(problem.name, op_dir, reference, init, entries, notes, out_spec)
