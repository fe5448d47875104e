"""``kernelevo.load``: an exported op as an ``nn.Module`` that runs the kernel only where it was
verified, and the reference everywhere else (:mod:`kernelevo.deploy.exported` decides which,
call by call).

Loading reads every GPU type's export in the op folder, checks each file's sha256 against its
manifest, imports the checked text (not the file again), builds each kernel module with the
constructor arguments and describes the verified sizes. An export that cannot be used is left
out with one logged line and the reference keeps running: a user's model never breaks because of
kernelevo."""

from __future__ import annotations

import copy
import importlib.util
import inspect
import linecache
import sys
import threading
import types
from pathlib import Path
from typing import Any

import torch
from torch.utils import _pytree as pytree

from kernelevo.candidate import source_digest
from kernelevo.deploy.exported import REFERENCE, Entry, ExportedOp, one_line, plain_attributes
from kernelevo.deploy.manifest import ManifestError, gpu_keys, read_export
from kernelevo.deploy.signature import size_signature
from kernelevo.problem import Problem, ProblemError, load_problem

__all__ = ["REFERENCE", "ExportedOp", "LoadError", "import_kernel", "load"]



class LoadError(ValueError):
    """An op folder that cannot even give the reference (no problem file); one line."""


_modules: dict[str, types.ModuleType] = {}  # kernel sha256 -> its module: import (and JIT) once
_modules_lock = threading.Lock()


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


def _attributes_at(problem: Problem, size: dict[str, Any]) -> tuple[Any, ...]:
    """The problem's Model's constructor-level state at a verified size (built on meta: no memory)."""
    ns = problem.namespace(size)
    with torch.device("meta"):
        return plain_attributes(ns.Model(*ns.get_init_inputs()))


def _build_entry(op_dir: Path, key: str, reference: torch.nn.Module, init: tuple[Any, ...]) -> Entry:
    export = read_export(op_dir, key)
    m = export.manifest
    try:
        problem = load_problem(export.problem_path, m.overrides, device="cpu")
        verified = [size_signature(problem, s["size"]) for s in m.sizes]
        verified_attrs = {_attributes_at(problem, s["size"]) for s in m.sizes}
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
                                f"({one_line(e)})") from None
        kernels[entry.file] = kernel.eval()
    return Entry(export, problem, kernels, verified, verified_attrs)


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
    entries: dict[str, Entry] = {}
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
    try:
        call_signature = inspect.signature(reference.forward)
    except (TypeError, ValueError):
        call_signature = None
    return ExportedOp(problem.name, op_dir, reference, init, entries, notes, out_spec, call_signature)
