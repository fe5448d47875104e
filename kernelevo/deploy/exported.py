"""The module a loaded export is: the reference ``Model`` with its verified kernels beside it, and
the guards that decide, call by call, which of them answers.

A kernel answers only a call like the ones it was judged on. The judge ran contiguous inputs,
without autograd or autocast, in training mode, with no hooks on the module, at its verified
sizes; so a call with strided inputs, gradients, autocast, a hook, another mode (for an op whose
output depends on it), other dtypes or shapes outside the verified buckets, on a device type with
no export, or a module whose constructor-level attributes changed since it was swapped in, is
answered by the reference — and the reason is logged once (logger ``kernelevo``). A shape inside
a bucket but not itself verified is compared with the reference on its first call, on the
caller's input and on a fresh random draw of the same shape.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import threading
import weakref
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils import _pytree as pytree

from kernelevo.candidate import source_digest
from kernelevo.deploy import library
from kernelevo.deploy.manifest import CPU_KEY, Export, Manifest
from kernelevo.deploy.signature import Signature, match, signature_of
from kernelevo.evaluate.compare import compare_outputs
from kernelevo.problem import Problem, flatten_outputs

log = logging.getLogger("kernelevo")
REFERENCE = "reference"
_INTERPRETER_LOCK = threading.RLock()
_serial = itertools.count()  # dispatch ops are per module: each holds its own choices and notes


@dataclass
class Entry:
    """One GPU type's export with its kernels built for this module's constructor arguments."""

    export: Export
    problem: Problem
    kernels: dict[str, torch.nn.Module]
    verified: list[Signature]
    verified_attrs: set[tuple[Any, ...]]  # plain_attributes of the problem's Model at each verified size
    broken: set[str] = field(default_factory=set)  # kernel files that raised: off for the process

    @property
    def manifest(self) -> Manifest:
        return self.export.manifest


@dataclass
class _Plan:
    """How calls of one shape run."""

    entry: Entry
    file: str
    sig: Signature
    unchecked: bool  # a bucket shape not yet compared with the reference

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


def plain_attributes(root: torch.nn.Module) -> tuple[Any, ...]:
    """The constructor-level state of a module tree: each module's class and plain attributes
    (``eps``, ``count_include_pad``, ``align_corners``, ...; not tensors, submodules, callables or
    private ones). ``extra_repr()`` is not enough: it leaves out arguments that change the result."""
    out = []
    for m in root.modules():
        items = tuple(sorted((k, repr(v)) for k, v in vars(m).items()
                             if not k.startswith("_") and k != "training" and not callable(v)
                             and not isinstance(v, (torch.Tensor, torch.nn.Module))))
        out.append((type(m).__qualname__, items))
    return tuple(out)


def _hooked(modules: list[torch.nn.Module]) -> bool:
    """Forward hooks the kernel would skip: on the module tree, or global ones."""
    from torch.nn.modules import module as mm

    if mm._global_forward_hooks or mm._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


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


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


class ExportedOp(torch.nn.Module):
    """The reference ``Model`` of an exported op, and its verified kernels beside it.

    ``reference`` holds the state (parameters and buffers); a kernel module's state is tied to
    it (the same tensors), so both sides always compute with the same weights. ``last`` says what
    answered the last call (``"reference"`` or ``"<gpu-key>/<file>"``), ``calls`` counts them and
    ``notes`` holds every reason the reference answered instead. ``guards`` are (module, its
    ``extra_repr()``) pairs that must still hold for a kernel to answer (``patch`` sets them).
    """

    def __init__(self, op: str, op_dir: Path, reference: torch.nn.Module, init_inputs: tuple[Any, ...],
                 entries: dict[str, Entry], notes: list[str], out_spec: pytree.TreeSpec | None,
                 call_signature: inspect.Signature | None = None) -> None:
        super().__init__()
        self.op, self.op_dir = op, op_dir
        self.reference = reference
        self.init_inputs = init_inputs
        self.direct: torch.nn.Module | None = None
        self.notes: list[str] = []
        self.calls: Counter[str] = Counter()
        self.last = REFERENCE
        self._entries = entries
        self._out_spec_default = out_spec
        self._call_signature = call_signature
        self._said: set[str] = set()
        self._init_transient()
        for note in notes:
            self._say(note)

    def _init_transient(self) -> None:
        """What a copy or an unpickled module builds afresh: registered ops are per process."""
        self._keys: dict[str, str] = {}
        self._plans: dict[Any, _Plan | None] = {}  # per call shape: how it runs (None: the reference)
        self._attrs_cache: tuple[Any, Any] | None = None
        self.kernel_ops: dict[str, Any] = {}  # "<gpu-key>/<file>" -> its torch.ops.kernelevo op, once used
        me = weakref.ref(self)

        def run(inputs: tuple[torch.Tensor, ...], state: dict[str, torch.Tensor]) -> Any:
            owner = me()
            assert owner is not None, "a compiled graph outlived its kernelevo module"
            own = owner.reference.state_dict()
            if all(own[k] is v or own[k].data_ptr() == v.data_ptr() for k, v in state.items()):
                return owner._eager(inputs)  # the usual case: the graph passed this module's own state
            params = {f"reference.{k}": v for k, v in state.items()}
            return torch.func.functional_call(owner, params, inputs)

        name = f"{library.op_name(self.op, '', repr(self.init_inputs), '')}_{next(_serial)}"
        self.dispatch_op = library.register_dispatch(name, run, self.reference, list(self.reference.state_dict()))

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        for transient in ("_keys", "_plans", "kernel_ops", "dispatch_op", "_attrs_cache"):
            state.pop(transient, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._init_transient()

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
        """How calls shaped like this one run; or None (the reason said once). Worked out on a
        shape's first call and cached."""
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if not tensors:
            return None
        if not all(t.is_contiguous() for t in [*tensors, *state.values()]):
            self._say("strided (non-contiguous) tensors: the kernels were judged on contiguous ones")
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
        self._register_op(entry, file, args, state)
        return _Plan(entry, file, sig, not m.exact)

    def _register_op(self, entry: Entry, file: str, args: tuple[Any, ...], state: dict[str, torch.Tensor]) -> None:
        """The kernel's own ``torch.ops.kernelevo`` op, for graphs and for users who call it directly."""
        template = [None if isinstance(a, torch.Tensor) else a for a in args]
        name = library.op_name(self.op, source_digest(entry.export.sources[file]), repr(self.init_inputs),
                               repr(template))
        slots = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        self.kernel_ops[f"{entry.manifest.gpu_key}/{file}"] = library.register(
            name, entry.kernels[file], self.reference, list(state), template, slots)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs:  # called by keyword: bind to the replaced module's own signature
            try:
                bound = self._call_signature.bind(*args, **kwargs) if self._call_signature else None
            except TypeError:
                bound = None
            if bound is None or bound.kwargs:
                self._say("keyword arguments the kernels' positional form cannot take")
                # The user's own module (a swapped one) takes its own keywords; else the problem's Model.
                original = self.direct if self.direct is not None else self.reference
                self.last = REFERENCE
                self.calls[REFERENCE] += 1
                return original(*args, **kwargs)
            args = tuple(bound.args)
        if torch.compiler.is_compiling():
            return self._traced(args)
        if torch.jit.is_tracing():  # a TorchScript trace records what runs: the reference's ops
            return self._reference(args)
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

    def _attributes(self, modules: list[torch.nn.Module]) -> tuple[Any, ...]:
        """plain_attributes of the reference, recomputed only when an attribute object changed:
        assigning ``eps`` (or anything) replaces the object, so identities are a cheap witness."""
        witness = tuple(tuple(map(id, vars(m).values())) for m in modules)
        if self._attrs_cache is None or self._attrs_cache[0] != witness:
            self._attrs_cache = (witness, plain_attributes(self.reference))
        return self._attrs_cache[1]

    def _refused(self, args: tuple[Any, ...], tensors: list[torch.Tensor], modules: list[torch.nn.Module]
                 ) -> str | None:
        """Why no kernel may answer this call whatever its shape, or None."""
        if _needs_grad(tensors, self.reference):
            return "autograd is on (the exported kernels are forward-only)"
        device = tensors[0].device.type if tensors else "cpu"
        if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
            return "autocast is on (the kernels were judged at the problem's own dtypes)"
        if any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors):
            return "a torch.func transform (vmap, grad, ...) is running"
        if _hooked(modules):
            return "forward hooks on the module (a kernel would skip them)"
        return None

    def _eager(self, args: tuple[Any, ...]) -> Any:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        modules = list(self.reference.modules())
        why = self._refused(args, tensors, modules)
        if why:
            self._say(why)
            return self._reference(args)
        state = self.reference.state_dict()
        # The plan of a shape is worked out once: on a GPU a small op's kernel takes a few
        # microseconds, so choosing must not cost more than a dictionary lookup.
        shape = (tuple((a.shape, a.dtype, a.device, a.is_contiguous()) if isinstance(a, torch.Tensor) else repr(a)
                       for a in args),
                 tuple((k, v.shape, v.dtype, v.device, v.is_contiguous()) for k, v in state.items()))
        if shape not in self._plans:
            self._plans[shape] = self._plan(args, state)
        plan = self._plans[shape]
        if plan is None:
            return self._reference(args)
        manifest = plan.entry.manifest
        if self._attributes(modules) not in plan.entry.verified_attrs:
            self._say("constructor arguments no export verified (" + "; ".join(
                f"{cls}({', '.join(f'{k}={v}' for k, v in items)})" for cls, items in self._attributes(modules)
                if items) + ")")
            return self._reference(args)
        training = {m.training for m in modules}
        if not manifest.mode_independent and training != {True}:
            # The judge ran the problem in training mode, and this op's output depends on the mode.
            self._say("the module is in eval mode; this op's kernels were judged in training mode, where its "
                      "output differs")
            return self._reference(args)
        kernel = plan.entry.kernels[plan.file]
        try:
            # Eager calls go to the kernel module itself, its state tied to the reference's: the
            # custom op's dispatch and functional_call cost ~70 us a call here, more than a small
            # kernel takes on a GPU. Compiled graphs call the op (see _traced).
            # Triton's interpreter patches triton.language globally while a kernel runs: one at a time.
            with _INTERPRETER_LOCK if manifest.gpu_key == CPU_KEY else contextlib.nullcontext():
                _tie(kernel, state)
                if kernel.training != (True in training):
                    kernel.train(True in training)
                before = {k: v.clone() for k, v in state.items()} if plan.unchecked else {}
                out = kernel(*args)
                if plan.unchecked:
                    out = self._first_sight(plan, kernel, args, out, before)
        except Exception as e:  # noqa: BLE001 - a kernel that fails here must not take the model down
            plan.entry.broken.add(plan.file)
            self._plans.clear()  # every shape that chose this kernel chooses again
            self._say(f"{plan.label} raised {one_line(e)} (switched off for this process)")
            return self._reference(args)
        if out is None:
            return self._reference(args)
        self.last = plan.label
        self.calls[plan.label] += 1
        return out

    def _first_sight(self, plan: _Plan, kernel: torch.nn.Module, args: tuple[Any, ...], out: Any,
                     before: dict[str, torch.Tensor]) -> Any:
        """Compare a bucket shape's kernel with the reference, on the caller's input and on a fresh
        random draw (a kernel right on zeros or on one input can be wrong on the next); None when
        they disagree. The call already ran once (``out``); the comparisons run from a snapshot of
        the state taken before it and leave the state as that call left it, and the draw comes from
        a private generator: a user's running statistics and random stream see one call."""
        state = self.reference.state_dict()
        after = {k: v.clone() for k, v in state.items()}

        def restore(snapshot: dict[str, torch.Tensor]) -> None:
            with torch.no_grad():
                for k, v in state.items():
                    v.copy_(snapshot[k])
        gen = torch.Generator(device=args[0].device if isinstance(args[0], torch.Tensor) else "cpu").manual_seed(0)
        fresh = tuple(torch.randn(a.shape, generator=gen, dtype=a.dtype, device=a.device)
                      if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
        m = plan.entry.manifest
        for label, call, got in (("the caller's input", args, out), ("a random draw", fresh, None)):
            restore(before)
            if got is None:
                got = kernel(*call)
                kernel_state = {k: v.clone() for k, v in state.items()}
            else:
                kernel_state = after
            got = [g.clone() for g in flatten_outputs(got)]
            restore(before)
            expected = list(flatten_outputs(self.reference(*call)))
            c = compare_outputs(got, expected, m.atol, m.rtol)
            if c.ok:
                c = compare_outputs(list(kernel_state.values()), list(state.values()), m.atol, m.rtol)
                c = c if c.ok else type(c)(False, f"the state after the call differs: {c.reason}", 0.0, 0.0)
            if not c.ok:  # off for this shape only: the verified ones keep their kernel
                self._plans = {k: (None if p is plan else p) for k, p in self._plans.items()}
                self._say(f"inputs ({plan.sig.describe()}) are inside the verified sizes on {m.gpu_key} but "
                          f"{plan.file} disagreed with the reference there, on {label}: {c.reason}")
                restore(before)
                return None
        restore(after)
        plan.unchecked = False
        return out

    def _reference(self, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
        self.last = REFERENCE
        self.calls[REFERENCE] += 1
        return self.reference(*args, **(kwargs or {}))

    def extra_repr(self) -> str:
        return f"op={self.op!r}, exports={self.gpu_keys}"
