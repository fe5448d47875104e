"""What confines a candidate's process, and the checks that it stayed confined.

- **Landlock** (``landlock.py``): the process may write only its scratch folder and the compile
  caches, and open no TCP connection.
- **An audit hook** (``sys.addaudithook``; it cannot be removed): capabilities a kernel has no
  use for are refused when the candidate's own code asks for them, however it spells the
  request (``getattr`` on a built string, ``importlib``, a stdlib helper that does it for it):
  frame and heap inspection, tracing hooks, other processes, sockets, raw memory (ctypes),
  signals, dynamic code, and Dynamo/Inductor doing anything at all. The judge's own modules
  are dropped from ``sys.modules`` and cannot be imported again. Libraries the
  candidate calls (Triton compiling, ``typing`` naming a class) keep their own uses.
- **A snapshot** of the identity of every public function and class in torch, its
  functional and tensor namespaces, the clocks and the thread module, compared after import
  and after every call: a patched function is named.
- **Process state** a call must leave as it found it: no dispatch or function mode left on
  the stack, no thread started by the candidate still running, TF32 and autocast unchanged,
  Dynamo still off.
"""

from __future__ import annotations

import contextlib
import os
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch

# Audit events refused to candidate code: (what the reason tells the model, how far to look
# for the caller). "direct": only the code that raised the event counts (dataclasses and
# namedtuple compile code for their caller, legitimately); "frames": inspect and traceback
# act for their caller; "system": any stdlib module acts for its caller (os.popen, platform),
# while third-party libraries (Triton starting its compiler) answer for themselves.
_REFUSED_EVENTS = {
    "sys._getframe": ("frame inspection", "frames"),
    "sys._current_frames": ("frame inspection", "frames"),
    "sys._current_exceptions": ("frame inspection", "frames"),
    "gc.get_objects": ("heap inspection", "system"),
    "gc.get_referrers": ("heap inspection", "system"),
    "gc.get_referents": ("heap inspection", "system"),
    "sys.settrace": ("tracing hooks", "system"),
    "sys.setprofile": ("tracing hooks", "system"),
    "sys.addaudithook": ("audit hooks", "system"),
    "subprocess.Popen": ("starting processes", "system"),
    "os.system": ("starting processes", "system"),
    "os.exec": ("starting processes", "system"),
    "os.spawn": ("starting processes", "system"),
    "os.posix_spawn": ("starting processes", "system"),
    "os.fork": ("starting processes", "system"),
    "os.forkpty": ("starting processes", "system"),
    "pty.spawn": ("starting processes", "system"),
    "os.kill": ("signals", "system"),
    "os.killpg": ("signals", "system"),
    "signal.pthread_kill": ("signals", "system"),
    "socket.__new__": ("network access", "system"),
    "socket.connect": ("network access", "system"),
    "socket.bind": ("network access", "system"),
    "socket.getaddrinfo": ("network access", "system"),
    "exec": ("dynamic code", "direct"),
    "compile": ("dynamic code", "direct"),
    "code.__new__": ("dynamic code", "direct"),
    "function.__new__": ("dynamic code", "direct"),
    "marshal.loads": ("dynamic code", "direct"),
}
_FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
_FRAME_HELPERS = ("inspect.py", "traceback.py")
_STDLIB = tuple({sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]})
_THIRD_PARTY = ("site-packages", "dist-packages")
_COMPILER = (os.sep + os.path.join("torch", "_dynamo") + os.sep, os.sep + os.path.join("torch", "_inductor") + os.sep)


def _stdlib(filename: str) -> bool:
    if filename.startswith("<frozen"):
        return True
    return filename.startswith(_STDLIB) and not any(p in filename for p in _THIRD_PARTY)


def _transparent(filename: str, scope: str) -> bool:
    """Whether a frame in ``filename`` acts for its caller for events of ``scope``."""
    if scope == "frames":
        return filename.endswith(_FRAME_HELPERS) and _stdlib(filename)
    return scope == "system" and _stdlib(filename)


def install_audit(candidate_file: str, refusals: list[str]) -> None:
    """Refuse the events above to ``candidate_file``'s code and to Dynamo/Inductor, logging each
    refusal in ``refusals`` (the harness reports it even when the candidate catches the error)."""
    getframe = sys._getframe
    busy = [False]

    def effective_caller(scope: str) -> str:
        f = getframe(2)  # 0 this, 1 the hook, 2 the code that raised the event
        while f is not None and _transparent(f.f_code.co_filename, scope):
            f = f.f_back
        return f.f_code.co_filename if f is not None else ""

    def on_stack() -> bool:
        f = getframe(3)
        while f is not None:
            if f.f_code.co_filename == candidate_file:
                return True
            f = f.f_back
        return False

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if busy[0]:
            return
        if event == "object.__getattr__":
            if len(args) < 2 or args[1] not in _FRAME_ATTRS:
                return
            why, scope = "frame inspection", "frames"
        elif event.startswith("ctypes."):
            why, scope = "raw memory access (ctypes)", "system"
        else:
            entry = _REFUSED_EVENTS.get(event)
            if entry is None:
                return
            why, scope = entry
        busy[0] = True
        try:
            caller = effective_caller(scope)
            # Dynamo and Inductor answer for themselves, but only ever run because the candidate asked.
            compiler = any(c in caller for c in _COMPILER) and on_stack()
        finally:
            busy[0] = False
        if caller != candidate_file and not compiler:
            return
        what = "torch.compile (Dynamo/Inductor are off in the judge)" if compiler else f"{why} ({event})"
        refusals.append(what)
        raise PermissionError(f"refused in the judge: {what}")

    sys.addaudithook(hook)


def hide_judge(refusals: list[str]) -> None:
    """Drop the judge's modules from ``sys.modules`` and refuse importing them again (logged in
    ``refusals``). The harness keeps its own references; call once everything it needs is imported."""

    class NoJudge:
        @staticmethod
        def find_spec(name: str, path: Any = None, target: Any = None) -> None:
            if name == "kernelevo" or name.startswith("kernelevo."):
                refusals.append(f"importing the judge ({name})")
                raise ImportError(f"refused in the judge: importing {name}")
            return None

    for name in [n for n in sys.modules if n == "kernelevo" or n.startswith("kernelevo.")]:
        del sys.modules[name]
    sys.meta_path.insert(0, NoJudge)


# -- identity snapshot and process state -------------------------------------------------------


def _namespaces() -> list[tuple[str, Any]]:
    import torch.nn.functional as F

    spaces: list[tuple[str, Any]] = [
        ("torch", torch), ("torch.nn.functional", F), ("torch.Tensor", torch.Tensor),
        ("torch.nn.Module", torch.nn.Module), ("torch.linalg", torch.linalg), ("torch.special", torch.special),
        ("torch.fft", torch.fft), ("torch.cuda", torch.cuda), ("torch.cuda.Event", torch.cuda.Event),
        ("torch.library", torch.library), ("time", time), ("threading", threading),
    ]
    return spaces


def _layers() -> list[tuple[str, type]]:
    """Every nn layer class: what it defines itself (its forward) is checked; what it inherits is
    checked once, on nn.Module."""
    return [(f"torch.nn.{name}", cls) for name in dir(torch.nn)
            if isinstance(cls := getattr(torch.nn, name), type) and issubclass(cls, torch.nn.Module)
            and cls is not torch.nn.Module]


def _resolve(cls: type, name: str) -> Any:
    """What ``cls.name`` is found as, without calling descriptors: the first class in the MRO that
    defines it, and the object there. A subclass shadowing a base's method changes the answer."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass, vars(klass)[name]
    return None


class Snapshot:
    """Identity of every public callable or class in the namespaces a reference and the harness use."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Any, str, Any]] = {}
        for label, space in _namespaces():
            if isinstance(space, type):
                for attr in dir(space):
                    if _public(attr):
                        found = _resolve(space, attr)
                        if found is not None and (callable(found[1]) or isinstance(found[1], (staticmethod,
                                                                                             classmethod, property))):
                            self._entries[f"{label}.{attr}"] = (space, attr, found)
                continue
            for attr in dir(space):
                value = getattr(space, attr, None)
                if _public(attr) and callable(value):
                    self._entries[f"{label}.{attr}"] = (space, attr, value)
        for label, cls in _layers():
            for attr, value in vars(cls).items():
                if _public(attr) and callable(value):
                    self._entries[f"{label}.{attr}"] = (cls, attr, (cls, value))

    def changed(self) -> str | None:
        """The first entry no longer what it was, as ``torch.softmax``; None when all hold."""
        for name, (space, attr, value) in self._entries.items():
            if isinstance(space, type):
                now = _resolve(space, attr)
                if now is None or now[0] is not value[0] or now[1] is not value[1]:
                    return name
            elif getattr(space, attr, None) is not value:
                return name
        return None


def _public(attr: str) -> bool:
    return not attr.startswith("_") or (attr.startswith("__") and attr.endswith("__"))


def _tf32() -> tuple[bool, bool, str]:
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision())


def _autocast() -> tuple[bool, ...]:
    return tuple(torch.is_autocast_enabled(d) for d in ("cpu", "cuda"))


def _deterministic() -> tuple[bool, bool, bool]:
    import torch.utils.deterministic

    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            bool(torch.utils.deterministic.fill_uninitialized_memory))


@contextlib.contextmanager
def fresh_memory_filled(refusals: list[str]) -> Iterator[None]:
    """Memory the allocators hand out (``torch.empty`` and its kind) is filled with NaN (floats)
    or the largest value (integers) for the block, through PyTorch's deterministic mode
    (warn-only: no op is refused for it). A checked call runs inside: an output element the
    candidate never wrote cannot hold a right answer left in a recycled block. Timed calls
    run without it (the fill costs a write of every allocation). Switching it off inside the
    block is recorded in ``refusals``."""
    import torch.utils.deterministic as det

    saved = _deterministic()
    torch.use_deterministic_algorithms(True, warn_only=True)
    det.fill_uninitialized_memory = True
    try:
        yield
    finally:
        if _deterministic() != (True, True, True):
            refusals.append("a switch of PyTorch's deterministic-algorithm settings (the judge fills fresh memory)")
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        det.fill_uninitialized_memory = saved[2]


class ProcessState:
    """What a candidate's import and calls must leave as they found it; ``violation`` names the first
    change. Thread counts come from before the import."""

    def __init__(self, snapshot: Snapshot, refusals: list[str], host_reads: list[str]):
        import _thread

        self._count = _thread._count
        self._active = threading.active_count
        self.threads = (self._count(), self._active())
        self.snapshot = snapshot
        self.refusals = refusals
        self.host_reads = host_reads
        self.tf32 = _tf32()
        self.autocast = _autocast()
        self.compile_off = os.environ.get("TORCH_COMPILE_DISABLE") == "1"
        self.deterministic = _deterministic()

    def violation(self) -> str | None:
        if self.refusals:
            return f"used {self.refusals[0]}, which candidates may not"
        if self.host_reads:
            return (f"read tensor data on the host (Tensor.{self.host_reads[0]}()); host round trips are refused: "
                    "compute in your kernels")
        patched = self.snapshot.changed()
        if patched:
            return f"replaced {patched} (patching torch or the harness is not allowed)"
        if torch._C._len_torch_dispatch_stack() or torch._C._len_torch_function_stack():
            return "left a TorchDispatchMode or TorchFunctionMode active; outputs must be computed when returned"
        if self._count() > self.threads[0] or self._active() > self.threads[1]:
            return "left a thread running (work after return is not timed)"
        if _tf32() != self.tf32:
            return "changed the TF32 / matmul precision settings"
        if _autocast() != self.autocast:
            return "changed the autocast state (lower precision is judged by the tolerance, not switched on globally)"
        if _deterministic() != self.deterministic:
            return "changed PyTorch's deterministic-algorithm settings (the judge uses them to fill fresh memory)"
        dynamo = sys.modules.get("torch._dynamo.config")
        if self.compile_off and dynamo is not None and not getattr(dynamo, "disable", True):
            return "switched torch.compile back on (Dynamo/Inductor are off in the judge)"
        return None
