"""An export's manifest: what was verified, where, against what — and the check that the files on
disk are still the ones verified.

Both readers of an export (``kernelevo.load`` and ``kernelevo verify``) go through
:func:`read_export`, so a kernel file or problem file edited after the export (by hand, by a bad
merge, by an attacker) is refused the same way everywhere: its sha256 no longer matches.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kernelevo.candidate import source_digest

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
CPU_KEY = "cpu"


class ManifestError(ValueError):
    """An export that cannot be used: missing, unreadable, or tampered with. The message is one line."""


@dataclass(frozen=True)
class KernelEntry:
    file: str
    candidate: int
    sha256: str
    sizes: list[int]  # indices into the manifest's sizes where this kernel is the champion
    speedup: float | None  # geometric mean against eager over all sizes (None: not measured)
    speedup_compiled: float | None


@dataclass(frozen=True)
class Manifest:
    op: str
    gpu_key: str
    correctness_only: bool
    problem_file: str
    problem_sha256: str
    overrides: dict[str, Any]
    atol: float | None
    rtol: float | None
    sizes: list[dict[str, Any]]  # per verified size: its globals, errors, speedups, champion id
    best: KernelEntry
    champions: list[KernelEntry] = field(default_factory=list)
    versions: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    # The judge runs a problem in training mode (nn.Module's default). True when the problem's
    # outputs and state are the same in eval mode, so its kernels may answer eval-mode calls too.
    mode_independent: bool = False
    manifest_version: int = MANIFEST_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        data["best"] = KernelEntry(**data["best"])
        data["champions"] = [KernelEntry(**c) for c in data.get("champions", [])]
        return cls(**data)

    @property
    def entries(self) -> list[KernelEntry]:
        return [self.best, *self.champions]

    def champion_for(self, size_index: int) -> KernelEntry:
        """The kernel measured fastest at a verified size (the best one on a correctness-only export)."""
        for e in self.champions:
            if size_index in e.sizes:
                return e
        return self.best


@dataclass(frozen=True)
class Export:
    """One GPU type's entry of an op's export folder, its files checked against the manifest."""

    folder: Path  # <op_dir>/<gpu-key>
    manifest: Manifest
    problem_path: Path
    problem_source: str
    sources: dict[str, str]  # kernel file name -> source

    @property
    def op_dir(self) -> Path:
        return self.folder.parent


def gpu_keys(op_dir: Path) -> list[str]:
    """The GPU types an op folder has exports for."""
    if not op_dir.is_dir():
        return []
    return sorted(p.name for p in op_dir.iterdir() if (p / MANIFEST).is_file())


def read_export(op_dir: Path, gpu_key: str) -> Export:
    """Read ``op_dir/gpu_key`` and check every file's sha256 against its manifest."""
    folder = op_dir / gpu_key
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text())
        manifest = Manifest.from_json(data)
    except FileNotFoundError:
        have = ", ".join(gpu_keys(op_dir)) or "none"
        raise ManifestError(f"{op_dir}: no export for {gpu_key} (exports here: {have})") from None
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ManifestError(f"{path}: not a kernelevo manifest ({type(e).__name__}: {e})") from None
    if manifest.manifest_version != MANIFEST_VERSION:
        raise ManifestError(f"{path}: manifest version {manifest.manifest_version}, this kernelevo reads "
                            f"{MANIFEST_VERSION}; export again")
    if manifest.gpu_key != gpu_key:
        raise ManifestError(f"{path}: says it is for {manifest.gpu_key}, but sits in the folder for {gpu_key}")
    problem_path = (folder / manifest.problem_file).resolve()
    problem_source = _read(problem_path, "problem file")
    if source_digest(problem_source) != manifest.problem_sha256:
        raise ManifestError(f"{problem_path}: sha256 does not match the manifest (edited or stale since the "
                            "export); export again or restore it")
    sources = {}
    for entry in manifest.entries:
        f = folder / entry.file
        if Path(entry.file).name != entry.file:
            raise ManifestError(f"{path}: kernel file {entry.file!r} is not a plain file name")
        text = _read(f, "kernel file")
        if source_digest(text) != entry.sha256:
            raise ManifestError(f"{f}: sha256 does not match the manifest (edited or stale since the export); "
                                "export again or restore it")
        sources[entry.file] = text
    return Export(folder, manifest, problem_path, problem_source, sources)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise ManifestError(f"{path}: cannot read the {what} ({e.strerror or type(e).__name__})") from None
