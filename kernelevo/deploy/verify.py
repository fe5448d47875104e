"""``kernelevo verify``: the CI gate. Every exported kernel for this machine's GPU type is judged
again, with the libraries installed now, against the problem it was exported with.

What is checked, per op folder (``<op>/problem.py`` beside ``<op>/<gpu-key>/manifest.json``):

- **Integrity**: the manifest is read with :func:`~kernelevo.deploy.manifest.read_export`, so a
  kernel or problem file whose sha256 no longer matches is ``tampered`` (a failure) and not run.
- **Correctness**: each kernel file (``best.py`` and every per-size champion) goes through the
  evaluator, one evaluator per op; any verdict but ``correct`` makes it ``wrong``, with the judge's
  reason and, when the reason names one, the size.
- **Speed** (only on a GPU, for a manifest that is not ``correctness_only``): a measured speedup
  more than ``threshold`` below the exported one (``new < old * (1 - threshold)``) makes it
  ``slower``. What is compared: the manifest keeps per-size speedups for the best kernel only, so
  ``best.py`` is compared size by size at the sizes it is the champion of; a champion file, and a
  best that champions no size, are compared by their geometric mean over all sizes against the
  geometric mean recorded in their own manifest entry. A number the manifest does not have is not
  compared (and the size row says so). On a CPU no speed is measured (Triton's interpreter times
  a Python loop): the report says speed needs a GPU.
- **Versions**: torch, Triton and CUDA now against the ones the export was verified with.

An op with exports only for other GPU types is ``skipped`` (a failure under ``strict``). A problem
that no longer loads, or whose reference cannot be built, is ``error`` (a failure).

``retune``: each op with a ``wrong`` or ``slower`` kernel is searched again (the settings' budget,
models or offline tuner), seeded with its exported ``best.py``, in a run database under
``runs_dir``; when the run finds a correct kernel (on a GPU: faster than the exported best measures
now, or any correct one when that best became wrong), it is exported into the op folder for this
GPU type, as ``kernelevo export`` would. The report still fails: the re-exported files are changes
for a person to review (CI opens a pull request with them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kernelevo.deploy.manifest import (
    CPU_KEY,
    MANIFEST,
    Export,
    KernelEntry,
    Manifest,
    ManifestError,
    gpu_keys,
    read_export,
)
from kernelevo.evaluate.verdict import Evaluation, Verdict, size_speedup
from kernelevo.settings import Settings

Status = Literal["ok", "wrong", "slower", "tampered", "error", "skipped"]
FAILING: frozenset[str] = frozenset({"wrong", "slower", "tampered", "error"})
REGRESSED: frozenset[str] = frozenset({"wrong", "slower"})  # what --retune searches again for
VERSION_KEYS = ("torch", "triton", "cuda")
DEFAULT_THRESHOLD = 0.10
CPU_SPEED_NOTE = "speed is not checked on a CPU (Triton's interpreter times a Python loop): run verify on the GPU"


class VerifyError(ValueError):
    """Bad input to verify (no such folder, no exports at all, a bad option); the message is one line."""


@dataclass(frozen=True)
class KernelCheck:
    op: str  # the op folder's name
    file: Path  # the kernel file checked (the op folder for a skipped op, the GPU folder when unreadable)
    status: Status
    detail: str  # one line, starting with what happened ("became wrong on size ...")
    sizes: list[dict[str, Any]] = field(default_factory=list)  # per size: errors, speedups now and exported

    @property
    def failed(self) -> bool:
        return self.status in FAILING

    @property
    def line(self) -> str:
        return f"{self.file}: {self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "file": str(self.file), "status": self.status, "detail": self.detail,
                "sizes": self.sizes}


@dataclass(frozen=True)
class VerifyReport:
    gpu_key: str
    device: str
    checks: list[KernelCheck]
    retuned: list[str] = field(default_factory=list)  # one line per re-exported op
    versions_changed: dict[str, dict[str, list[str | None]]] = field(default_factory=dict)  # op -> lib -> [then, now]
    versions: dict[str, str | None] = field(default_factory=dict)  # the libraries now
    notes: list[str] = field(default_factory=list)
    strict: bool = False
    threshold: float = DEFAULT_THRESHOLD

    @property
    def failures(self) -> list[KernelCheck]:
        return [c for c in self.checks if c.failed or (self.strict and c.status == "skipped")]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        """0: every checked kernel is still correct and not slower; 1: anything failed."""
        return 0 if self.ok else 1

    def lines(self) -> list[str]:
        """The report as printed: one line per kernel, then versions, retunes, notes and a summary."""
        out = [c.line for c in self.checks]
        for op, changed in self.versions_changed.items():
            out.append(f"{op}: exported with " + ", ".join(f"{lib} {then} → {now}" for lib, (then, now)
                                                            in changed.items()))
        out += [f"re-exported: {r}" for r in self.retuned]
        out += [f"note: {n}" for n in self.notes]
        counts: dict[str, int] = {}
        for c in self.checks:
            counts[c.status] = counts.get(c.status, 0) + 1
        tally = ", ".join(f"{n} {s}" for s, n in counts.items())
        verdict = "ok" if self.ok else f"FAILED ({len(self.failures)})"
        out.append(f"verify {verdict} for {self.gpu_key}: {tally or 'nothing checked'}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "exit_code": self.exit_code, "gpu_key": self.gpu_key, "device": self.device,
                "strict": self.strict, "threshold": self.threshold, "checks": [c.to_json() for c in self.checks],
                "retuned": self.retuned, "versions": self.versions, "versions_changed": self.versions_changed,
                "notes": self.notes}


# -- finding exports -------------------------------------------------------------------------

def _is_op_dir(d: Path) -> bool:
    return (d / "problem.py").is_file() and bool(gpu_keys(d))


def find_op_dirs(root: Path) -> list[Path]:
    """The op folders under ``root`` (or ``root`` itself when it is one): each holds ``problem.py``
    and at least one ``<gpu-key>/manifest.json``."""
    root = Path(root)
    if not root.exists():
        raise VerifyError(f"{root}: no such folder")
    if not root.is_dir():
        raise VerifyError(f"{root}: not a folder; give the export folder (kernels/) or one op's folder")
    if _is_op_dir(root):
        return [root]
    found = sorted({m.parent.parent for m in root.rglob(MANIFEST) if _is_op_dir(m.parent.parent)})
    if not found:
        raise VerifyError(f"{root}: no exported kernels here (an export is <op>/problem.py beside "
                          "<op>/<gpu-key>/manifest.json, as kernelevo export writes it)")
    return found


def machine_key(device: str) -> str:
    """The GPU type exports are looked up under: the GPU's key, or ``cpu``."""
    if device == "cuda":
        from kernelevo.profile.gpu import gpu_fingerprint

        return gpu_fingerprint().key
    return CPU_KEY


def _versions_now() -> dict[str, str | None]:
    from kernelevo.profile.gpu import software_fingerprint

    sw = software_fingerprint()
    return {k: getattr(sw, k) for k in VERSION_KEYS}


def _versions_changed(then: dict[str, Any], now: dict[str, str | None]) -> dict[str, list[str | None]]:
    return {k: [then.get(k), now.get(k)] for k in VERSION_KEYS if k in then and then.get(k) != now.get(k)}


# -- judging one kernel ----------------------------------------------------------------------

def _size_key(size: dict[str, Any]) -> str:
    return json.dumps(size, sort_keys=True, default=str)


def _label(size: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in size.items()) or "default"  # as Problem.label


def wrong_detail(ev: Evaluation, sizes: list[dict[str, Any]]) -> str:
    """"became wrong on size X: <reason>" when the judge's reason names a verified size, else the
    verdict and the reason (a compile error, a crash, the extra size outside the verified ones)."""
    reason = ev.reason or ev.verdict.value
    kind = "" if ev.verdict is Verdict.INCORRECT else f" ({ev.verdict.value})"
    for label in sorted((_label(s) for s in sizes), key=len, reverse=True):
        for sep in (", ", ": "):
            prefix = f"size {label}{sep}"
            if reason.startswith(prefix):
                return f"became wrong{kind} on size {label}: {reason[len(prefix):]}"
    return f"became wrong{kind}: {reason}"


def _ratio(new: float, old: float) -> str:
    return f"{new:.3g}x, was {old:.3g}x ({(new / old - 1) * 100:+.1f}%)"


def compare_speed(manifest: Manifest, entry: KernelEntry, ev: Evaluation,
                  threshold: float) -> tuple[list[dict[str, Any]], list[str], int]:
    """A correct GPU evaluation of ``entry``'s file against what the manifest recorded: (per-size
    rows, the regressions, one phrase each, how many numbers were compared). See the module
    docstring for what is compared."""
    measured = {_size_key(s.size): s for s in ev.sizes}
    is_best = entry.file == manifest.best.file
    per_size = set(entry.sizes) if is_best else set()
    rows: list[dict[str, Any]] = []
    slower: list[str] = []
    compared = 0
    for i, rec in enumerate(manifest.sizes):
        s = measured.get(_size_key(rec.get("size", {})))
        new = size_speedup(s) if s is not None else None
        old = rec.get("speedup") if i in per_size else None
        row = {"size": rec.get("size", {}), "speedup": new, "exported_speedup": old, "compared": False,
               "max_abs_err": s.max_abs_err if s else None, "max_rel_err": s.max_rel_err if s else None}
        if i in per_size:
            if old and new is not None:
                row["compared"] = True
                compared += 1
                if new < old * (1 - threshold):
                    slower.append(f"size {_label(row['size'])}: {_ratio(new, old)}")
            elif s is None:
                row["note"] = "not measured now"
            else:
                row["note"] = "no exported speedup to compare"
        rows.append(row)
    if not per_size:
        old, new = entry.speedup, ev.speedup
        if old and new is not None:
            compared += 1
            if new < old * (1 - threshold):
                slower.append(f"geometric mean over sizes: {_ratio(new, old)}")
    return rows, slower, compared


def judge_kernel(op: str, file: Path, manifest: Manifest, entry: KernelEntry, ev: Evaluation, measure_speed: bool,
                 threshold: float) -> KernelCheck:
    """The check of one kernel file from its fresh evaluation."""
    if not ev.ok:
        return KernelCheck(op, file, "wrong", wrong_detail(ev, [r.get("size", {}) for r in manifest.sizes]),
                           [{"size": s.size, "max_abs_err": s.max_abs_err, "max_rel_err": s.max_rel_err}
                            for s in ev.sizes])
    n = len(ev.sizes)
    if not measure_speed:
        rows = [{"size": s.size, "max_abs_err": s.max_abs_err, "max_rel_err": s.max_rel_err} for s in ev.sizes]
        return KernelCheck(op, file, "ok", f"ok: correct on {n} sizes (speed not checked: needs a GPU)", rows)
    rows, slower, compared = compare_speed(manifest, entry, ev, threshold)
    if slower:
        detail = f"became slower (by more than {threshold * 100:g}%) on " + "; ".join(slower)
        return KernelCheck(op, file, "slower", detail, rows)
    now = f" ({ev.speedup:.3g}x now)" if ev.speedup else ""
    if not compared:
        return KernelCheck(op, file, "ok", f"ok: correct on {n} sizes; the manifest records no speedup to compare "
                           f"with{now}", rows)
    what = "its geometric-mean speedup" if not any(r["compared"] for r in rows) else \
        f"its speedup on {compared} size{'s' if compared > 1 else ''}"
    return KernelCheck(op, file, "ok", f"ok: correct on {n} sizes, {what} within {threshold * 100:g}% of the "
                       f"export{now}", rows)


def _tampered(op: str, folder: Path, e: ManifestError) -> KernelCheck:
    head, sep, rest = str(e).partition(": ")
    file = Path(head) if sep and "/" in head else folder  # ManifestError names the file first
    return KernelCheck(op, file, "tampered", f"tampered or stale: {rest if file != folder else str(e)}")


# -- one op ----------------------------------------------------------------------------------

@dataclass
class _OpResult:
    checks: list[KernelCheck]
    export: Export | None = None
    problem: Any = None  # kernelevo.problem.Problem
    best_speedup_now: float | None = None  # the exported best's geometric mean as measured now (GPU)


def _verify_op(op_dir: Path, key: str, device: str, settings: Settings, threshold: float,
               progress: Callable[[str], None]) -> _OpResult:
    from kernelevo.candidate import Candidate
    from kernelevo.evaluate.evaluator import Evaluator
    from kernelevo.problem import ProblemError, load_problem

    op = op_dir.name
    folder = op_dir / key
    try:
        export = read_export(op_dir, key)
    except ManifestError as e:
        return _OpResult([_tampered(op, folder, e)])
    m = export.manifest
    try:
        problem = load_problem(export.problem_path, m.overrides, device=device)
    except ProblemError as e:
        return _OpResult([KernelCheck(op, folder / m.problem_file, "error", f"cannot be checked: {e}")], export)
    measure_speed = device == "cuda" and not m.correctness_only
    progress(f"building the reference of {op} ({len(problem.sizes)} sizes, on {device})")
    try:
        evaluator = Evaluator(problem, device, settings.eval)
    except ProblemError as e:
        return _OpResult([KernelCheck(op, folder, "error", f"cannot be checked: {e}")], export, problem)
    checks = []
    best_now = None
    with evaluator:
        for entry in m.entries:
            file = folder / entry.file
            progress(f"checking {file}")
            ev = evaluator.evaluate(Candidate.from_source(export.sources[entry.file], str(file)))
            checks.append(judge_kernel(op, file, m, entry, ev, measure_speed, threshold))
            if entry.file == m.best.file and ev.ok:
                best_now = ev.speedup
    return _OpResult(checks, export, problem, best_now)


# -- the gate --------------------------------------------------------------------------------

def verify_exports(root: Path, *, device: str | None = None, settings: Settings | None = None,
                   threshold: float = DEFAULT_THRESHOLD, strict: bool = False, retune: bool = False,
                   runs_dir: Path | None = None, progress: Callable[[str], None] | None = None) -> VerifyReport:
    """Judge every exported kernel under ``root`` for this machine's GPU type. Raises
    :class:`VerifyError` for bad input; every per-kernel outcome is in the report."""
    import torch

    if not 0 <= threshold < 1:
        raise VerifyError(f"--threshold must be at least 0 and below 1 (a fraction: 0.1 is 10%), got {threshold:g}")
    has_cuda = torch.cuda.is_available()
    device = device or ("cuda" if has_cuda else "cpu")
    if device not in ("cpu", "cuda"):
        raise VerifyError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not has_cuda:
        raise VerifyError("--device cuda: no CUDA device is visible to PyTorch")
    settings = settings or Settings()
    progress = progress or (lambda _text: None)
    op_dirs = find_op_dirs(Path(root))
    key = machine_key(device)
    now = _versions_now()
    checks: list[KernelCheck] = []
    changed: dict[str, dict[str, list[str | None]]] = {}
    notes: list[str] = []
    retuned: list[str] = []
    for op_dir in op_dirs:
        keys = gpu_keys(op_dir)
        if key not in keys:
            checks.append(KernelCheck(op_dir.name, op_dir, "skipped",
                                      f"skipped: no export for {key} (exports for: {', '.join(keys)})"))
            continue
        result = _verify_op(op_dir, key, device, settings, threshold, progress)
        checks += result.checks
        if result.export is not None:
            diff = _versions_changed(result.export.manifest.versions, now)
            if diff:
                changed[op_dir.name] = diff
        if retune and result.problem is not None and any(c.status in REGRESSED for c in result.checks):
            from kernelevo.deploy.retune import retune_op

            progress(f"retuning {op_dir.name} (budget {settings.search.budget})")
            line, note = retune_op(result, op_dir, key, device, settings, runs_dir or Path("runs"))
            if line:
                retuned.append(line)
            else:
                notes.append(note)
    if device == "cpu" and any(c.status != "skipped" for c in checks):
        notes.append(CPU_SPEED_NOTE)
    return VerifyReport(key, device, checks, retuned, changed, now, notes, strict, threshold)


def verify_command(root: Path, *, json_out: bool = False, echo: Callable[[str], None] = print,
                   echo_err: Callable[[str], None] | None = None, debug: bool = False, **options: Any) -> int:
    """What ``kernelevo verify`` does: run the gate, print the report (lines, or one JSON object),
    return the exit status: 0 all still correct and not slower, 1 any failure, 2 bad input (one line
    on ``echo_err``; with ``debug`` the exception is raised instead)."""
    import sys

    err = echo_err or (lambda text: print(text, file=sys.stderr))
    try:
        report = verify_exports(Path(root), **options)
    except VerifyError as e:
        if debug:
            raise
        err(f"kernelevo: {e}")
        return 2
    if json_out:
        echo(json.dumps(report.to_json(), default=str))
    else:
        for line in report.lines():
            echo(line)
    return report.exit_code


__all__ = ["FAILING", "KernelCheck", "VerifyError", "VerifyReport", "compare_speed", "find_op_dirs", "judge_kernel",
           "machine_key", "verify_command", "verify_exports", "wrong_detail"]
