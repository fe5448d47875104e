"""Loading a problem file: KernelBench's format plus optional ``SIZES``, ``CPU_SIZES``, ``ATOL``/``RTOL``.

A problem file defines ``class Model(nn.Module)``, ``get_inputs()`` and ``get_init_inputs()``.
A size is a dict of module globals to override before those are called. Overrides are
applied while the module's own code runs, so globals derived from an overridden one
(``shape = (batch_size, dim)``) follow it.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

_counter = itertools.count()


class ProblemError(ValueError):
    """A problem file (or an override) that cannot be used. ``str()`` is one line naming the file."""


class _Overlay(dict):
    """Locals for exec'ing a module: stores go to the module dict except for overridden names."""

    def __init__(self, target: dict[str, Any], frozen: Mapping[str, Any]):
        super().__init__()
        self._target = target
        self._frozen = frozen

    def __getitem__(self, key: str) -> Any:
        return self._target[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self._frozen:
            self._target[key] = value

    def __delitem__(self, key: str) -> None:
        del self._target[key]

    def __contains__(self, key: object) -> bool:
        return key in self._target


def _module_globals(tree: ast.Module) -> set[str]:
    """Names assigned at the top level of a module: the ones a size may override."""
    names: set[str] = set()
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for t in targets:
            for sub in ast.walk(t):
                if isinstance(sub, ast.Name):
                    names.add(sub.id)
    return names


def _literal_globals(tree: ast.Module) -> dict[str, Any]:
    """Top-level ``name = <literal>`` assignments (the last one wins), for checking ``--set`` types."""
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except (ValueError, SyntaxError, TypeError):
                out.pop(node.targets[0].id, None)
    return out


def _override_problem(name: str, value: Any, names: frozenset[str], literals: dict[str, Any]) -> str | None:
    """Why ``--set name=value`` cannot apply: an unknown name (with the closest ones), or a value of
    another kind than the file's own (a word where the file has a number)."""
    import difflib

    if name not in names:
        close = difflib.get_close_matches(name, sorted(names), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        return f"--set {name}: no global {name!r} in the file{hint}"
    if name in literals:
        old = literals[name]
        numeric = (int, float)
        if isinstance(old, numeric) and not isinstance(old, bool) and \
                (isinstance(value, bool) or not isinstance(value, numeric)):
            return (f"--set {name}={value!r}: {name} is a number in the file ({old!r}); "
                    f"give a number, not a {type(value).__name__}")
        if isinstance(old, bool) and not isinstance(value, bool):
            return f"--set {name}={value!r}: {name} is True/False in the file; give True or False"
    return None


def parse_override(text: str) -> tuple[str, Any]:
    """``name=value`` from the command line; the value is a Python literal or else a string."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise ProblemError(f"--set {text!r}: expected name=value")
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        value = raw.strip()
    return name, value


@dataclass(frozen=True)
class Problem:
    """A loaded, validated problem file. Holds no tensors; ``namespace`` builds a size's module."""

    path: Path
    source: str
    globals_: frozenset[str]
    sizes: tuple[dict[str, Any], ...]  # the effective overrides of each size (``--set`` included)
    atol: float | None
    rtol: float | None
    overrides: dict[str, Any]  # ``--set``, already applied to every size
    declared: tuple[dict[str, Any], ...] = ()  # every size the file declares (SIZES and CPU_SIZES)

    @property
    def name(self) -> str:
        return self.path.parent.name if self.path.stem == "problem" else self.path.stem

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]

    def namespace(self, size: Mapping[str, Any], keep: bool = False) -> types.ModuleType:
        """Run the problem's code with ``size``'s globals fixed; return the module. ``keep`` leaves
        it in ``sys.modules``, where torch.compile looks up the globals of the code it traces."""
        return _exec_module(self.path, self.source, size, keep)

    def label(self, size: Mapping[str, Any]) -> str:
        return ", ".join(f"{k}={v}" for k, v in size.items()) or "default"


def _exec_module(path: Path, source: str, overrides: Mapping[str, Any], keep: bool = False) -> types.ModuleType:
    name = f"kernelevo_problem_{path.stem}_{next(_counter)}"
    module = types.ModuleType(name)
    module.__file__ = str(path)
    module.__dict__.update(overrides)
    code = compile(source, str(path), "exec")
    import sys

    sys.modules[name] = module  # dataclasses look a class's module up while it is defined
    try:
        exec(code, module.__dict__, _Overlay(module.__dict__, overrides))
    finally:
        if not keep:
            del sys.modules[name]  # one per size and process: don't let a long run accumulate them
    return module


def _check_sizes(path: Path, key: str, value: Any, names: frozenset[str]) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(s, dict) for s in value):
        raise ProblemError(f"{path}: {key} must be a non-empty list of dicts of globals")
    for s in value:
        for k in s:
            if k not in names:
                raise ProblemError(f"{path}: {key} entry {s} sets {k!r}, which is not a global of the file")
    return tuple(dict(s) for s in value)


def load_problem(
    path: str | Path, overrides: Mapping[str, Any] | None = None, device: str = "cpu"
) -> Problem:
    """Load and validate ``path``. Sizes are ``CPU_SIZES`` on a CPU when present, else ``SIZES``,
    else the file's defaults; ``overrides`` (``--set``) apply on top of every size."""
    p = Path(path)
    overrides = dict(overrides or {})
    try:
        source = p.read_text()
    except FileNotFoundError:
        raise ProblemError(f"{p}: no such problem file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise ProblemError(f"{p}: cannot read ({type(e).__name__})") from None
    try:
        tree = ast.parse(source, str(p))
    except SyntaxError as e:
        raise ProblemError(f"{p}: syntax error on line {e.lineno}: {e.msg}") from None
    names = frozenset(_module_globals(tree))
    literals = _literal_globals(tree)
    for k, v in overrides.items():
        problem = _override_problem(k, v, names, literals)
        if problem:
            raise ProblemError(f"{p}: {problem}")
    try:
        module = _exec_module(p, source, overrides)
    except Exception as e:  # the user's file: any error is theirs to see in one line
        raise ProblemError(f"{p}: running the file failed: {type(e).__name__}: {_first_line(e)}") from e

    model = getattr(module, "Model", None)
    if not (isinstance(model, type) and issubclass(model, torch.nn.Module)):
        raise ProblemError(f"{p}: no class Model(nn.Module) defined")
    for fn in ("get_inputs", "get_init_inputs"):
        if not callable(getattr(module, fn, None)):
            raise ProblemError(f"{p}: no function {fn}() defined")
    tol = {}
    for key in ("ATOL", "RTOL"):
        v = getattr(module, key, None)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise ProblemError(f"{p}: {key} must be a non-negative number, got {v!r}")
        tol[key] = None if v is None else float(v)

    sizes: tuple[dict[str, Any], ...] = ({},)
    declared: tuple[dict[str, Any], ...] = ()
    for key in ("SIZES", "CPU_SIZES"):
        if getattr(module, key, None) is not None:
            declared += _check_sizes(p, key, getattr(module, key), names)
    if device == "cpu" and getattr(module, "CPU_SIZES", None) is not None:
        sizes = _check_sizes(p, "CPU_SIZES", module.CPU_SIZES, names)
    elif getattr(module, "SIZES", None) is not None:
        sizes = _check_sizes(p, "SIZES", module.SIZES, names)
    sizes = tuple({**s, **overrides} for s in sizes)
    # Drop sizes that became identical once --set applied to all of them.
    unique = tuple({repr(sorted(s.items())): s for s in sizes}.values())
    return Problem(p.resolve(), source, names, unique, tol["ATOL"], tol["RTOL"], overrides, declared)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def flatten_outputs(out: Any) -> Iterator[Any]:
    """A forward's result as a flat sequence: a tensor, or nested tuples/lists of them."""
    if isinstance(out, (tuple, list)):
        for o in out:
            yield from flatten_outputs(o)
    else:
        yield out
