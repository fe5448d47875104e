"""``kernelevo report``: run databases as one self-contained HTML page, the suite table, and the page in a
real browser. Real CPU runs (a scripted model on loopback, an offline ``optimize``) and a GPU-like run
written through the Store API come from the session fixture ``report_runs``."""

from __future__ import annotations

import math
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import replace
from html.parser import HTMLParser
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from kernelevo.evaluate.verdict import size_speedup
from kernelevo.html import charts
from kernelevo.html.data import load_run, print_suite_table, read_run, suite_row, suite_rows
from kernelevo.html.page import render, write_report
from kernelevo.store import Store
from tests.conftest import (
    CHROMIUM,
    CPU_TYPES,
    GPU_TYPES,
    ROOT,
    UNTRUSTED,
    distinct_colours,
    load_page,
    png_pixels,
    write_multi_type_run,
)

ESCAPED = "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;"
GPU_CHARTS = ("progress-evals", "progress-dollars", "archive", "sizes", "roofline", "verdicts", "failures", "usage")


class _Tags(HTMLParser):
    """Every start tag with its attributes; a script's text is data to the parser, never tags."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    p = _Tags()
    p.feed(html)
    return p.tags


class _Tables(HTMLParser):
    """The rows of every table of a class, each row its cells' text (a cell's markup dropped)."""

    def __init__(self, cls: str) -> None:
        super().__init__()
        self.cls, self.depth, self.rows = cls, 0, []  # depth: inside a wanted table
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.depth += self.depth > 0 or dict(attrs).get("class") == self.cls
        elif self.depth and tag == "tr":
            self.rows.append([])
        elif self.depth and tag in ("td", "th"):
            self.cell = []
        elif self.cell is not None and tag == "br":
            self.cell.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.depth:
            self.depth -= 1
        elif tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def _table(html: str, cls: str) -> list[list[str]]:
    """The rows (header first) of the tables of class ``cls`` in ``html``."""
    p = _Tables(cls)
    p.feed(html)
    return p.rows


def _section(html: str, run: str) -> str:
    start = html.index(f'<section class="run" id="{run}"')
    end = html.find('<section class="run"', start + 1)
    return html[start:end if end > 0 else len(html)]


def _drawn(html: str) -> list[str]:
    """Ids of the figures the page draws (plotly's divs)."""
    return [a["id"] or "" for t, a in _tags(html) if t == "div" and "plotly-graph-div" in (a.get("class") or "")]


@pytest.fixture(scope="module")
def typed_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Runs judged on two GPU types (``--gpu-types``): a GPU-like one and a CPU one (no speed)."""
    root = tmp_path_factory.mktemp("typed_runs")
    return {"gpu": write_multi_type_run(root / "typed-gpu.db", "cuda"),
            "cpu": write_multi_type_run(root / "typed-cpu.db", "cpu")}


@pytest.fixture(scope="module")
def page(report_runs: dict[str, Path], typed_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of all five runs, as the command writes it: run0 GPU-like, run1 and run2 on a CPU, run3
    and run4 judged on two GPU types (a GPU-like one, a CPU one)."""
    out = tmp_path_factory.mktemp("page") / "report.html"
    p = subprocess.run([sys.executable, "-m", "kernelevo", "report", str(report_runs["gpu"]), str(report_runs["llm"]),
                        str(report_runs["tuner"]), str(typed_runs["gpu"]), str(typed_runs["cpu"]), "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(out) and out.is_file()
    return out


# -- the data -----------------------------------------------------------------------------------------

def test_suite_rows_say_what_each_run_found(report_runs: dict[str, Path]) -> None:
    llm, tuner, gpu = suite_rows([report_runs["llm"], report_runs["tuner"], report_runs["gpu"]])
    assert (llm.problem, llm.device, llm.correct_found, llm.evaluations) == ("softmax_small", "cpu", True, 5)
    assert (tuner.problem, tuner.evaluations, tuner.correct_found, tuner.dollars) == ("softmax_small", 2, True, 0.0)
    for cpu in (llm, tuner):  # the interpreter measures no speed: no yes or no, no number
        assert cpu.fast_1 is None and cpu.fast_1_compiled is None and cpu.best_speedup is None
    assert gpu.fast_1 is True and gpu.fast_1_compiled is True and gpu.evaluations == 7
    assert gpu.best_speedup == pytest.approx(math.sqrt(1.9 * 1.6))  # #4, geometric mean over sizes
    assert gpu.best_compiled == pytest.approx(math.sqrt(1.3 * 1.05))
    assert gpu.dollars == pytest.approx(0.0001 + 0.01 * (2 + 3 + 4 + 5 + 7))  # the preflight call counts too

    out = StringIO()
    print_suite_table([llm, gpu], Console(file=out, width=200))
    text = out.getvalue()
    assert "softmax_small" in text and "matmul_synthetic" in text and "1.74x" in text and "n/a" in text
    assert "correct 2/2, fast_1 1/1, fast_1 vs torch.compile 1/1" in text


def test_a_gpu_run_with_nothing_correct_did_not_reach_fast_1(report_runs: dict[str, Path]) -> None:
    run = read_run(report_runs["gpu"])
    failed = replace(run, candidates=tuple(c for c in run.candidates if not c.correct))
    row = suite_row(failed)
    assert (row.correct_found, row.fast_1, row.fast_1_compiled, row.best_speedup) == (False, False, False, None)


def test_cpu_speeds_stay_unknown_though_interpreter_times_are_stored(report_runs: dict[str, Path]) -> None:
    run = read_run(report_runs["llm"])
    with Store(report_runs["llm"], readonly=True) as store:
        stored = next(c for c in store.candidates() if c.verdict == "correct")
    assert stored.evaluation and size_speedup(stored.evaluation.sizes[0]) is not None  # a ratio exists...
    assert not run.speed_measured
    assert all(s.speedup is None and s.compiled_speedup is None for c in run.candidates for s in c.sizes)  # ...unused
    stamps = [c.evaluated_at for c in run.candidates]
    assert None not in stamps and stamps == sorted(stamps)  # in the order they were judged
    assert run.cells and all(run.by_id(c.elite).correct and c.fitness is None for c in run.cells)
    assert {c.verdict for c in run.candidates} >= {"correct", "incorrect", "rejected"}


def test_gpu_data_champions_lineage_and_spending(report_runs: dict[str, Path]) -> None:
    run = read_run(report_runs["gpu"])
    assert run.speed_measured and run.best.id == 4
    assert [c.id if c else None for c in run.champions()] == [4, 6]
    assert [c.id for c in run.lineage(4)] == [1, 2, 4]
    assert [round(c.spent_usd, 4) for c in run.candidates] == [0.0001, 0.0201, 0.0501, 0.0901, 0.1401, 0.1401, 0.2101]
    assert run.ceilings is not None and run.ceilings.copy_bytes_per_s == 3.0e12
    assert run.meta.gpu_name == "NVIDIA H100 80GB HBM3"
    cells = {c.cell.split("|")[6]: c for c in run.cells}
    assert (cells["tile2"].elite, cells["tile2"].members) == (4, 2)  # the faster of #2 and #4 keeps the cell
    assert cells["tile2"].fitness == pytest.approx(math.sqrt(1.9 * 1.6))
    assert run.by_id(4).sizes[1].intensity == pytest.approx(4096 / 6, rel=1e-3)


def test_the_store_reads_judging_and_call_times(report_runs: dict[str, Path]) -> None:
    with Store(report_runs["gpu"], readonly=True) as store:
        judged, calls = store.judged_times(), store.call_times()
        done = [c.id for c in store.candidates("done")]
    assert sorted(judged) == done == list(range(1, 8))
    assert [d for _, d in calls] == pytest.approx([0.0001] + [0.01 * i for i in (2, 3, 4, 5, 7)])
    assert [t for t, _ in calls] == sorted(t for t, _ in calls)
    html = ROOT / "kernelevo" / "html"
    assert not [f.name for f in html.glob("*.py") if "._db" in f.read_text()]  # the Store's API, not its connection


def test_per_type_results_are_each_types_own(typed_runs: dict[str, Path], report_runs: dict[str, Path]) -> None:
    run = read_run(typed_runs["gpu"])
    assert run.speed_measured and run.gpu_types == ("H100", "A100")
    assert run.best.id == 2 and run.best.speedup == pytest.approx(math.sqrt(2.0 * 1.2))  # the combined ranking
    h100, a100 = run.best_on("H100"), run.best_on("A100")  # each type's own ranking: not the combined best
    assert (h100.candidate, h100.gpu_key) == (4, GPU_TYPES["H100"])
    assert (h100.speedup, h100.speedup_compiled) == pytest.approx((2.5, 1.7))
    assert (a100.candidate, a100.gpu_key) == (3, GPU_TYPES["A100"])
    assert (a100.speedup, a100.speedup_compiled) == pytest.approx((1.8, 1.25))
    four = run.on_types(4)
    assert (four["H100"].verdict, four["A100"].verdict) == ("correct", "incorrect")
    assert four["A100"].reason.startswith("size M=4096") and run.by_id(4).reason.startswith("on A100: size M=4096")
    assert run.on_types(6) == {} and run.by_id(6).verdict == "rejected"  # refused before any GPU judged it
    assert [(r.candidate, r.gpu_type) for r in run.per_type[:4]] == [(1, "H100"), (1, "A100"), (2, "H100"),
                                                                      (2, "A100")]
    assert [c.id for c in run.top_correct(2)] == [2, 3]

    cpu = read_run(typed_runs["cpu"])
    assert not cpu.speed_measured and cpu.gpu_types == tuple(CPU_TYPES)
    assert all(r.speedup is None and r.speedup_compiled is None for r in cpu.per_type)  # interpreter: no speed
    assert {t: r.verdict for t, r in cpu.on_types(4).items()} == {"typeA": "correct", "typeB": "incorrect"}
    assert cpu.best_on("typeA").candidate == cpu.best_on("typeB").candidate == 1  # no speed: the first correct

    single = read_run(report_runs["gpu"])  # one machine: nothing per type
    assert single.gpu_types == () and single.per_type == ()


def test_one_gpu_type_is_the_runs_own_evaluation(report_runs: dict[str, Path], tmp_path: Path) -> None:
    """``--gpu-types H100`` records no per-type rows: each evaluation is that type's, on the run's GPU."""
    db = tmp_path / "one-type.db"
    shutil.copy(report_runs["gpu"], db)
    with Store(db) as store:
        store.set_meta({"gpu_types": ["H100"]})
    run = read_run(db)
    assert run.gpu_types == ("H100",) and len(run.per_type) == 7
    best = run.best_on("H100")
    assert (best.candidate, best.gpu_key) == (4, "nvidia-h100-80gb-hbm3-sm90-132sm-80gib")
    assert best.speedup == pytest.approx(run.best.speedup) and best.speedup_compiled == run.best.speedup_compiled
    chart = charts.per_type_speedups(run, "x-").figure
    assert [t.name for t in chart.data] == ["H100"] and list(chart.data[0].x)[0].startswith("#4 ")


# -- the charts ------------------------------------------------------------------------------------------

def test_gpu_charts_plot_the_measured_numbers(report_runs: dict[str, Path]) -> None:
    run = read_run(report_runs["gpu"])
    evals, dollars = charts.progress([run], "x-")
    assert list(evals.figure.data[0].y) == pytest.approx([math.sqrt(0.8 * 0.9)] + [math.sqrt(1.3 * 1.2)] * 2
                                                         + [math.sqrt(1.9 * 1.6)] * 4)
    assert list(dollars.figure.data[0].x) == pytest.approx([c.spent_usd for c in run.candidates])
    sizes = charts.size_speedups(run, "x-").figure
    assert [t.name for t in sizes.data] == ["best #4 vs eager", "best #4 vs torch.compile", "size champion vs eager",
                                            "size champion vs torch.compile"]
    assert list(sizes.data[2].y) == [1.9, 1.8] and list(sizes.data[2].hovertext) == ["#4", "#6"]
    roof = charts.roofline(run, "x-").figure
    roofs = [t for t in roof.data if "roof" in t.name]
    assert len(roofs) == 4 and max(roofs[0].y) == pytest.approx(5.0e13)  # fp32's flat roof
    points = [t for t in roof.data if t.mode == "markers"]
    assert sorted(t.name.split()[0] for t in points) == ["#1", "#4", "#6"]  # one per archive cell
    heat = charts.archive_map(run, "x-").figure.data[0]
    assert max(v for row in heat.z for v in row if v is not None) == pytest.approx(math.sqrt(1.9 * 1.6))
    fails = charts.failures(run, "x-").figure.data[0]
    assert dict(zip(fails.y, fails.x, strict=True))["size M=N: N of N elements wrong"] == 2  # two sizes, one kind
    # plotly reads labels as a little HTML (links, <br>): database text goes in entity-escaped
    assert "line N: unexpected indent &lt;/script&gt;&lt;script&gt;alert(N)&lt;/script&gt;" in fails.y
    names = charts.usage(run, "x-").figure.data[0].x
    assert names[0].startswith("&lt;/script&gt;&lt;script&gt;") and names[0].endswith("…")


def test_the_per_type_chart_has_a_bar_per_type_for_each_top_candidate(typed_runs: dict[str, Path]) -> None:
    run = read_run(typed_runs["gpu"])
    chart = charts.per_type_speedups(run, "x-")
    assert (chart.id, chart.title) == ("x-per-type", "Speedup per GPU type")
    fig = chart.figure
    assert fig.layout.barmode == "group" and [t.type for t in fig.data] == ["bar", "bar"]
    h100, a100 = fig.data
    assert (h100.name, a100.name) == ("H100", "A100")
    groups = ["#2 (1.55x)", "#3 (1.41x)", "#1 (0.949x)"]  # correct over all types, by the combined speedup: not #4
    assert list(h100.x) == list(a100.x) == groups
    assert list(h100.y) == pytest.approx([2.0, 1.1, 1.0]) and list(a100.y) == pytest.approx([1.2, 1.8, 0.9])
    assert GPU_TYPES["A100"] in a100.hovertext[1] and "1.25x vs torch.compile" in a100.hovertext[1]
    assert list(charts.per_type_speedups(run, "x-", top=2).figure.data[0].x) == groups[:2]

    cpu = charts.per_type_speedups(read_run(typed_runs["cpu"]), "c-")
    assert cpu.figure is None and cpu.note == charts.NO_SPEED


def test_cpu_speed_charts_are_sentences(report_runs: dict[str, Path]) -> None:
    run = read_run(report_runs["llm"])
    by_id = {c.id: c for c in charts.run_charts(run, "c-")}
    for cid in ("c-sizes", "c-roofline"):
        assert by_id[cid].figure is None
    assert by_id["c-sizes"].note == charts.NO_SPEED and "roofline" in by_id["c-roofline"].note
    evals = by_id["c-progress-evals"]
    assert evals.title == "Correct candidates against evaluations" and evals.note == charts.NO_SPEED
    assert list(evals.figure.data[0].y) == [sum(c.correct for c in run.candidates[:i + 1])
                                            for i in range(len(run.candidates))]
    assert "no speed" in by_id["c-archive"].title  # the map counts kernels per cell instead


def test_reasons_group_when_only_their_numbers_differ() -> None:
    a = charts.reason_kind("size batch_size=5, dim=37: 184 of 185 elements outside atol=1.0e-04 (#12)")
    b = charts.reason_kind("size batch_size=3, dim=64: 2 of 192 elements outside atol=1e-05 (#7)\ntraceback...")
    assert a == b == "size batch_size=N, dim=N: N of N elements outside atol=N (#N)"
    assert charts.reason_kind("float32 on sm90 needs 0x1f") == "float32 on sm90 needs N"
    assert charts.reason_kind("") == "(no reason given)" and len(charts.reason_kind("x" * 500)) == charts.REASON_CHARS


# -- the page ------------------------------------------------------------------------------------------------

def test_the_page_has_the_suite_first_then_every_run(page: Path) -> None:
    html = page.read_text()
    assert html.index('id="suite"') < html.index('id="run0"') < html.index('id="run1"') < html.index('id="run2"')
    drawn = _drawn(html)
    assert {f"run0-{c}" for c in GPU_CHARTS} <= set(drawn)  # the GPU run: every chart drawn
    assert "suite-progress-evals" in drawn and "CPU runs not plotted (no speed measured): softmax_small" in html
    for cpu in ("run1", "run2"):
        assert f'<p class="note" id="{cpu}-sizes">No speed on a CPU' in html
        assert f"{cpu}-sizes" not in drawn and f"{cpu}-roofline" not in drawn
    assert '<p class="note" id="run2-usage">No model calls' in html  # the offline tuner's run
    for title in ("Best speedup against evaluations", "Per-size speedups", "Roofline of the elites", "Verdicts",
                  "Most common failure reasons", "Model calls, tokens and cost by model", "Archive cells"):
        assert f"<h3>{title}" in html
    rows = html[html.index("<table class=\"suite\">"):html.index("</table>", html.index("<table class=\"suite\">"))]
    assert rows.index("matmul_synthetic") < rows.index("softmax_small") and "1.74x" in rows and "n/a" in rows
    assert html.count("<td><a href='#run") == 5
    assert html.index('id="run2"') < html.index('id="run3"') < html.index('id="run4"')
    for single in ("run0", "run1", "run2"):  # one machine: no per-type section, table or chart
        assert "gpu-types" not in _section(html, single) and "GPU types" not in _section(html, single)


def test_a_multi_type_run_shows_the_best_per_type_and_their_speedups(page: Path) -> None:
    html = page.read_text()
    gpu, cpu = _section(html, "run3"), _section(html, "run4")
    assert _table(gpu, "meta")[5] == ["GPU types", "H100, A100 (every candidate judged on each)"]
    head, *rows = _table(gpu, "per-type")
    assert head == ["GPU type", "best there", "vs eager", "vs torch.compile", "GPU key", "correct there",
                    "verdict over all types"]
    assert rows == [["H100", "#4", "2.5x", "1.7x", GPU_TYPES["H100"], "4/5", "incorrect"],
                    ["A100", "#3", "1.8x", "1.25x", GPU_TYPES["A100"], "3/5", "correct"]]
    assert "run3-per-type" in _drawn(html) and "<h3>Speedup per GPU type</h3>" in gpu
    assert gpu.index("per-type") < gpu.index('id="run3-progress-evals"')  # next to the winner, before the charts
    assert "per-type-verdicts" not in gpu  # a GPU run draws the speeds instead

    head, *rows = _table(cpu, "per-type")
    assert rows == [["typeA", "#1", "-", "-", CPU_TYPES["typeA"], "4/5", "correct"],
                    ["typeB", "#1", "-", "-", CPU_TYPES["typeB"], "3/5", "correct"]]
    assert "run4-per-type" not in _drawn(html)
    assert f'<p class="note" id="run4-per-type">{charts.NO_SPEED[:20]}' in cpu.replace("&#x27;", "'")
    head, *rows = _table(cpu, "per-type-verdicts")
    assert head == ["#", "over all types", "typeA", "typeB"]
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]  # #6 was refused before any type judged it
    assert rows[3] == ["4", "incorrect", "correct", "incorrect | size M=4096: 9 of 16777216 elements wrong"]
    assert rows[4][2] == rows[4][3] == "compile_error | line 3: unexpected indent"


def test_the_winner_and_its_lineage_as_diffs(page: Path) -> None:
    html = page.read_text()
    section = html[html.index('id="run0"'):html.index('id="run1"')]
    assert "<h3>The winning kernel (#4, triton)</h3><pre>" in section
    assert "#1 (seed, 0.849x) → #2 (openai/cheap (improve), 1.25x) → #4 (openai/strong (improve), 1.74x)" in section
    assert section.count("<details") == 2 and "<details open><summary>#2 → #4" in section
    assert f'<span class="add">+import torch  # step 4 {ESCAPED}</span>' in section
    assert f'<span class="del">-import torch  # step 2 {ESCAPED}</span>' in section


def test_untrusted_text_is_escaped_everywhere(page: Path) -> None:
    html = page.read_text()
    assert UNTRUSTED not in html and "<script>alert" not in html
    assert ESCAPED in html  # in a source, a reason and a model's name
    assert f"line 12: unexpected indent {ESCAPED}" in html and f"<td>{ESCAPED} (improve)</td>" in html
    scripts = [t for t, _ in _tags(html) if t == "script"]
    assert len(scripts) == 1 + len(_drawn(html))  # plotly.js once, then one call per figure: nothing injected


def test_the_page_needs_no_network(page: Path) -> None:
    from plotly.offline import get_plotlyjs

    html = page.read_text()
    refs = [(t, k, v) for t, a in _tags(html) for k, v in a.items() if k in ("src", "href") and v]
    assert refs and all(v.startswith("#") for _, _, v in refs), refs  # only links within the page
    assert not any(t == "link" for t, _ in _tags(html))
    assert html.count(get_plotlyjs()[:400]) == 1  # plotly.js inlined once
    style = html[html.index("<style>"):html.index("</style>")]
    assert "url(" not in style and "@import" not in style


def test_render_of_one_run_has_no_suite(report_runs: dict[str, Path]) -> None:
    html = render([load_run(report_runs["llm"])])
    assert 'id="suite"' not in html and 'id="run0"' in html and "suite-progress" not in html


# -- the command --------------------------------------------------------------------------------------------

def test_bad_input_is_one_line_and_exit_2(report_runs: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE t (x)")
    empty_run = tmp_path / "empty_run.db"
    Store(empty_run).close()
    (tmp_path / "text.db").write_text("not a database\n")
    (tmp_path / "zero.db").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    cases = [([str(tmp_path / "missing.db")], "no such run database"),
             ([str(other)], "another program"),
             ([str(tmp_path / "text.db")], "not an SQLite file"),
             ([str(report_runs["gpu"]), str(empty_run)], "nothing to report"),
             ([str(tmp_path / "zero.db")], "an empty file"),
             ([str(report_runs["gpu"]), "--out", str(tmp_path / "folder")], "is a directory")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "kernelevo", "report", *args, *(
        () if "--out" in args else ("--out", str(tmp_path / "r.html")))], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env) for args, _ in cases]
    for p, (args, says) in zip(procs, cases, strict=True):
        out, err = p.communicate(timeout=120)
        assert p.returncode == 2, (args, err)
        assert err.count("\n") == 1 and err.startswith("kernelevo: ") and says in err, (args, err)
        assert out == ""
    assert not (tmp_path / "r.html").exists()  # nothing written for bad input


def test_write_report_replaces_a_file_whole(report_runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "deep" / "er" / "r.html"
    write_report([load_run(report_runs["tuner"])], out)
    assert out.read_text().startswith("<!DOCTYPE html>") and out.read_text().rstrip().endswith("</html>")
    assert [p.name for p in out.parent.iterdir()] == ["r.html"]  # no temporary file left behind


# -- a real browser -----------------------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)")


@needs_chromium
def test_the_page_draws_in_a_real_browser_without_console_errors(page: Path, tmp_path: Path) -> None:
    loaded = load_page(page, tmp_path / "report.png")
    assert loaded.console == ()
    drawn = _drawn(page.read_text())
    assert len(drawn) >= 12 and "run3-per-type" in drawn  # the grouped bars of a multi-type run too
    for cid in drawn:  # plotly replaced each empty div with its svg
        start = loaded.dom.index(f'id="{cid}"')
        end = loaded.dom.find("</section>", start)
        assert 'class="main-svg"' in loaded.dom[start:end], cid
    assert loaded.screenshot.stat().st_size > 10_000
    assert distinct_colours(loaded.screenshot) > 300  # charts, not a blank page


@needs_chromium
def test_the_browser_check_catches_errors_and_reads_the_screenshot(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    blocks = "".join(f'<div style="width:{w}px;height:50px;background:{c}"></div>'
                     for w, c in ((100, "#f00"), (150, "#0f0"), (200, "#00f")))
    bad.write_text(f'<!DOCTYPE html><html><body style="margin:0;background:#fff">{blocks}'
                   "<script>console.error('boom'); notDefined();</script></body></html>")
    loaded = load_page(bad, tmp_path / "bad.png", width=400, height=300)
    assert any("boom" in m for m in loaded.console)
    assert any("Uncaught ReferenceError: notDefined is not defined" in m for m in loaded.console)
    px = png_pixels(loaded.screenshot)  # the decoder reads what was drawn, pixel for pixel
    assert px.shape[:2] == (300, 400)
    assert [tuple(px[y, 10, :3]) for y in (10, 60, 110, 200)] == [(255, 0, 0), (0, 255, 0), (0, 0, 255),
                                                                   (255, 255, 255)]
    assert tuple(px[60, 149, :3]) == (0, 255, 0) and tuple(px[60, 150, :3]) == (255, 255, 255)
    assert distinct_colours(loaded.screenshot) == 4  # a near-blank page: what the drawn report must beat
