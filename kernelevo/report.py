"""Rendering evaluations for people (a rich table) and for programs (one JSON object per line)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from kernelevo.evaluate.verdict import Evaluation, Verdict

_STYLE = {
    Verdict.CORRECT: "green",
    Verdict.INCORRECT: "red",
    Verdict.REJECTED: "magenta",
    Verdict.COMPILE_ERROR: "yellow",
    Verdict.RUNTIME_ERROR: "yellow",
    Verdict.TIMEOUT: "red",
    Verdict.CRASH: "red",
}


def json_line(ev: Evaluation) -> str:
    d = ev.to_json()
    d.pop("log", None)  # the worker's output can be long; it stays in the human report
    return json.dumps(d, default=str)


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.1f} µs" if v < 1 else f"{v:.3f} ms"


def print_evaluations(evals: Iterable[Evaluation], console: Console | None = None, problem: str = "") -> None:
    console = console or Console()
    for ev in evals:
        style = _STYLE[ev.verdict]
        head = f"[bold]{ev.candidate}[/bold]: [{style}]{ev.verdict.value}[/{style}]"
        if ev.speedup is not None:
            head += f"  speedup {ev.speedup:.3g}x ({ev.timing})"
        if ev.speedup_compiled is not None:
            head += f", {ev.speedup_compiled:.3g}x vs torch.compile"
        if ev.hybrid:
            head += f"  [yellow]hybrid: PyTorch did {ev.torch_share or 0:.0%} of the reference's work[/yellow]"
        console.print(head + (f"  [dim]{problem}[/dim]" if problem else ""))
        if ev.reason:
            console.print(f"  {ev.reason}", markup=False, highlight=False)
        if ev.sizes:
            timed = ev.timing != "cpu-interpreter"  # the interpreter's times are not speed: not shown
            table = Table(box=None, padding=(0, 2), show_edge=False)
            cols = ("size", "abs err", "rel err", *(("latency", "spread", "ref", "speedup") if timed else ()),
                    "launches")
            for col in cols:
                table.add_column(col, justify="left" if col == "size" else "right")
            for s in ev.sizes:
                timing = (_ms(s.latency_ms), "-" if s.latency_spread is None else f"{s.latency_spread:.1%}",
                          _ms(s.reference_ms), "-" if not s.speedup else f"{s.speedup:.3g}x") if timed else ()
                table.add_row(
                    ", ".join(f"{k}={v}" for k, v in s.size.items()) or "default",
                    "-" if s.max_abs_err is None else f"{s.max_abs_err:.2e}",
                    "-" if s.max_rel_err is None else f"{s.max_rel_err:.2e}",
                    *timing,
                    "-" if s.launches is None else str(s.launches),
                )
            console.print(table)
        if ev.profile_text:
            console.print("  " + ev.profile_text.replace("\n", "\n  "), markup=False, highlight=False)
        if ev.sizes and any(s.throttled for s in ev.sizes):
            console.print("  [red]the GPU reported thermal or power throttling during timing[/red]")
        for note in ev.notes:
            console.print(f"  [dim]note: {note}[/dim]")
        if ev.seed is not None and not ev.ok:
            console.print(f"  [dim]reproduce with --seed {ev.seed}[/dim]")
        if ev.error and ev.verdict in (Verdict.RUNTIME_ERROR, Verdict.COMPILE_ERROR, Verdict.CRASH):
            console.print("  " + ev.error.replace("\n", "\n  "), markup=False, highlight=False, style="dim")


# -- the search: live progress and the run table -------------------------------------------------


class Progress:
    """A live panel on a terminal; one plain line per candidate otherwise (logs, CI, pipes)."""

    def __init__(self, console: Console | None = None, problem: str = ""):
        self.console = console or Console(stderr=True)
        self.problem = problem
        self._live = None

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            from rich.live import Live

            self._live = Live(console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def __call__(self, e: Any) -> None:
        c = e.candidate
        verdicts = " ".join(f"{k}={v}" for k, v in sorted(e.verdicts.items()))
        best = "-" if e.best is None else f"{e.best:.3g}x"
        made = c.origin if c.model is None else f"{c.model} {c.prompt_kind}"
        parent = f" of #{c.parent_id}" if c.parent_id else ""
        speed = f" {c.speedup:.3g}x" if c.speedup else ""
        line = (f"[{e.evaluated}/{e.budget}] #{c.id} {c.verdict}{speed} ({made}{parent}) | best {best} | "
                f"${e.cost_usd:.4f} | cells {e.cells} | {verdicts}")
        if self._live is None:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
            return
        table = Table(box=None, show_header=False, padding=(0, 2))
        table.add_row("problem", self.problem)
        table.add_row("evaluated", f"{e.evaluated} / {e.budget}")
        table.add_row("verdicts", verdicts)
        table.add_row("best speedup", best)
        table.add_row("cost", f"${e.cost_usd:.4f}")
        table.add_row("archive cells", str(e.cells))
        table.add_row("last", line.split(" | ")[0])
        self._live.update(table)


def print_summary(summary: Any, console: Console | None = None) -> None:
    console = console or Console()
    if summary.best_id is None:
        best = "none correct"
    elif summary.speed_measured:
        best = f"#{summary.best_id} at {summary.best_speedup:.3g}x"
    else:
        best = f"#{summary.best_id} (correct; no speed on a CPU: measure it on a GPU)"
    console.print(f"stopped: {summary.stop_reason}", markup=False, highlight=False)
    console.print(f"evaluated {summary.evaluated}/{summary.budget}, best {best}, cells {summary.cells}, "
                  f"cost ${summary.cost_usd:.4f}, {summary.elapsed_s:.1f} s, {summary.workers} worker"
                  f"{'s' if summary.workers != 1 else ''} ({1 - summary.evaluator_idle:.0%} busy)"
                  + (f", {summary.lost_workers} lost and replaced (their candidates re-queued)"
                     if summary.lost_workers else ""), markup=False, highlight=False)
    if summary.db and summary.best_id is not None:
        console.print(f"the best kernel: kernelevo show {summary.db} --source best --out best_kernel.py", markup=False,
                      highlight=False, soft_wrap=True)


def run_report(store: Any) -> dict[str, Any]:
    """Everything ``kernelevo show`` prints, as one JSON-ready object."""
    meta = store.meta()
    cands = store.candidates()
    out = []
    for c in cands:
        out.append({
            "id": c.id, "parent_id": c.parent_id, "origin": c.origin, "model": c.model,
            "prompt_kind": c.prompt_kind, "status": c.status, "verdict": c.verdict, "reason": c.reason,
            "speedup": c.speedup, "cell": c.cell, "note": c.note, "language": c.language, "source": c.source,
            "sizes": c.evaluation.to_json()["sizes"] if c.evaluation else [],
            "seed": c.evaluation.seed if c.evaluation else None,
            "hybrid": bool(c.evaluation and c.evaluation.hybrid),
            "torch_share": c.evaluation.torch_share if c.evaluation else None,
        })
    correct = [d for d in out if d["verdict"] == "correct"]
    # On a CPU no candidate has a speedup: the first correct one stands for the run.
    best = max(correct, key=lambda d: (d["speedup"] or 0.0, -d["id"])) if correct else None
    return {
        "problem": meta.get("problem"), "problem_path": meta.get("problem_path"), "device": meta.get("device"),
        "overrides": meta.get("overrides", {}), "best": best,
        "cells": len((store.state("archive") or {}).get("cells", {})),
        "verdicts": store.verdict_counts(), "evaluated": store.count_done(),
        "pending": sum(1 for d in out if d["status"] == "pending"), "candidates": out, "llm": store.llm_usage(),
        "finalist_profile": meta.get("finalist"),
    }


def print_run(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    best = report["best"]
    console.print(f"[bold]{report['problem']}[/bold] on {report['device']}: {report['evaluated']} evaluated, "
                  f"{report['pending']} pending, {report['cells']} archive cells")
    if best:
        speed = f"{best['speedup']:.3g}x" if best["speedup"] else "correct (no speed on a CPU)"
        console.print(f"best: #{best['id']} {speed} ({best['model'] or best['origin']}, cell {best['cell']})",
                      markup=False, highlight=False)
    else:
        console.print("best: no correct candidate yet")
    table = Table(title="candidates", box=None, padding=(0, 2))
    for col in ("id", "parent", "made by", "verdict", "speedup", "cell", "reason"):
        table.add_column(col)
    for d in report["candidates"]:
        made = d["origin"] if not d["model"] else f"{d['model']} ({d['prompt_kind']})"
        verdict = (d["verdict"] or d["status"]) + (" (hybrid)" if d.get("hybrid") else "")
        table.add_row(str(d["id"]), str(d["parent_id"] or "-"), made, verdict,
                      f"{d['speedup']:.3g}x" if d["speedup"] else "-", d["cell"] or "-",
                      (d["reason"] or d["note"] or "")[:80])
    console.print(table)
    llm = report["llm"]
    t = Table(title="model calls", box=None, padding=(0, 2))
    for col in ("model", "calls", "failed", "tokens in", "tokens out", "cost"):
        t.add_column(col)
    for model, m in llm["by_model"].items():
        cost = f"${m['cost_usd']:.4f}" + ("" if m["priced"] else " (no price known)")
        t.add_row(model, str(m["calls"]), str(m["failed_calls"]), str(m["tokens_in"]), str(m["tokens_out"]), cost)
    console.print(t)
    console.print(f"total: {llm['calls']} calls, ${llm['cost_usd']:.4f}")


def print_hotspots(found: Any, device: str, written: list[Any], console: Console | None = None) -> None:
    """The ranked hot ops of a model: self time, share of a forward, where they run."""
    console = console or Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)  # module paths are long; a pipe has no width to keep to
    table = Table(title=f"hot ops ({device}; one forward {_ms(found.total_ms)})", title_justify="left")
    for col in ("#", "op", "kind", "calls", "self time", "share", "where"):
        table.add_column(col, justify="right" if col in ("#", "calls", "self time", "share") else "left",
                         no_wrap=col != "where")
    for i, h in enumerate(found, 1):
        where = h.where[0] + (f" (+{len(h.where) - 1} more)" if len(h.where) > 1 else "")
        table.add_row(str(i), h.name, h.kind, str(h.calls), _ms(h.self_ms), f"{h.share:.1%}", where)
    console.print(table)
    if device == "cpu":
        console.print("note: CPU times rank ops on this CPU; profile with --device cuda for the GPU's ranking",
                      markup=False, highlight=False, soft_wrap=True)
    for s in found.skipped:
        console.print(f"skipped: {s}", markup=False, highlight=False, soft_wrap=True)
    for path in written:
        console.print(f"wrote {path}  (kernelevo optimize {path})", markup=False, highlight=False, soft_wrap=True)


def print_bench(report: Any, console: Console | None = None) -> None:
    """A model before and after patching: whether outputs match, the speedup, each swap's part."""
    console = console or Console()
    say = lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    match = "outputs match" if report.outputs_match else f"OUTPUTS DIFFER: {report.mismatch}"
    say(f"{report.model_file} on {report.device}: {match} (max abs err {report.max_abs_err:.3g})")
    if report.speedup is not None:
        say(f"end to end: {_ms(report.original_ms)} -> {_ms(report.patched_ms)}, {report.speedup:.3g}x")
    for s in report.swaps:
        alone = f", {s.speedup_alone:.3g}x with only this op" if s.speedup_alone is not None else ""
        say(f"  swapped {s.where}: {s.what} -> {s.op} (kernel answered {s.kernel_calls}, "
            f"reference {s.reference_calls} calls per forward{alone})")
    for n in report.not_swapped:
        say(f"  not swapped {n}")
    for n in report.notes:
        say(f"note: {n}")
