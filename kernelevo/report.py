"""Rendering evaluations for people (a rich table) and for programs (one JSON object per line)."""

from __future__ import annotations

import json
from collections.abc import Iterable

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
        console.print(head + (f"  [dim]{problem}[/dim]" if problem else ""))
        if ev.reason:
            console.print(f"  {ev.reason}", markup=False, highlight=False)
        if ev.sizes:
            table = Table(box=None, padding=(0, 2), show_edge=False)
            for col in ("size", "abs err", "rel err", "latency", "spread", "ref", "launches"):
                table.add_column(col, justify="left" if col == "size" else "right")
            for s in ev.sizes:
                table.add_row(
                    ", ".join(f"{k}={v}" for k, v in s.size.items()) or "default",
                    "-" if s.max_abs_err is None else f"{s.max_abs_err:.2e}",
                    "-" if s.max_rel_err is None else f"{s.max_rel_err:.2e}",
                    _ms(s.latency_ms),
                    "-" if s.latency_spread is None else f"{s.latency_spread:.1%}",
                    _ms(s.reference_ms),
                    "-" if s.launches is None else str(s.launches),
                )
            console.print(table)
        if ev.timing == "cpu-interpreter":
            console.print("  [dim]timed in Triton's interpreter on the CPU: not comparable with GPU timings[/dim]")
        if ev.error and ev.verdict in (Verdict.RUNTIME_ERROR, Verdict.COMPILE_ERROR, Verdict.CRASH):
            console.print("  " + ev.error.replace("\n", "\n  "), markup=False, highlight=False, style="dim")
