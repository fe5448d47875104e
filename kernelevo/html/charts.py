"""The report's figures (plotly), each a ``Chart``: a figure, or a sentence when drawing one would mislead.

A CPU run measures no speed (Triton's interpreter times a Python loop), so every speed chart of such
a run is a sentence saying so, never bars of interpreter ratios. Text that came from the database
(reasons, model names, cell names) goes into figures as data: plotly's JSON escapes ``<`` and ``/``,
so it cannot end the script it is embedded in.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kernelevo.html.data import CandidateRow, RunData

NO_SPEED = ("No speed on a CPU: Triton's interpreter times a Python loop, not a GPU, so speedups are not "
            "measured and none is plotted. Run on a GPU to measure them.")
HEIGHT = 420
VERDICT_COLOURS = {"correct": "#2ca02c", "incorrect": "#d62728", "rejected": "#9467bd", "compile_error": "#ff7f0e",
                   "runtime_error": "#e6a700", "timeout": "#8c564b", "crash": "#7f7f7f"}
# Digits standing alone (sizes, errors, ids), not inside names like float32 or sm90.
_NUMBER = re.compile(r"(?<![\w.])(?:0x[0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")
REASON_CHARS = 110


@dataclass(frozen=True)
class Chart:
    id: str  # the figure's element id: the page links to it and tests find it by it
    title: str
    figure: go.Figure | None  # None: nothing honest to draw; ``note`` says why
    note: str = ""


def _layout(fig: go.Figure, **more: Any) -> go.Figure:
    # No title inside the figure: the page heads every chart, drawn or not, with the same <h3>.
    fig.update_layout(**{"template": "plotly_white", "height": HEIGHT, "margin": {"l": 60, "r": 30, "t": 30, "b": 60},
                         "legend": {"orientation": "h", "y": -0.2}, **more})
    return fig


def _times(v: float) -> str:
    return f"{v:.3g}x"


def _t(text: str, limit: int = 0) -> str:
    """Database text for a figure. plotly reads labels as a little HTML (<a href>, <b>, <br>) and
    decodes entities: escaped, a model's name shows as written and cannot become a link or markup."""
    if limit and len(text) > limit:
        text = text[:limit - 1] + "…"
    return escape(text, quote=False)


def reason_kind(reason: str) -> str:
    """A failure reason with its numbers cut, so the same failure at other sizes or draws counts once."""
    first = next((line.strip() for line in reason.splitlines() if line.strip()), "")
    text = _NUMBER.sub("N", first) or "(no reason given)"
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 1] + "…"


# -- progress ------------------------------------------------------------------------------------

def _best_so_far(cands: Sequence[CandidateRow]) -> list[float | None]:
    best: float | None = None
    out = []
    for c in cands:
        if c.correct and c.speedup is not None and (best is None or c.speedup > best):
            best = c.speedup
        out.append(best)
    return out


def _correct_so_far(cands: Sequence[CandidateRow]) -> list[int]:
    n, out = 0, []
    for c in cands:
        n += c.correct
        out.append(n)
    return out


def progress(runs: Sequence[RunData], prefix: str) -> list[Chart]:
    """The best speedup against evaluations and against dollars, a step line per run; on CPU runs,
    the count of correct kernels instead (it is what such a run establishes)."""
    timed = [r for r in runs if r.speed_measured]
    label = (lambda r: f"{r.meta.problem} ({r.meta.device})") if len(runs) > 1 else (lambda r: r.meta.problem)
    shown, ytitle, what = (timed, "best speedup vs eager", "Best speedup") if timed else \
        (list(runs), "correct candidates", "Correct candidates")
    skipped = [r.meta.problem for r in runs if not r.speed_measured] if timed else []
    note = NO_SPEED if not timed else (f"CPU runs not plotted (no speed measured): {', '.join(skipped)}."
                                       if skipped else "")
    charts = []
    for axis, xtitle, key in (("evals", "evaluations", None), ("dollars", "dollars spent on model calls", "usd")):
        title = f"{what} against {'evaluations' if key is None else 'dollars'}"
        cid = f"{prefix}progress-{axis}"
        if key == "usd" and not any(c.spent_usd > 0 for r in shown for c in r.candidates):
            charts.append(Chart(cid, title, None, "No dollars spent: the offline tuner or unpriced models wrote "
                                                  "every candidate, so there is no cost axis to draw."))
            continue
        fig = go.Figure()
        for r in shown:
            xs = list(range(1, len(r.candidates) + 1)) if key is None else [c.spent_usd for c in r.candidates]
            ys: Sequence[Any] = _best_so_far(r.candidates) if timed else _correct_so_far(r.candidates)
            hover = [f"#{c.id} {_t(c.verdict)}" for c in r.candidates]
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", line={"shape": "hv"}, name=_t(label(r)),
                                     hovertext=hover, hovertemplate="%{hovertext}<br>%{x}: %{y}<extra></extra>"))
        if timed:
            fig.add_hline(y=1.0, line_dash="dot", line_color="grey")
        charts.append(Chart(cid, title, _layout(fig, xaxis_title=xtitle, yaxis_title=ytitle,
                                                showlegend=len(runs) > 1), note))
    return charts


# -- the archive ----------------------------------------------------------------------------------

def split_cell(cell: str) -> tuple[str, str]:
    """(code descriptors, behaviour descriptors) of an archive cell name; behaviour starts at "wins:"."""
    parts = cell.split("|")
    at = next((i for i, p in enumerate(parts) if p.startswith("wins:")), len(parts))
    return "|".join(parts[:at]) or "-", "|".join(parts[at:]) or "-"


def archive_map(run: RunData, prefix: str) -> Chart:
    """The archive's cells on two axes, what the code is (rows) and how it behaves (columns)."""
    cid, title = f"{prefix}archive", "Archive cells: best speedup per cell"
    if not run.cells:
        why = f"strategy {run.meta.strategy}" if run.meta.strategy else "this run"
        return Chart(cid, title, None, f"No archive cells: {why} keeps no cells, or no candidate is correct yet.")
    rows = sorted({_t(split_cell(c.cell)[0]) for c in run.cells})
    cols = sorted({_t(split_cell(c.cell)[1]) for c in run.cells})
    z: list[list[float | None]] = [[None] * len(cols) for _ in rows]
    text: list[list[str]] = [[""] * len(cols) for _ in rows]
    hover: list[list[str]] = [[""] * len(cols) for _ in rows]
    for c in run.cells:
        code, beh = split_cell(c.cell)
        i, j = rows.index(_t(code)), cols.index(_t(beh))
        value = c.fitness if run.speed_measured else c.members
        z[i][j] = value
        text[i][j] = f"#{c.elite}" + (f" {_times(c.fitness)}" if c.fitness is not None else f" ({c.members})")
        hover[i][j] = f"{_t(c.cell)}<br>elite #{c.elite}, {c.members} correct placed here"
    if not run.speed_measured:
        title = "Archive cells: correct kernels per cell (no speed on a CPU)"
    fig = go.Figure(go.Heatmap(z=z, x=cols, y=rows, text=text, texttemplate="%{text}", hovertext=hover,
                               hovertemplate="%{hovertext}<extra></extra>", colorscale="Viridis",
                               colorbar={"title": {"text": "speedup" if run.speed_measured else "kernels"}}))
    height = max(HEIGHT, 160 + 40 * len(rows))
    axes = ("Rows: what the code is (language | kernels | loops | tl.dot | atomics | persistent | tile bin | warps "
            "bin); columns: how it behaves (sizes won | strongest size | roofline bin).")
    return Chart(cid, title, _layout(fig, height=height, xaxis_title="behaviour", yaxis_title="code"),
                 axes if run.speed_measured else f"{NO_SPEED} {axes}")


# -- per size ---------------------------------------------------------------------------------------

def size_speedups(run: RunData, prefix: str) -> Chart:
    """Per size: the best candidate and that size's champion, against eager and torch.compile."""
    cid, title = f"{prefix}sizes", "Per-size speedups: the best candidate and each size's champion"
    best = run.best
    if not run.speed_measured:
        return Chart(cid, title, None, NO_SPEED)
    if best is None:
        return Chart(cid, title, None, "No correct candidate: nothing to compare per size.")
    labels = [_t(s.label) for s in best.sizes]
    champs = run.champions()
    fig = go.Figure()
    fig.add_trace(go.Bar(x=labels, y=[s.speedup for s in best.sizes], name=f"best #{best.id} vs eager"))
    compiled = any(s.compiled_speedup for s in best.sizes)
    if compiled:
        fig.add_trace(go.Bar(x=labels, y=[s.compiled_speedup for s in best.sizes],
                             name=f"best #{best.id} vs torch.compile"))
    ids = [f"#{c.id}" if c else "-" for c in champs[:len(labels)]]
    pick = [c.sizes[i] if c and len(c.sizes) > i else None for i, c in enumerate(champs[:len(labels)])]
    fig.add_trace(go.Bar(x=labels, y=[p.speedup if p else None for p in pick], name="size champion vs eager",
                         hovertext=ids, hovertemplate="%{hovertext}: %{y:.3g}x<extra></extra>"))
    if compiled:
        fig.add_trace(go.Bar(x=labels, y=[p.compiled_speedup if p else None for p in pick],
                             name="size champion vs torch.compile", hovertext=ids,
                             hovertemplate="%{hovertext}: %{y:.3g}x<extra></extra>"))
    fig.add_hline(y=1.0, line_dash="dot", line_color="grey")
    note = "" if compiled else "No torch.compile baseline in this run (optimize --compile-baseline measures it)."
    return Chart(cid, title, _layout(fig, barmode="group", xaxis_title="size", yaxis_title="speedup"), note)


# -- per GPU type ------------------------------------------------------------------------------------

TOP_TYPED = 6  # candidates in the per-type chart


def per_type_speedups(run: RunData, prefix: str, top: int = TOP_TYPED) -> Chart:
    """A run judged on several GPU types (``--gpu-types``): the fastest correct candidates by the combined
    speedup, one bar group each, one bar per type with that type's own speedup against eager."""
    cid, title = f"{prefix}per-type", "Speedup per GPU type"
    if not run.speed_measured:
        return Chart(cid, title, None, NO_SPEED)
    best = run.top_correct(top)
    if not best:
        return Chart(cid, title, None, "No correct candidate: nothing to compare across GPU types.")
    labels = [f"#{c.id}" + (f" ({_times(c.speedup)})" if c.speedup else "") for c in best]
    fig = go.Figure()
    for t in run.gpu_types:
        mine = [run.on_types(c.id).get(t) for c in best]
        hover = [f"#{c.id} on {_t(t)}" + (" not judged" if r is None else f" ({_t(r.gpu_key)}): {r.verdict}" + (
            f", {_times(r.speedup)} vs eager" if r.speedup else "") + (
            f", {_times(r.speedup_compiled)} vs torch.compile" if r.speedup_compiled else ""))
            for c, r in zip(best, mine, strict=True)]
        fig.add_trace(go.Bar(x=labels, y=[r.speedup if r else None for r in mine], name=_t(t), hovertext=hover,
                             hovertemplate="%{hovertext}<extra></extra>"))
    fig.add_hline(y=1.0, line_dash="dot", line_color="grey")
    note = (f"The {len(best)} fastest correct candidates by the combined speedup (the geometric mean over the "
            "types, in brackets), each type's bar its own speedup against eager PyTorch there.")
    return Chart(cid, title, _layout(fig, barmode="group", xaxis_title="candidate (combined speedup)",
                                     yaxis_title="speedup vs eager"), note)


# -- roofline ---------------------------------------------------------------------------------------

def roofline(run: RunData, prefix: str) -> Chart:
    """The elites' achieved FLOP/s against the op's arithmetic intensity, under the calibrated roofs."""
    cid, title = f"{prefix}roofline", "Roofline of the elites"
    elites = [c for cell in run.cells if (c := run.by_id(cell.elite)) is not None] or \
        sorted(run.correct, key=lambda c: -(c.speedup or 0.0))[:20]
    points = [(c, s) for c in elites for s in c.sizes if s.intensity and s.tflops]
    if not points:
        return Chart(cid, title, None, "No GPU throughput recorded (a CPU run, or a GPU without a calibration: "
                                       "kernelevo calibrate measures one), so there is no roofline to draw.")
    fig = go.Figure()
    xs = [s.intensity or 0.0 for _, s in points]
    lo, hi = min(xs) / 10, max(xs) * 10
    if run.ceilings is not None:
        bw = run.ceilings.copy_bytes_per_s
        grid = [lo * (hi / lo) ** (k / 60) for k in range(61)]
        for dtype, peak in run.ceilings.flops_per_s:
            fig.add_trace(go.Scatter(x=grid, y=[min(peak, bw * x) for x in grid], mode="lines",
                                     line={"dash": "dash", "width": 1},
                                     name=f"{_t(dtype)} roof ({peak / 1e12:.3g} TFLOP/s, {bw / 1e9:.0f} GB/s)"))
    for c in dict.fromkeys(c for c, _ in points):
        mine = [s for d, s in points if d is c]
        fig.add_trace(go.Scatter(
            x=[s.intensity for s in mine], y=[(s.tflops or 0.0) * 1e12 for s in mine], mode="markers",
            marker={"size": 10}, name=f"#{c.id}" + (f" {_times(c.speedup)}" if c.speedup else ""),
            hovertext=[f"#{c.id} {_t(s.label)}: {s.gbps:.4g} GB/s, {s.tflops:.4g} TFLOP/s"
                       + (f", {s.roofline:.0%} of roof" if s.roofline is not None else "") for s in mine],
            hovertemplate="%{hovertext}<extra></extra>"))
    note = "" if run.ceilings else "No calibration recorded with these evaluations: roofs not drawn."
    return Chart(cid, title, _layout(fig, xaxis={"type": "log", "title": {"text": "arithmetic intensity "
                                     "(FLOP per byte)"}}, yaxis={"type": "log", "title": {"text": "achieved FLOP/s"}}),
                 note)


# -- verdicts and failures ----------------------------------------------------------------------------

def verdicts(run: RunData, prefix: str) -> Chart:
    cid, title = f"{prefix}verdicts", "Verdicts"
    counts = Counter(c.verdict for c in run.candidates)
    order = [v for v in VERDICT_COLOURS if v in counts] + sorted(v for v in counts if v not in VERDICT_COLOURS)
    fig = go.Figure(go.Bar(x=[_t(v) for v in order], y=[counts[v] for v in order], text=[counts[v] for v in order],
                           marker_color=[VERDICT_COLOURS.get(v, "#17becf") for v in order]))
    return Chart(cid, title, _layout(fig, xaxis_title="verdict", yaxis_title="candidates", showlegend=False))


def failures(run: RunData, prefix: str, top: int = 10) -> Chart:
    """The most common failure reasons, numbers cut so one failure at many sizes counts as one kind."""
    cid, title = f"{prefix}failures", "Most common failure reasons"
    kinds = Counter(reason_kind(c.reason or c.note or "") for c in run.candidates if not c.correct)
    if not kinds:
        return Chart(cid, title, None, "No failures: every judged candidate was correct.")
    common = kinds.most_common(top)[::-1]  # plotly draws horizontal bars bottom-up
    fig = go.Figure(go.Bar(x=[n for _, n in common], y=[_t(k) for k, _ in common], orientation="h",
                           text=[n for _, n in common], marker_color="#d62728"))
    height = max(HEIGHT, 120 + 36 * len(common))
    return Chart(cid, title, _layout(fig, height=height, xaxis_title="candidates", showlegend=False,
                                     yaxis={"automargin": True, "tickfont": {"size": 11}}))


# -- model usage ------------------------------------------------------------------------------------

def usage(run: RunData, prefix: str) -> Chart:
    cid, title = f"{prefix}usage", "Model calls, tokens and cost by model"
    if not run.usage:
        return Chart(cid, title, None, "No model calls: the offline tuner proposed every candidate.")
    names = [_t(u.model, 32) + ("" if u.priced else " (no price known)") for u in run.usage]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("calls", "tokens", "dollars"))
    fig.add_trace(go.Bar(x=names, y=[u.calls - u.failed_calls for u in run.usage], name="calls answered"), 1, 1)
    fig.add_trace(go.Bar(x=names, y=[u.failed_calls for u in run.usage], name="calls failed"), 1, 1)
    fig.add_trace(go.Bar(x=names, y=[u.tokens_in for u in run.usage], name="tokens in"), 1, 2)
    fig.add_trace(go.Bar(x=names, y=[u.tokens_out for u in run.usage], name="tokens out"), 1, 2)
    fig.add_trace(go.Bar(x=names, y=[u.cost_usd for u in run.usage], name="dollars",
                         text=[f"${u.cost_usd:.4f}" for u in run.usage]), 1, 3)
    fig.update_xaxes(tickangle=-20)
    return Chart(cid, title, _layout(fig, barmode="stack", height=HEIGHT + 60, legend={"orientation": "h", "y": -0.4},
                                     margin={"l": 60, "r": 30, "t": 60, "b": 90}))


def run_charts(run: RunData, prefix: str) -> list[Chart]:
    """Every chart of one run, in the order the page shows them."""
    return [*progress([run], prefix), archive_map(run, prefix), size_speedups(run, prefix), roofline(run, prefix),
            verdicts(run, prefix), failures(run, prefix), usage(run, prefix)]
