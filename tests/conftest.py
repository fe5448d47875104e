"""Shared fixtures. Without CUDA, Triton runs in its interpreter (set before Triton is imported)."""

from __future__ import annotations

import math
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _HAS_CUDA = False
if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
    from kernelevo.evaluate.interpreter import fix_numpy_scalars

    fix_numpy_scalars()  # Triton 3.6's interpreter under NumPy >= 2.4 (a no-op on Triton 3.9)

TESTS = Path(__file__).parent
PROBLEMS = TESTS / "problems"
CANDIDATES = TESTS / "candidates"
ROOT = TESTS.parent


def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def one_worker_by_default():
    """Runs in tests judge with one worker unless a test asks for more (tests/test_execute.py,
    tests/test_ray.py): evaluations then come in the order of proposals, which the resume and
    strategy tests check exactly, and no test pays for spawning workers it does not test."""
    import kernelevo.execute.local as local

    saved = local.default_workers
    local.default_workers = lambda device: 1 if device == "cpu" else saved(device)
    yield
    local.default_workers = saved


def close_all(evaluators) -> None:  # noqa: ANN001
    """Close evaluators side by side: each waits ~0.8 s for its zygote's interpreter to exit, and
    the session's dozens of them cost 24 s of CI time one after another."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda ev: ev.close(), evaluators))


@pytest.fixture(scope="session")
def evaluators():
    """One evaluator per test problem, shared by the session (each owns a warm zygote)."""
    from kernelevo.evaluate.evaluator import Evaluator
    from kernelevo.problem import load_problem
    from kernelevo.settings import EvalSettings

    made: dict[str, Evaluator] = {}

    def get(problem: str, **settings: object) -> Evaluator:
        key = f"{problem}:{sorted(settings.items())}"
        if key not in made:
            s = EvalSettings(**{"timeout_s": 60.0, **settings})  # type: ignore[arg-type]
            made[key] = Evaluator(load_problem(PROBLEMS / f"{problem}.py"), "cpu", s)
        return made[key]

    yield get
    close_all(made.values())


@pytest.fixture(scope="session")
def file_evaluators():
    """One evaluator per problem file (any path), shared by the session."""
    from kernelevo.evaluate.evaluator import Evaluator
    from kernelevo.problem import load_problem
    from kernelevo.settings import EvalSettings

    made: dict[str, Evaluator] = {}

    def get(path: Path) -> Evaluator:
        if str(path) not in made:
            made[str(path)] = Evaluator(load_problem(path), "cpu", EvalSettings(timeout_s=120.0))
        return made[str(path)]

    yield get
    close_all(made.values())


def make_export(root: Path, problem: Path, kernel: Path, budget: int = 1, device: str = "cpu") -> Path:
    """An export folder made the way a user makes one: an offline ``optimize`` run seeded with
    ``kernel`` (on a CPU: correctness only), then ``export``. Returns the op folder."""
    from kernelevo.deploy.export import export_run
    from kernelevo.problem import load_problem
    from kernelevo.run import open_run
    from kernelevo.settings import Settings

    name = problem.parent.name if problem.stem == "problem" else problem.stem  # as Problem.name says
    local = root / name / "problem.py"
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text(problem.read_text())
    settings = Settings().updated({"search": {"budget": budget}})
    with open_run(load_problem(local, device=device), device, settings, root / f"{name}.db", kernel.read_text(),
                  kernel.name) as run:
        run.search()
    target, _ = export_run(root / f"{name}.db", root / "kernels" / name)
    return target.parent


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> dict[str, Path]:
    """Three CPU exports: LayerNorm as a module, Linear+ReLU as a chain, softmax as a call."""
    root = tmp_path_factory.mktemp("exports")
    kernels = ROOT / "kernels"
    return {
        "ln": make_export(root, PROBLEMS / "layernorm_module.py", CANDIDATES / "layernorm_module_good.py"),
        "chain": make_export(root, PROBLEMS / "linear_relu_chain.py", CANDIDATES / "linear_relu_chain_good.py"),
        "softmax": make_export(root, kernels / "softmax/problem.py", kernels / "softmax/seed.py"),
    }


class RecordingSlot:
    """An executor slot that records the candidates that reached it and calls them correct (a GPU
    worker stand-in, for the stages before a worker)."""

    name = "gpu-0"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def info(self, spec):  # noqa: ANN001
        raise NotImplementedError

    def evaluate(self, spec, candidate):  # noqa: ANN001
        from kernelevo.evaluate.verdict import Evaluation, Verdict
        from kernelevo.execute.base import HostResult

        self.seen.append(candidate.name)
        return HostResult(Evaluation(candidate.name, Verdict.CORRECT, "", "cuda"), self.name, "gpu")

    def restart(self) -> None:
        pass

    def close(self) -> None:
        pass


def kill_when_judged(process, db: Path, at_least: int, timeout_s: float = 120.0) -> int:  # noqa: ANN001
    """Wait until ``at_least`` candidates in ``db`` are judged, then SIGKILL ``process``'s group (a
    run killed mid-flight, as a crash or an OOM kill leaves it). Returns the count seen."""
    import signal
    import sqlite3
    import time

    deadline, done = time.monotonic() + timeout_s, 0
    while time.monotonic() < deadline and process.poll() is None and done < at_least:
        if db.exists():
            with sqlite3.connect(db) as con:
                try:
                    done = con.execute("SELECT COUNT(*) FROM candidates WHERE status='done'").fetchone()[0]
                except sqlite3.OperationalError:  # the schema is still being written
                    done = 0
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()[1]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return done


# -- run databases for the HTML report ----------------------------------------------------------------

UNTRUSTED = "</script><script>alert(1)</script>"  # what a model may write into a kernel, a reason, a name


def _gpu_eval(cid: int, verdict: str, reason: str, per_size: list[tuple[float, float, float]]) -> Any:
    """An evaluation as a GPU run stores it; per size: (speedup, compiled speedup, achieved TFLOP/s)."""
    from kernelevo.evaluate.verdict import Evaluation, SizeResult, Verdict

    ceilings = {"key": "nvidia-h100-80gb-hbm3-sm90-132sm-80gib", "copy_bytes_per_s": 3.0e12,
                "flops_per_s": {"fp32": 5.0e13, "tf32": 3.8e14, "bf16": 7.5e14, "fp16": 7.5e14}}
    sizes = tuple(SizeResult({"M": m, "N": m, "K": m}, 1e-6, 1e-5, latency_ms=2 * m ** 3 / (t * 1e12) * 1e3,
                             reference_ms=1.0, launches=1, gbps=round(t * 1e12 / (m / 6) / 1e9, 3), tflops=t,
                             roofline=t * 1e12 / 3.8e14, speedup=s, compiled_speedup=cs, blocks=5)
                  for (s, cs, t), m in zip(per_size, (1024, 4096), strict=False))
    ok = verdict == "correct"
    geo = (lambda i: math.exp(sum(math.log(p[i]) for p in per_size) / len(per_size))) if ok else (lambda i: None)
    return Evaluation(f"#{cid}", Verdict(verdict), reason, "cuda", "cuda-events" if ok else None,
                      sizes if ok else (), geo(0), speedup_compiled=geo(1),
                      profile={"ceilings": ceilings, "gpu": {"name": "NVIDIA H100 80GB HBM3"}} if ok else None)


def write_gpu_like_run(db: Path) -> Path:
    """A run database as a GPU run leaves it (speedups against eager and torch.compile, roofline facts,
    the calibration's ceilings, priced model calls), written through the Store API: the report's speed
    charts are checked without a GPU. #4 is the best; #6 is the champion of the second size."""
    from kernelevo.candidate import Candidate, source_digest
    from kernelevo.store import CallRecord, Store

    base = (CANDIDATES / "matmul_good.py").read_text()
    cell = "triton|k1|loop1|dot|-|-|tile{}|w1|wins:{}|strong{}|roof2"
    plan = [  # parent, origin, model, verdict, reason, per size (speedup, vs compile, TFLOP/s), cell
        (None, "seed", None, "correct", "", [(0.8, 0.6, 90.0), (0.9, 0.7, 120.0)], cell.format(1, "00", 1)),
        (1, "llm", "openai/cheap", "correct", "", [(1.3, 0.9, 140.0), (1.2, 0.95, 160.0)], cell.format(2, "11", 0)),
        (2, "llm", "openai/cheap", "incorrect", "size M=1024: 17 of 1048576 elements wrong", [], None),
        (2, "llm", "openai/strong", "correct", "", [(1.9, 1.3, 200.0), (1.6, 1.05, 230.0)], cell.format(2, "11", 0)),
        (4, "llm", UNTRUSTED, "compile_error", f"line 12: unexpected indent {UNTRUSTED}", [], None),
        (4, "tuner", None, "correct", "", [(1.1, 0.8, 120.0), (1.8, 1.2, 260.0)], cell.format(0, "11", 1)),
        (4, "llm", "openai/cheap", "incorrect", "size M=4096: 3 of 16777216 elements wrong", [], None),
    ]
    with Store(db) as store:
        store.set_meta({"problem": "matmul_synthetic", "problem_digest": "0" * 16, "overrides": {}, "device": "cuda",
                        "problem_path": "problems/matmul.py", "kernelevo": "0.1.0", "created": time.time(),
                        "gpu_key": "nvidia-h100-80gb-hbm3-sm90-132sm-80gib",
                        "versions": {"torch": "2.9.0+cu128", "triton": "3.5.0", "cuda": "12.8", "driver": "570.1"}})
        store.add_call(CallRecord("openai/cheap", "preflight", "preflight", 1, 1, 0.0001, True, 0.1, 1))
        for i, (parent, origin, model, verdict, reason, per_size, where) in enumerate(plan, 1):
            call = None if model is None else store.add_call(CallRecord(
                model, "strong" if "strong" in model else "cheap", "improve", 4000 * i, 900, 0.01 * i, True, 2.0, 1))
            source = base if i == 1 else base.replace("import torch", f"import torch  # step {i} {UNTRUSTED}", 1)
            cand = Candidate(source, f"#{i}", parent_id=parent, model=model, prompt_kind=model and "improve")
            cid = store.add_candidate(cand, origin, source_digest(source), call)
            store.record_evaluation(cid, _gpu_eval(cid, verdict, reason, per_size), where, {})
    return db


GPU_TYPES = {"H100": "nvidia-h100-80gb-hbm3-sm90-132sm-80gib", "A100": "nvidia-a100-sxm4-80gb-sm80-108sm-80gib"}
CPU_TYPES = {"typeA": "cpu-typea", "typeB": "cpu-typeb"}


def write_multi_type_run(db: Path, device: str = "cuda") -> Path:
    """A run judged on two GPU types (``--gpu-types H100,A100``; on a CPU ``typeA,typeB``), written through
    the Store API as the search writes it: each type's own evaluation and their combination
    (``kernelevo.execute.base.combine``). Per type, (speedup, vs torch.compile):
    #1 seed    H100 (1.0, 0.7)   A100 (0.9, 0.6)    combined sqrt(0.9)
    #2         H100 (2.0, 1.4)   A100 (1.2, 0.8)    combined sqrt(2.4): the run's best
    #3         H100 (1.1, 0.75)  A100 (1.8, 1.25)   combined sqrt(1.98): the A100's best
    #4         H100 (2.5, 1.7)   A100 incorrect     combined incorrect: the H100's best all the same
    #5         a compile error on both; #6 refused before any GPU (no per-type rows).
    On a CPU the same verdicts with the interpreter's timings and no speed."""
    import dataclasses

    from kernelevo.candidate import Candidate, source_digest
    from kernelevo.evaluate.verdict import Evaluation, Verdict
    from kernelevo.execute.base import combine
    from kernelevo.store import CallRecord, Store

    cpu = device == "cpu"
    types = CPU_TYPES if cpu else GPU_TYPES
    first, second = types

    def judged(cid: int, verdict: str, reason: str, speed: tuple[float, float] | None) -> Evaluation:
        ev = _gpu_eval(cid, verdict, reason, [(speed[0], speed[1], 100.0 * speed[0])] * 2 if speed else [])
        if not cpu:
            return ev
        sizes = tuple(dataclasses.replace(s, speedup=None, compiled_speedup=None, gbps=None, tflops=None,
                                          roofline=None) for s in ev.sizes)
        return dataclasses.replace(ev, device="cpu", timing="cpu-interpreter" if ev.ok else None, sizes=sizes,
                                   speedup=None, speedup_compiled=None, profile=None)

    wrong = "size M=4096: 9 of 16777216 elements wrong"
    indent = "line 3: unexpected indent"
    plan = [  # parent, origin, model, per type: (verdict, reason, (speedup, vs compile))
        (None, "seed", None, [("correct", "", (1.0, 0.7)), ("correct", "", (0.9, 0.6))]),
        (1, "llm", "openai/cheap", [("correct", "", (2.0, 1.4)), ("correct", "", (1.2, 0.8))]),
        (1, "llm", "openai/cheap", [("correct", "", (1.1, 0.75)), ("correct", "", (1.8, 1.25))]),
        (2, "llm", "openai/strong", [("correct", "", (2.5, 1.7)), ("incorrect", wrong, None)]),
        (2, "llm", "openai/cheap", [("compile_error", indent, None)] * 2),
        (3, "llm", "openai/cheap", None),
    ]
    base = (CANDIDATES / "matmul_good.py").read_text()
    with Store(db) as store:
        store.set_meta({"problem": "matmul_typed", "problem_digest": "1" * 16, "overrides": {}, "device": device,
                        "problem_path": "problems/matmul.py", "kernelevo": "0.1.0", "created": time.time(),
                        "gpu_key": types[first], "gpu_types": list(types),
                        "versions": {"torch": "2.9.0+cu128", "triton": "3.5.0"}})
        for i, (parent, origin, model, per) in enumerate(plan, 1):
            call = None if model is None else store.add_call(CallRecord(
                model, "strong" if "strong" in model else "cheap", "improve", 1000 * i, 500, 0.001 * i, True, 1.0, 1))
            source = base if i == 1 else base.replace("import torch", f"import torch  # typed step {i}", 1)
            cand = Candidate(source, f"#{i}", parent_id=parent, model=model, prompt_kind=model and "improve")
            if per is None:  # refused before the evaluator: no type judged it
                store.add_candidate(cand, origin, source_digest(source), call, evaluation=Evaluation(
                    "proposal", Verdict.REJECTED, "identical to candidate #1, which was already evaluated", device=""))
                continue
            cid = store.add_candidate(cand, origin, source_digest(source), call)
            evs = [(t, judged(cid, v, r, x)) for t, (v, r, x) in zip(types, per, strict=True)]
            store.record_evaluation(cid, combine(evs), None, {},
                                    per_type=tuple((t, f"ray:{t}", types[t], ev) for t, ev in evs))
    return db


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run databases for ``kernelevo report``: a search with a scripted model on loopback and an offline
    tuner run (both real, on a CPU), and a GPU-like one. In-process: each run as a command would pay
    for importing torch and Triton again."""
    from kernelevo.problem import load_problem
    from kernelevo.run import open_run
    from kernelevo.settings import Settings
    from tests.llm_server import ScriptedServer, fenced
    from tests.test_search import GOOD, WRONG, run_search, settings, variant

    root = tmp_path_factory.mktemp("report_runs")
    dbs = {"llm": root / "llm.db", "tuner": root / "tuner.db", "gpu": root / "gpu.db"}

    def script(body: dict[str, Any], i: int) -> str:
        if body.get("max_tokens") == 1:
            return "OK"  # the preflight
        return [fenced(variant(i).replace("# variant", f"# {UNTRUSTED} variant")), fenced(WRONG),
                "I would rather describe the idea than write it."][i % 3]

    with ScriptedServer(script) as srv:
        run_search(settings(srv.url, root, budget=5, concurrency=1, strong_share=0.3), dbs["llm"], seed=GOOD)
    seed = ROOT / "kernels" / "softmax" / "seed.py"
    one = Settings().updated({"search": {"budget": 2}, "execute": {"workers": 1}})  # one worker: 2 cores here
    with open_run(load_problem(PROBLEMS / "softmax_small.py"), "cpu", one, dbs["tuner"], seed.read_text(),
                  str(seed)) as run:
        run.search()
    write_gpu_like_run(dbs["gpu"])
    return dbs


# -- a real browser ---------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium's log line for a console message or an uncaught error:
# [pid:tid:time:LEVEL:CONSOLE(:line)] "text", source: url
_CONSOLE = re.compile(r':CONSOLE[^\]]*\]\s*"(?P<text>.*)", source: (?P<source>.*)$')


@dataclass(frozen=True)
class PageLoad:
    dom: str  # the DOM after the page's scripts ran
    console: tuple[str, ...]  # every console message and uncaught error (a report's page logs nothing)
    screenshot: Path


def console_messages(log: str) -> tuple[str, ...]:
    """What the page said on its console, read from Chromium's ``--enable-logging=stderr`` output."""
    found = []
    for line in log.splitlines():
        if m := _CONSOLE.search(line):
            found.append(f"{m['text']} ({m['source']})")
        elif "Uncaught" in line:  # another build's log format: an uncaught error is never missed
            found.append(line.strip())
    return tuple(found)


def load_page(page: Path, screenshot: Path, width: int = 1400, height: int = 3000) -> PageLoad:
    """Open ``page`` in headless Chromium from a file:// URL with the network unused; the DOM, console, a screenshot."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        p = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                            "--v=0", f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom",
                            f"--screenshot={screenshot}", f"--window-size={width},{height}", page.resolve().as_uri()],
                           capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    return PageLoad(p.stdout, console_messages(p.stderr), screenshot)


def png_pixels(path: Path) -> Any:
    """An 8-bit RGB(A) PNG's pixels as a (height, width, channels) array (Pillow may not be installed)."""
    import numpy as np

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    pos, chunks, header = 8, [], None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
    assert header is not None and header[2] == 8 and header[3] in (2, 6) and header[6] == 0, header
    w, h, bpp = header[0], header[1], 3 if header[3] == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(chunks)), dtype=np.uint8).reshape(h, w * bpp + 1)
    out = np.zeros((h, w * bpp), dtype=np.uint8)
    prev = np.zeros(w * bpp, dtype=np.int32)
    for y in range(h):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if kind == 0:
            cur = line
        elif kind == 1:  # Sub: a running sum along the row, per channel
            cur = np.cumsum(line.reshape(w, bpp), axis=0).reshape(-1) % 256
        elif kind == 2:  # Up
            cur = (line + prev) % 256
        else:  # Average and Paeth depend on the byte just decoded: one at a time
            row, up = [0] * bpp + line.tolist(), [0] * bpp + prev.tolist()
            for i in range(bpp, len(row)):
                a, b, c = row[i - bpp], up[i], up[i - bpp]
                if kind == 3:
                    row[i] = (row[i] + ((a + b) >> 1)) & 255
                else:
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            cur = np.array(row[bpp:], dtype=np.int32)
        out[y] = cur
        prev = cur.astype(np.int32)
    return out.reshape(h, w, bpp)


def distinct_colours(path: Path) -> int:
    import numpy as np

    rgb = png_pixels(path)[:, :, :3].astype(np.uint32)
    return len(np.unique((rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]))  # one int per colour: fast
