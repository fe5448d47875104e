"""A suite of runs as one terminal table: which problems found a correct kernel, which beat eager
PyTorch and torch.compile (fast_1), at what speedup and cost. ``optimize`` prints it after a suite;
the HTML report shows the same rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # data imports this module: only the type is needed here
    from kernelevo.html.data import SuiteRow

NO_SPEED = "n/a"  # a CPU run measures no speed: neither yes nor no


def yes_no(v: bool | None) -> str:
    return NO_SPEED if v is None else "yes" if v else "no"


def times(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}x"


def share(rows: Sequence[SuiteRow], attr: str) -> str:
    """"2/3" over the rows where the question has an answer; "n/a" when none has."""
    known = [getattr(r, attr) for r in rows if getattr(r, attr) is not None]
    return f"{sum(known)}/{len(known)}" if known else NO_SPEED


def print_suite_table(rows: Sequence[SuiteRow], console: Console | None = None) -> None:
    console = console or Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)  # a log or a pipe has no width to keep to
    table = Table(title="suite", title_justify="left", box=None, padding=(0, 1))
    for col in ("problem", "device", "correct", "fast_1", "fast_1 compile", "best", "best compile", "evals", "cost"):
        table.add_column(col, justify="left" if col in ("problem", "device") else "right", no_wrap=True)
    for r in rows:
        table.add_row(r.problem, r.device, yes_no(r.correct_found), yes_no(r.fast_1), yes_no(r.fast_1_compiled),
                      times(r.best_speedup), times(r.best_compiled), str(r.evaluations), f"${r.dollars:.4f}")
    console.print(table)
    correct = sum(r.correct_found for r in rows)
    console.print(f"correct {correct}/{len(rows)}, fast_1 {share(rows, 'fast_1')}, fast_1 vs torch.compile "
                  f"{share(rows, 'fast_1_compiled')}, cost ${sum(r.dollars for r in rows):.4f}",
                  markup=False, highlight=False)
    if rows and all(r.fast_1 is None for r in rows):
        console.print("no speed on a CPU (Triton's interpreter): measure fast_1 on a GPU", markup=False,
                      highlight=False)
