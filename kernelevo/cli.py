"""The ``kernelevo`` command line. Bad input ends with exit status 2 and one line on stderr."""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from kernelevo.settings import Settings, SettingsError

_D = Settings()  # the defaults --help names

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, rich_markup_mode=None,
                  context_settings={"max_content_width": 100})


EXIT_BAD_INPUT = 2  # bad input, or a model that cannot work at all (preflight)
EXIT_MODELS_FAILED = 3  # the run stopped because its models kept failing mid-run


def _fail(message: str, debug: bool) -> None:
    """Report bad input in one line and exit 2; with --debug, re-raise the cause instead."""
    if debug and sys.exc_info()[1] is not None:
        raise sys.exc_info()[1]
    typer.echo(f"kernelevo: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


class _Status:
    """What check is doing, on stderr, while it does it (a terminal's spinner; plain lines when
    asked for without a terminal); nothing when off."""

    def __init__(self, on: bool) -> None:
        self.on = on

    def step(self, text: str) -> Any:
        import contextlib

        if not self.on:
            return contextlib.nullcontext()
        from rich.console import Console

        console = Console(stderr=True)
        if not console.is_terminal:
            console.print(f"kernelevo: {text} ...", markup=False, highlight=False, soft_wrap=True)
            return contextlib.nullcontext()
        return console.status(text)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _version(value: bool) -> None:
    if value:
        from kernelevo import __version__

        typer.echo(f"kernelevo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
) -> None:
    """kernelevo: language models write GPU kernels; an honest evaluator judges them."""


@app.command()
def check(
    problem: Annotated[Path, typer.Argument(help="problem file (KernelBench format)")],
    candidates: Annotated[list[Path], typer.Argument(help="candidate files defining ModelNew")],
    device: Annotated[
        str | None, typer.Option(help="cpu (Triton interpreter) or cuda; default: cuda if present")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help=f"seconds per candidate (default {_D.eval.timeout_s:g})")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a problem global: name=value")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object per candidate per line")] = False,
    allow_tf32: Annotated[bool, typer.Option("--allow-tf32", help="allow TF32 in fp32 problems")] = False,
    allow_torch_compute: Annotated[bool, typer.Option(
        "--allow-torch-compute", help="judge hybrids (PyTorch doing real work beside own kernels), labelled hybrid")
    ] = False,
    seed: Annotated[int | None, typer.Option(
        help="seed for weights and draws (default: fresh per candidate, reported; pass it back to reproduce)")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML settings file")] = None,
    keep_jobs: Annotated[bool, typer.Option("--keep-jobs", help="keep each worker's folder")] = False,
    compile_baseline: Annotated[
        bool, typer.Option("--compile-baseline", help="also time the reference under torch.compile")
    ] = False,
    cuda_graph: Annotated[bool, typer.Option("--cuda-graph", help="time as CUDA-graph replays (tiny kernels)")] = False,
    ncu: Annotated[bool, typer.Option("--ncu", help="Nsight Compute on each correct candidate (GPU)")] = False,
    progress: Annotated[bool | None, typer.Option(
        "--progress/--no-progress", help="say what is running, on stderr (default: on a terminal)",
        show_default=False)] = None,
    debug: Annotated[bool, typer.Option("--debug", help="tracebacks for bad input")] = False,
) -> None:
    """Judge candidate kernels against a problem's reference: correctness on every size, then timing."""
    from kernelevo.candidate import Candidate, CandidateError
    from kernelevo.problem import ProblemError, load_problem, parse_override

    try:
        settings = Settings.load(config)
    except SettingsError as e:
        _fail(str(e), debug)
    debug = debug or settings.debug
    ev_settings = settings.eval
    changes = {"allow_tf32": allow_tf32 or ev_settings.allow_tf32, "keep_jobs": keep_jobs or ev_settings.keep_jobs,
               "allow_torch_compute": allow_torch_compute or ev_settings.allow_torch_compute,
               "compile_baseline": compile_baseline or ev_settings.compile_baseline,
               "cuda_graph": cuda_graph or ev_settings.cuda_graph}
    if timeout is not None:
        if timeout <= 0:
            _fail(f"--timeout must be positive, got {timeout:g}", debug)
        changes["timeout_s"] = timeout
    if seed is not None:
        if seed < 0:
            _fail(f"--seed must be 0 or more, got {seed}", debug)
        changes["seed"] = seed
    ev_settings = dataclasses.replace(ev_settings, **changes)

    dev = device or _default_device()
    if dev not in ("cpu", "cuda"):
        _fail(f"--device must be cpu or cuda, got {dev!r}", debug)
    if dev == "cuda" and _default_device() != "cuda":
        _fail("--device cuda: no CUDA device is visible to PyTorch", debug)

    try:
        overrides = dict(parse_override(s) for s in (set_ or []))
        prob = load_problem(problem, overrides, device=dev)
        cands = [Candidate.from_file(c) for c in candidates]
    except (ProblemError, CandidateError) as e:
        _fail(str(e), debug)

    from kernelevo.evaluate.evaluator import Evaluator
    from kernelevo.report import json_line, print_evaluations

    show_progress = progress if progress is not None else sys.stderr.isatty()
    status = _Status(show_progress)
    try:
        with status.step(f"building the reference of {prob.name} ({len(prob.sizes)} sizes, on {dev})"):
            evaluator = Evaluator(prob, dev, ev_settings)
    except ProblemError as e:
        _fail(str(e), debug)
    for warning in evaluator.reference.warnings:
        typer.echo(f"kernelevo: warning: {warning}", err=True)
    with evaluator:
        for i, cand in enumerate(cands, 1):
            with status.step(f"checking {cand.name} ({i}/{len(cands)})"):
                result = evaluator.evaluate(cand)
            if ncu and result.ok and dev == "cuda":
                from kernelevo.profile.finalist import with_ncu

                result = with_ncu(result, prob, cand.source, evaluator.settings.allow_tf32)
            if json_out:
                typer.echo(json_line(result))
            else:
                print_evaluations([result], problem=prob.name)


@app.command()
def optimize(
    problems: Annotated[
        list[Path], typer.Argument(help="problem file(s) (KernelBench format), or folder(s) of them: a suite")
    ],
    model: Annotated[
        str | None, typer.Option(help="cheap model, litellm name (default: none, the offline tuner)")
    ] = None,
    strong_model: Annotated[str | None, typer.Option(help="strong model, called rarely")] = None,
    api_base: Annotated[str | None, typer.Option(help="OpenAI-compatible server for the models")] = None,
    budget: Annotated[
        int | None, typer.Option(help="stop after this many candidates are evaluated, per problem "
                                      f"(default {_D.search.budget})")
    ] = None,
    suite_budget: Annotated[
        int | None, typer.Option(help="a suite's evaluations in all (default: --budget per problem)")
    ] = None,
    max_cost: Annotated[
        float | None, typer.Option(help="stop at this many dollars of model calls, a suite's in all (default: no "
                                        "limit)")
    ] = None,
    max_time: Annotated[float | None, typer.Option(help="stop after this many seconds (default: no limit)")] = None,
    db: Annotated[
        Path | None,
        typer.Option(help="run database; the same path resumes the run (default runs/<problem>-<device>.db; "
                          "for a suite, the folder of its databases, default runs/)"),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="cpu (Triton interpreter) or cuda (default: cuda if present)")
    ] = None,
    seed_kernel: Annotated[Path | None, typer.Option(help="starting kernel (default: the problem's seed.py)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a problem global: name=value")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML settings file")] = None,
    strategy: Annotated[
        str | None,
        typer.Option(help="search strategy: map-elites (quality-diversity), islands, adaptive, pareto, plan, or "
                          f"sample (the baseline); README: Writing a strategy (default {_D.search.strategy})"),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help=f"model calls in flight, at least one per worker "
                                      f"(default {_D.search.concurrency})")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="evaluations at once (default: one per visible GPU, or per core up to 8 on a "
                                      "CPU; with Ray, per GPU of the cluster)")
    ] = None,
    executor: Annotated[
        str | None, typer.Option(help=f"where evaluations run: local or ray (default {_D.execute.executor})")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (auto, ray://head:10001; default: start a local one)")
    ] = None,
    gpu_types: Annotated[
        str | None, typer.Option(help="with --executor ray: judge every candidate on each of these Ray "
                                      "accelerator types, comma-separated (H100,A100)")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help=f"seconds per candidate evaluation (default {_D.eval.timeout_s:g})")
    ] = None,
    compile_baseline: Annotated[
        bool, typer.Option("--compile-baseline", help="also time the reference under torch.compile")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="tracebacks for bad input")] = False,
) -> None:
    """Search for a faster kernel: models (or the offline tuner) propose, the evaluator judges, the archive keeps.
    Several problems (or a folder) make a suite: one database each, the workers and budgets shared."""
    from kernelevo.problem import ProblemError, parse_override

    try:
        settings = Settings.load(config)
        settings = settings.with_options("llm", model=model, strong_model=strong_model, api_base=api_base)
        settings = settings.with_options("search", budget=budget, max_cost_usd=max_cost, max_time_s=max_time,
                                         strategy=strategy, concurrency=concurrency)
        settings = settings.with_options("eval", timeout_s=timeout, compile_baseline=compile_baseline or None)
        settings = settings.with_options("execute", workers=workers, executor=executor, address=address,
                                         gpu_types=gpu_types)
    except SettingsError as e:
        _fail(str(e), debug)
    debug = debug or settings.debug
    s = settings.search
    wrong = [f"{flag} must be {rule}, got {value:g}" for flag, value, ok, rule in (
        ("--budget", s.budget, s.budget >= 1, "at least 1"),
        ("--suite-budget", suite_budget or 0, (suite_budget or 0) >= 0, "0 or more"),
        ("--concurrency", s.concurrency, s.concurrency >= 1, "at least 1"),
        ("--workers", settings.execute.workers, settings.execute.workers >= 0, "0 (automatic) or more"),
        ("--max-cost", s.max_cost_usd, s.max_cost_usd >= 0, "0 or more"),
        ("--max-time", s.max_time_s, s.max_time_s >= 0, "0 or more"),
        ("--timeout", settings.eval.timeout_s, settings.eval.timeout_s > 0, "more than 0"),
    ) if not ok]
    if wrong:
        _fail("; ".join(wrong), debug)
    from kernelevo import strategies
    from kernelevo.execute import EXECUTORS

    if settings.execute.executor not in EXECUTORS:
        _fail(f"--executor must be one of {', '.join(EXECUTORS)}, got {settings.execute.executor!r}", debug)
    if settings.execute.types and settings.execute.executor != "ray":
        _fail("--gpu-types needs --executor ray: one machine has one kind of GPU", debug)
    if strategies.ALIASES.get(s.strategy, s.strategy) not in strategies.REGISTRY:
        _fail(f"--strategy must be one of {', '.join(strategies.names())}, got {s.strategy!r}", debug)
    try:
        strategies.options(s.strategy, settings.strategy)
    except SettingsError as e:
        _fail(str(e), debug)
    from kernelevo.propose.models import CHOOSERS

    if settings.llm.chooser not in CHOOSERS:
        _fail(f"llm.chooser must be one of {', '.join(CHOOSERS)}, got {settings.llm.chooser!r}", debug)
    dev = device or _default_device()
    if dev not in ("cpu", "cuda") or (dev == "cuda" and _default_device() != "cuda" and
                                     settings.execute.executor != "ray"):
        _fail(f"--device {dev}: use cpu, or cuda on a machine with a CUDA device (or --executor ray)", debug)
    try:
        overrides = dict(parse_override(x) for x in (set_ or []))
    except ProblemError as e:
        _fail(str(e), debug)
    from kernelevo.suite import SuiteError, discover

    try:
        paths = discover(problems)
    except SuiteError as e:
        _fail(str(e), debug)
    suite = len(paths) > 1 or any(p.is_dir() for p in problems)
    if suite and seed_kernel is not None:
        _fail("--seed-kernel names one problem's seed: a suite takes each problem's own seed.py", debug)
    if not suite:
        _optimize_one(paths[0], settings, dev, db, seed_kernel, overrides, None, debug, "--db" not in sys.argv)
        return
    _optimize_suite(paths, settings, dev, db or Path("runs"), overrides, suite_budget or 0, debug)


def _optimize_one(path: Path, settings: Settings, dev: str, db_path: Path | None, seed_kernel: Path | None,
                  overrides: dict[str, Any], executor: Any, debug: bool, add_db: bool, suite: bool = False) -> Any:
    """One problem's run; returns its summary. In a suite (``suite``) a problem that cannot run
    is reported in one line and skipped (returns None); alone, it exits 2."""
    from kernelevo.problem import ProblemError, load_problem
    from kernelevo.run import RunError, open_run
    from kernelevo.store import StoreError

    def refuse(message: str) -> None:
        if not suite:
            _fail(message, debug)
        typer.echo(f"kernelevo: skipped: {message}", err=True)

    try:
        prob = load_problem(path, overrides, device=dev)
    except ProblemError as e:
        return refuse(str(e))
    seed_path = seed_kernel or (prob.path.parent / "seed.py")
    seed_source = None
    if seed_kernel is not None or seed_path.is_file():
        try:
            seed_source = seed_path.read_text()
        except OSError as e:
            return refuse(f"{seed_path}: cannot read the seed kernel ({type(e).__name__})")
    if not settings.llm.model and seed_source is None:
        return refuse(f"{prob.path}: no model set and no seed kernel to tune; give --model or --seed-kernel")
    db_path = db_path or Path("runs") / f"{prob.name}-{dev}.db"
    try:
        run = open_run(prob, dev, settings, db_path, seed_source, str(seed_path), executor)
    except (StoreError, RunError, ProblemError) as e:
        return refuse(str(e))
    resume = " ".join(shlex.quote(a) for a in ["kernelevo", *sys.argv[1:]])
    if add_db:
        resume += f" --db {shlex.quote(str(db_path.parent if suite else db_path))}"
    with run:
        statuses = [c.status for c in run.store.candidates()]
        if statuses:
            typer.echo(f"kernelevo: resuming {db_path}: {statuses.count('done')} evaluated, "
                       f"{statuses.count('pending')} pending", err=True)
        for warning in run.warnings:
            typer.echo(f"kernelevo: warning: {warning}", err=True)
        try:
            summary = run.search()
        except KeyboardInterrupt:
            typer.echo(f"kernelevo: interrupted; every judged candidate is saved. Resume with: {resume}", err=True)
            raise typer.Exit(130) from None
        if not suite:
            for note in run.executor.run_notes:
                typer.echo(f"kernelevo: note: {note}", err=True)
    from dataclasses import replace

    from kernelevo.report import print_summary

    print_summary(replace(summary, db=str(db_path)))
    if summary.models_failed:
        typer.echo("kernelevo: the run stopped because its models kept failing: check the key, the model name "
                   "and --api-base (the run resumes with the same --db)", err=True)
        raise typer.Exit(EXIT_MODELS_FAILED)
    return summary


def _optimize_suite(paths: list[Path], settings: Settings, dev: str, folder: Path, overrides: dict[str, Any],
                    suite_budget: int, debug: bool) -> None:
    """Problems one after another on one executor; a database per problem in ``folder``."""
    from kernelevo import execute
    from kernelevo.html.data import suite_rows
    from kernelevo.html.suite import print_suite_table
    from kernelevo.problem import ProblemError, load_problem
    from kernelevo.store import Store, StoreError
    from kernelevo.suite import db_name, share, with_share

    if folder.is_file():
        _fail(f"--db {folder}: a suite keeps one database per problem in a folder, and this is a file", debug)
    names: dict[Path, Path] = {}
    for p in paths:
        try:
            names[p] = folder / db_name(p, load_problem(p, overrides, device=dev).name, dev)
        except ProblemError as e:
            typer.echo(f"kernelevo: skipped: {e}", err=True)

    def spent() -> tuple[int, float]:
        done = cost = 0.0
        for d in names.values():
            if d.is_file():
                try:
                    with Store(d, readonly=True) as st:
                        done, cost = done + st.count_done(), cost + st.cost_usd()
                except StoreError:
                    pass
        return int(done), cost

    try:
        executor = execute.make(settings, dev)
    except ValueError as e:
        _fail(str(e), debug)
    typer.echo(f"kernelevo: suite of {len(names)} problems, {executor.describe()}", err=True)
    started = 0
    try:
        for p, d in names.items():
            done_total, cost_total = spent()
            here = here_cost = 0
            if d.is_file():
                with Store(d, readonly=True) as st:
                    here, here_cost = st.count_done(), st.cost_usd()
            sh = share(settings, here, done_total, cost_total, suite_budget)
            if sh is None:
                typer.echo(f"kernelevo: {p}: the suite's budget or cost cap is spent", err=True)
                continue
            started += 1
            typer.echo(f"kernelevo: [{started}/{len(names)}] {p}", err=True)
            _optimize_one(p, with_share(settings, sh, here_cost), dev, d, None, overrides, executor, debug,
                          "--db" not in sys.argv, suite=True)
    finally:
        notes = executor.run_notes
        executor.close()
    for note in notes:
        typer.echo(f"kernelevo: note: {note}", err=True)
    print_suite_table(suite_rows([d for d in names.values() if d.is_file()]))
    dbs = " ".join(shlex.quote(str(d)) for d in names.values() if d.is_file())
    typer.echo(f"kernelevo: report with: kernelevo report {dbs} --out report.html", err=True)


@app.command()
def show(
    db: Annotated[Path, typer.Argument(help="run database written by kernelevo optimize")],
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
    source: Annotated[str | None, typer.Option(
        "--source", help="print a candidate's source: 'best' or its id", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(
        help="write the candidate's source (--source, the best by default) to this file", show_default=False)] = None,
    debug: Annotated[bool, typer.Option("--debug", help="tracebacks for bad input")] = False,
) -> None:
    """Show a run: the best candidate, every candidate, archive cells, model calls, tokens and dollars."""
    import json

    from kernelevo.report import print_run, run_report
    from kernelevo.store import Store, StoreError

    try:
        with Store(db, readonly=True) as store:
            report = run_report(store)
    except StoreError as e:
        _fail(str(e), debug)
    if source is not None or out is not None:
        cands = {c["id"]: c for c in report["candidates"]}
        if source is None or source == "best":
            if report["best"] is None:
                _fail(f"{db}: no correct candidate yet; give --source ID to get any candidate's source", debug)
            cid = report["best"]["id"]
        elif source.lstrip("#").isdigit():
            cid = int(source.lstrip("#"))
        else:
            _fail(f"--source {source!r}: give 'best' or a candidate id", debug)
        if cid not in cands:
            _fail(f"{db}: no candidate #{cid} (the run has #{min(cands, default=0)}-#{max(cands, default=0)})", debug)
        text = cands[cid]["source"]
        if out is None:
            typer.echo(text, nl=False)
            return
        try:
            out.write_text(text)
        except OSError as e:
            _fail(f"{out}: cannot write ({e.strerror})", debug)
        typer.echo(f"candidate #{cid} written to {out}", err=True)
        return
    if json_out:
        typer.echo(json.dumps(report, default=str))
    else:
        print_run(report)


@app.command()
def export(
    db: Annotated[Path, typer.Argument(help="run database written by kernelevo optimize")],
    out: Annotated[Path | None, typer.Option(help="export folder (default kernels/<op>)", show_default=False)] = None,
    debug: Annotated[bool, typer.Option("--debug", help="tracebacks for bad input")] = False,
) -> None:
    """Write the run's best kernel and per-size champions for each GPU type they were measured on, with a manifest."""
    from kernelevo.deploy.export import ExportError, export_all
    from kernelevo.store import StoreError

    try:
        exported = export_all(db, out)
    except (ExportError, StoreError) as e:
        _fail(str(e), debug)
    for target, manifest in exported:  # one per GPU type the run was judged on
        what = "correctness only (a CPU run: no speed known)" if manifest.correctness_only else \
            f"best {manifest.best.speedup:.3g}x" if manifest.best.speedup else "best"
        typer.echo(f"exported #{manifest.best.candidate} ({what}) and {len(manifest.champions)} per-size champions "
                   f"to {target}")


@app.command()
def verify(
    root: Annotated[Path, typer.Argument(help="export folder, or one op's folder")] = Path("kernels"),
    device: Annotated[
        str | None, typer.Option(help="cpu (correctness only) or cuda; default: cuda if present")
    ] = None,
    threshold: Annotated[float, typer.Option(
        help="a speedup more than this fraction below the exported one fails (GPU)")] = 0.10,
    strict: Annotated[bool, typer.Option("--strict", help="an op with no export for this GPU type fails")] = False,
    retune: Annotated[bool, typer.Option(
        "--retune", help="search again from each regressed op's best kernel; re-export what is correct and faster")
    ] = False,
    runs_dir: Annotated[Path | None, typer.Option(
        help="folder for --retune's run databases (default runs/)", show_default=False)] = None,
    budget: Annotated[int | None, typer.Option(
        help=f"--retune: candidates per op (default {_D.search.budget})")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML settings file")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
    progress: Annotated[bool | None, typer.Option(
        "--progress/--no-progress", help="say what is running, on stderr (default: on a terminal)",
        show_default=False)] = None,
    debug: Annotated[bool, typer.Option("--debug", help="tracebacks for bad input")] = False,
) -> None:
    """Judge every exported kernel for this GPU type again; exit 1 when one became wrong or slower, 2 on bad input."""
    from kernelevo.deploy.verify import VerifyError, verify_exports

    try:
        settings = Settings.load(config).with_options("search", budget=budget)
    except SettingsError as e:
        _fail(str(e), debug)
    debug = debug or settings.debug
    if settings.search.budget < 1:
        _fail(f"--budget must be at least 1, got {settings.search.budget}", debug)
    show = progress if progress is not None else sys.stderr.isatty()
    say = (lambda text: typer.echo(f"kernelevo: {text} ...", err=True)) if show else None
    try:
        report = verify_exports(root, device=device, settings=settings, threshold=threshold, strict=strict,
                                retune=retune, runs_dir=runs_dir, progress=say)
    except VerifyError as e:
        _fail(str(e), debug)
    if json_out:
        import json

        typer.echo(json.dumps(report.to_json(), default=str))
    else:
        for line in report.lines():
            typer.echo(line)
    raise typer.Exit(report.exit_code)


@app.command()
def hotspots(
    model_file: Annotated[Path, typer.Argument(help="model file (Model, get_inputs, get_init_inputs)")],
    top: Annotated[int, typer.Option(help="how many hot ops to report and write")] = 5,
    out: Annotated[Path | None, typer.Option(
        help="write one problem folder per hot op here (out/<name>/problem.py)", show_default=False)] = None,
    device: Annotated[
        str | None, typer.Option(help="cpu or cuda, where the model is profiled (default: cuda if present)")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a model-file global: name=value")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="tracebacks for bad input")] = False,
) -> None:
    """Profile a model and rank its hot ops (modules, calls inside forwards, chains worth fusing); write problems."""
    from kernelevo.deploy.hotspots import HotspotError, find_hotspots, write_problems
    from kernelevo.problem import ProblemError, parse_override

    dev = device or _default_device()
    if dev not in ("cpu", "cuda") or (dev == "cuda" and _default_device() != "cuda"):
        _fail(f"--device {dev}: use cpu, or cuda on a machine with a CUDA device", debug)
    if top < 1:
        _fail(f"--top must be at least 1, got {top}", debug)
    try:
        overrides = dict(parse_override(x) for x in (set_ or []))
        found = find_hotspots(model_file, top=top, device=dev, overrides=overrides)
    except (ProblemError, HotspotError) as e:
        _fail(str(e), debug)
    written: list[Path] = []
    if out is not None:
        try:
            written = write_problems(list(found), out)
        except OSError as e:
            _fail(f"{out}: cannot write ({e.strerror})", debug)
    if json_out:
        import json

        typer.echo(json.dumps({"model_file": str(model_file), "device": dev, "total_ms": found.total_ms,
                               "hotspots": [h.to_json() for h in found], "skipped": list(found.skipped),
                               "written": [str(p) for p in written]}))
        return
    from kernelevo.report import print_hotspots

    print_hotspots(found, dev, written)


@app.command("bench-model")
def bench_model_command(
    model_file: Annotated[Path, typer.Argument(help="model file (Model, get_inputs, get_init_inputs)")],
    kernels: Annotated[list[Path] | None, typer.Option(
        help="an exported op folder (repeat for several; default every export under ./kernels)",
        show_default=False)] = None,
    device: Annotated[
        str | None, typer.Option(help="cpu (outputs only) or cuda (timed); default: cuda if present")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a model-file global: name=value")] = None,
    chains: Annotated[bool, typer.Option(
        "--chains", help="also swap fused chains inside nn.Sequential (indexing it then sees the fused output)")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="tracebacks for bad input")] = False,
) -> None:
    """Time a model end to end before and after patching in exported kernels (GPU); on a CPU, compare outputs."""
    dev = device or _default_device()
    if dev == "cpu":
        from kernelevo.settings import use_triton_interpreter

        use_triton_interpreter()  # CPU exports run in Triton's interpreter, which must be on before Triton loads
    from kernelevo.deploy.bench_model import BenchError, bench_model
    from kernelevo.deploy.patch import PatchError
    from kernelevo.problem import ProblemError, parse_override

    if dev not in ("cpu", "cuda") or (dev == "cuda" and _default_device() != "cuda"):
        _fail(f"--device {dev}: use cpu, or cuda on a machine with a CUDA device", debug)
    if kernels is not None:
        expanded: list[Path] = []
        for k in kernels:  # a folder of op folders counts as all of them
            subs = sorted(p for p in k.iterdir() if (p / "problem.py").is_file()) if k.is_dir() else []
            expanded.extend(subs if subs and not (k / "problem.py").is_file() else [k])
        kernels = expanded
    try:
        overrides = dict(parse_override(x) for x in (set_ or []))
        report = bench_model(model_file, kernels, device=dev, overrides=overrides, chains=chains)
    except (ProblemError, BenchError, PatchError) as e:
        _fail(str(e), debug)
    if json_out:
        import json

        typer.echo(json.dumps(dataclasses.asdict(report), default=str))
    else:
        from kernelevo.report import print_bench

        print_bench(report)
    if not report.outputs_match:
        raise typer.Exit(1)


@app.command()
def calibrate(
    root: Annotated[Path, typer.Option(help="folder for the calibration file")] = Path("profiling"),
    force: Annotated[bool, typer.Option("--force", help="measure again even if a calibration exists")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="tracebacks for bad input")] = False,
) -> None:
    """Measure this GPU's copy bandwidth and matrix FLOP/s; write profiling/<gpu-key>.json."""
    if _default_device() != "cuda":
        _fail("calibrate needs a CUDA GPU; none is visible to PyTorch", debug)
    import json

    from kernelevo.profile.calibrate import calibration_path, load, measure, save
    from kernelevo.profile.gpu import gpu_fingerprint

    key = gpu_fingerprint().key
    cal = None if force else load(key, root)
    if cal is None:
        cal = measure()
        save(cal, root)
    typer.echo(json.dumps({"path": str(calibration_path(key, root)), **cal.to_json()}, indent=1))


# Plain metavars for --help (typer would print its Python types: <list[Path]>, <bool>).
_METAVARS = {"set_": "NAME=VALUE", "candidates": "CANDIDATE", "problem": "PROBLEM", "db": "DB",
             "model": "PROVIDER/MODEL", "strong_model": "PROVIDER/MODEL", "api_base": "URL",
             "max_cost": "DOLLARS", "source": "best|ID", "root": "FOLDER", "runs_dir": "FOLDER",
             "model_file": "MODEL_FILE", "kernels": "FOLDER"}


@app.command()
def report(
    dbs: Annotated[list[Path], typer.Argument(help="run databases written by kernelevo optimize", metavar="DB")],
    out: Annotated[Path, typer.Option(help="the HTML file to write")] = Path("report.html"),
    debug: Annotated[bool, typer.Option("--debug", help="tracebacks for bad input")] = False,
) -> None:
    """Write one self-contained HTML page of runs (opens offline): progress, archive, per-size speed, kernels, cost."""
    from kernelevo.html.data import ReportError, load_run
    from kernelevo.store import StoreError

    try:
        runs = [load_run(db) for db in dbs]
    except (StoreError, ReportError) as e:
        _fail(str(e), debug)
    if out.is_dir():
        _fail(f"--out {out}: is a directory; give a file name such as {out / 'report.html'}", debug)
    from kernelevo.html.page import write_report

    try:
        write_report(runs, out)
    except OSError as e:
        _fail(f"--out {out}: cannot write ({e.strerror or type(e).__name__})", debug)
    typer.echo(str(out))


def _plain_help(command: Any) -> Any:
    """Plain metavars (FILE, N, SECONDS, TEXT) for --help; flags get none."""
    names = {int: "N", float: "NUMBER", str: "TEXT", Path: "FILE"}
    for cmd in getattr(command, "commands", {}).values() or [command]:
        for param in cmd.params:
            if getattr(param, "is_flag", False):
                continue
            desc = getattr(param, "type_descriptor", None)
            kind = getattr(desc, "annotation", None)
            label = _METAVARS.get(param.name) or names.get(kind)
            if kind is float and "second" in (getattr(param, "help", "") or ""):
                label = "SECONDS"
            if label:
                param.metavar = label
            if not hasattr(param, "is_flag"):  # an argument: its metavar says it all
                param.display_type = lambda ctx: ""  # type: ignore[method-assign]
    return command


def main() -> None:
    try:
        _plain_help(typer.main.get_command(app))()
    except KeyboardInterrupt:
        typer.echo("kernelevo: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
