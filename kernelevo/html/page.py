"""One self-contained HTML file of one or more runs: it opens with no network (plotly.js is inlined
once, no fonts or stylesheets are fetched), and every string from a run database is escaped, because
candidate sources and reasons are written by models nobody trusts."""

from __future__ import annotations

import difflib
import os
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from kernelevo import __version__
from kernelevo.html.charts import Chart, per_type_speedups, progress, run_charts
from kernelevo.html.data import CandidateRow, RunData, suite_row
from kernelevo.html.suite import share, times, yes_no

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1300px;
       padding: 1em 2em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-top: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #eee; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.reason { max-width: 46em; white-space: pre-wrap; word-break: break-word; }
pre { background: #f8f8f8; border: 1px solid #e4e4e4; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.note { color: #555; font-style: italic; } .meta th { background: none; width: 11em; }
.add { color: #116329; background: #e6ffec; display: block; } .del { color: #82071e; background: #ffebe9;
       display: block; } .hunk { color: #0550ae; display: block; }
.chart { margin: 1em 0 2em; } .verdict-correct { color: #2ca02c; font-weight: 600; }
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _speed(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}x"


def chart_html(chart: Chart) -> str:
    head = f'<section class="chart"><h3>{_e(chart.title)}</h3>'
    note = f'<p class="note">{_e(chart.note)}</p>' if chart.note else ""
    if chart.figure is None:
        return f'{head}<p class="note" id="{_e(chart.id)}">{_e(chart.note)}</p></section>'
    # plotly.js is in the page's head once; each figure only calls it.
    body = chart.figure.to_html(full_html=False, include_plotlyjs=False, div_id=chart.id, config=PLOTLY_CONFIG)
    # plotly's JSON writes < > / as \u escapes; were a plotly release not to, a model's reason in a
    # figure could close the script and run its own: refuse to write such a page rather than trust it.
    if body.lower().count("</script") != 1 or "<!--" in body:
        raise ValueError(f"chart {chart.id}: plotly left markup unescaped in the figure's data")
    return f"{head}{note}{body}</section>"


def _meta_table(run: RunData) -> str:
    m = run.meta
    gpu = m.gpu_key + (f" ({m.gpu_name})" if m.gpu_name else "")
    rows = [("database", m.path), ("problem", f"{m.problem} ({m.problem_path})" if m.problem_path else m.problem),
            ("overrides", ", ".join(f"{k}={v}" for k, v in m.overrides) or "none"), ("device", m.device),
            ("GPU", gpu), ("versions", ", ".join(f"{k} {v}" for k, v in m.versions) or "-"),
            ("strategy", m.strategy or "-"), ("created", _when(m.created)),
            ("judged", f"{len(run.candidates)} candidates, {_when(m.first_evaluated)} to {_when(m.last_evaluated)}"
                       + (f"; {run.pending} pending" if run.pending else "")),
            ("model cost", f"${run.cost_usd:.4f}")]
    if m.gpu_types:
        rows.insert(5, ("GPU types", ", ".join(m.gpu_types) + " (every candidate judged on each)"))
    return '<table class="meta">' + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def _best_line(run: RunData) -> str:
    best = run.best
    if best is None:
        return "<p><strong>No correct candidate.</strong></p>"
    if not run.speed_measured:
        what = "correct; no speed is measured on a CPU"
    else:
        what = f"{_speed(best.speedup)} vs eager" + (
            f", {_speed(best.speedup_compiled)} vs torch.compile" if best.speedup_compiled else "")
    return f"<p><strong>Winner: #{best.id}</strong> ({_e(what)}; {_e(best.made_by)}, cell {_e(best.cell or '-')})</p>"


def _best_per_type(run: RunData) -> str:
    head = ("GPU type", "best there", "vs eager", "vs torch.compile", "GPU key", "correct there",
            "verdict over all types")
    rows = []
    for t in run.gpu_types:
        judged = [r for r in run.per_type if r.gpu_type == t]
        best = run.best_on(t)
        key = best.gpu_key if best else next((r.gpu_key for r in judged), "-")
        overall = run.by_id(best.candidate) if best else None
        name = f"#{best.candidate}" if best else "none correct"
        rows.append(f"<tr data-type='{_e(t)}'><td>{_e(t)}</td><td>{name}</td>"
                    f"<td class='num'>{_speed(best.speedup if best else None)}</td>"
                    f"<td class='num'>{_speed(best.speedup_compiled if best else None)}</td><td>{_e(key)}</td>"
                    f"<td class='num'>{sum(r.correct for r in judged)}/{len(judged)}</td>"
                    f"<td>{_e(overall.verdict if overall else '-')}</td></tr>")
    what = ("on a CPU the first correct one there (no speed is measured)" if not run.speed_measured
            else "the fastest correct there by that type's own speedup")
    note = (f"Per type, {what}: what kernelevo export writes for that type's GPU key. The search ranked by the "
            "combined evaluation: correct on every type" + (", the geometric mean of the types' speedups."
                                                            if run.speed_measured else "."))
    return ("<h3>Best candidate per GPU type</h3><table class='per-type'><tr>" + "".join(f"<th>{h}</th>" for h in head)
            + "</tr>" + "".join(rows) + f"</table><p class='note'>{_e(note)}</p>")


def _verdicts_per_type(run: RunData) -> str:
    """Each candidate's verdict on each type: what a CPU run judged on several types establishes."""
    rows = []
    for c in run.candidates:
        mine = run.on_types(c.id)
        if not mine:
            continue
        cells = []
        for t in run.gpu_types:
            r = mine.get(t)
            why = f"<br><span class='note'>{_e(r.reason[:160])}</span>" if r and r.reason and not r.correct else ""
            cells.append(f"<td class='verdict-{_e(r.verdict)}'>{_e(r.verdict)}{why}</td>" if r else "<td>-</td>")
        rows.append(f"<tr data-candidate='{c.id}'><td class='num'>{c.id}</td>"
                    f"<td class='verdict-{_e(c.verdict)}'>{_e(c.verdict)}</td>{''.join(cells)}</tr>")
    head = ("#", "over all types", *run.gpu_types)
    return ("<h3>Verdicts per GPU type</h3><table class='per-type-verdicts'><tr>"
            + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>")


def _per_type_html(run: RunData, prefix: str) -> str:
    """A run judged on several GPU types: the best per type, and the types' speedups side by side (on a
    CPU, where nothing is timed, each candidate's verdict on each type instead)."""
    if not run.gpu_types:
        return ""
    parts = [_best_per_type(run), chart_html(per_type_speedups(run, prefix))]
    if not run.speed_measured:
        parts.append(_verdicts_per_type(run))
    return f'<section class="gpu-types" id="{prefix}gpu-types">{"".join(parts)}</section>'


def _diff_html(parent: CandidateRow, child: CandidateRow) -> str:
    lines = difflib.unified_diff(parent.source.splitlines(), child.source.splitlines(), f"#{parent.id}",
                                 f"#{child.id}", lineterm="")
    out = []
    for line in lines:
        cls = "hunk" if line.startswith("@@") else "add" if line.startswith("+") else \
            "del" if line.startswith("-") else ""
        out.append(f'<span class="{cls}">{_e(line)}</span>' if cls else _e(line) + "\n")
    return "<pre>" + ("".join(out) or "(the same source)") + "</pre>"


def _lineage_html(run: RunData, best: CandidateRow) -> str:
    chain = run.lineage(best.id)
    path = " → ".join(f"#{c.id} ({c.made_by}{', ' + _speed(c.speedup) if c.speedup else ''})" for c in chain)
    parts = [f"<h3>Lineage</h3><p>{_e(path)}</p>"]
    if chain[0].origin != "seed":
        parts.append(f'<p class="note">The chain starts at #{chain[0].id}, which has no parent in this run.</p>')
    if len(chain) == 1:
        parts.append('<p class="note">The winner has no parent: there is no diff to show.</p>')
    for i, (parent, child) in enumerate(zip(chain, chain[1:], strict=False)):
        opened = " open" if i == len(chain) - 2 else ""  # the step that made the winner, open
        summary = f"#{parent.id} → #{child.id}: {child.made_by}" + (f" — {child.note}" if child.note else "")
        parts.append(f"<details{opened}><summary>{_e(summary)}</summary>{_diff_html(parent, child)}</details>")
    return "".join(parts)


def _winner_html(run: RunData) -> str:
    best = run.best
    if best is None:
        return ""
    return (f"<h3>The winning kernel (#{best.id}, {_e(best.language)})</h3><pre>{_e(best.source)}</pre>"
            + _lineage_html(run, best))


def _candidates_table(run: RunData) -> str:
    head = ("#", "parent", "made by", "verdict", "speedup", "vs compile", "cell", "call $", "reason")
    rows = []
    for c in run.candidates:
        reason = c.reason or c.note or ""
        verdict = c.verdict + (" (hybrid)" if c.hybrid else "")
        rows.append(f"<tr><td class='num'>{c.id}</td><td class='num'>{c.parent_id or '-'}</td><td>{_e(c.made_by)}</td>"
                    f"<td class='verdict-{_e(c.verdict)}'>{_e(verdict)}</td><td class='num'>{_speed(c.speedup)}</td>"
                    f"<td class='num'>{_speed(c.speedup_compiled)}</td><td>{_e(c.cell or '-')}</td>"
                    f"<td class='num'>{c.cost_usd:.4f}</td><td class='reason'>{_e(reason)}</td></tr>")
    return ("<h3>Candidates, in the order they were judged</h3><table class='candidates'><tr>"
            + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>")


def run_section(run: RunData, index: int) -> str:
    prefix = f"run{index}-"
    title = f"{run.meta.problem} on {run.meta.device}"
    charts = "".join(chart_html(c) for c in run_charts(run, prefix))
    return (f'<section class="run" id="run{index}"><h2>{_e(title)}</h2>{_meta_table(run)}{_best_line(run)}'
            f"{_per_type_html(run, prefix)}{charts}{_winner_html(run)}{_candidates_table(run)}</section>")


def suite_section(runs: Sequence[RunData]) -> str:
    rows = [suite_row(r) for r in runs]
    head = ("problem", "device", "correct", "fast_1", "fast_1 vs torch.compile", "best", "best vs torch.compile",
            "evaluations", "dollars")
    body = "".join(
        f"<tr><td><a href='#run{i}'>{_e(r.problem)}</a></td><td>{_e(r.device)}</td><td>{yes_no(r.correct_found)}</td>"
        f"<td>{yes_no(r.fast_1)}</td><td>{yes_no(r.fast_1_compiled)}</td><td class='num'>{times(r.best_speedup)}</td>"
        f"<td class='num'>{times(r.best_compiled)}</td><td class='num'>{r.evaluations}</td>"
        f"<td class='num'>${r.dollars:.4f}</td></tr>" for i, r in enumerate(rows))
    total = (f"correct {sum(r.correct_found for r in rows)}/{len(rows)}, fast_1 {share(rows, 'fast_1')}, "
             f"fast_1 vs torch.compile {share(rows, 'fast_1_compiled')}, ${sum(r.dollars for r in rows):.4f}")
    charts = "".join(chart_html(c) for c in progress(runs, "suite-"))
    return (f'<section id="suite"><h2>Suite</h2><table class="suite"><tr>{"".join(f"<th>{h}</th>" for h in head)}'
            f"</tr>{body}</table><p>{_e(total)}</p>"
            + ('<p class="note">n/a: a CPU run measures no speed.</p>' if any(r.fast_1 is None for r in rows) else "")
            + f"{charts}</section>")


def render(runs: Sequence[RunData]) -> str:
    """The whole page. plotly.js is imported here, not at module load: it is megabytes."""
    from plotly.offline import get_plotlyjs

    problems = ", ".join(dict.fromkeys(r.meta.problem for r in runs))
    devices = ", ".join(dict.fromkeys(f"{r.meta.device} ({r.meta.gpu_key})" for r in runs))
    header = (f"<h1>kernelevo report: {_e(problems)}</h1><p>{len(runs)} run{'s' if len(runs) > 1 else ''} on "
              f"{_e(devices)} · made by kernelevo {_e(__version__)} on {_when(time.time())}</p>")
    sections = (suite_section(runs) if len(runs) > 1 else "") + "".join(run_section(r, i) for i, r in enumerate(runs))
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>kernelevo report: {_e(problems)}</title><style>{_CSS}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>{header}{sections}</body></html>\n")


def write_report(runs: Sequence[RunData], out: str | Path) -> Path:
    """Write the page to ``out`` whole or not at all (a half-written report never replaces a good one)."""
    out = Path(out)
    text = render(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
