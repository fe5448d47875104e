"""The candidate's side: a forked child of the zygote that imports one candidate and runs it.

It receives inputs and weights, never expected outputs. It writes two signed result files:
``check`` (outputs of every draw, launches, input digests, buffers, the ops it called) and
then ``timing`` (samples for candidate and reference, and the last timed output). The
controller judges both; this process only reports what it saw.
"""

from __future__ import annotations

import hmac
import importlib.util
import io
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any

import torch

from kernelevo.candidate import detect_language
from kernelevo.evaluate import hooks
from kernelevo.evaluate.timing import RotatingInputs, time_cpu, time_cuda
from kernelevo.problem import flatten_outputs, load_problem
from kernelevo.reference import OpRecorder, digest, fp32_precision, to_device

CANDIDATE_FILE = "candidate.py"
JOB_FILE = "job.pt"
PROGRESS_FILE = "progress"
LOG_FILE = "log"
_T0 = 0


class Failure(Exception):
    """Ends the job with a verdict the controller passes on."""

    def __init__(self, verdict: str, reason: str, tb: str | None = None):
        super().__init__(reason)
        self.verdict, self.reason, self.tb = verdict, reason, tb


def sign(secret: bytes, payload: bytes) -> str:
    return hmac.new(secret, payload, "sha256").hexdigest()


def write_result(job_dir: Path, name: str, obj: Any, secret: bytes) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    tmp = job_dir / f".{name}.tmp"
    tmp.write_bytes(data)
    (job_dir / f"{name}.sig").write_text(sign(secret, data))
    os.replace(tmp, job_dir / name)  # appears whole or not at all


def _progress(job_dir: Path, text: str) -> None:
    with open(job_dir / PROGRESS_FILE, "a") as f:
        f.write(f"{text} [{(hooks.clock_ns() - _T0) / 1e6:.0f} ms]\n")


def _describe(e: BaseException, candidate_file: str) -> tuple[str, str, str]:
    """(verdict, one-line reason, traceback excerpt) for an exception from candidate code."""
    kind = "runtime_error"
    try:
        from triton.compiler.errors import CompilationError

        if isinstance(e, CompilationError):
            kind = "compile_error"
    except ImportError:  # pragma: no cover
        pass
    if isinstance(e, (SyntaxError, ImportError)):
        kind = "compile_error"
    msg = str(e).strip().splitlines()
    # NVRTC (CuPy) and nvcc (load_inline) report pages of text; the lines saying "error" are the ones
    # a model can act on.
    if type(e).__name__ == "CompileException" or "Error building extension" in str(e):
        kind = "compile_error"
        errors = [ln.strip() for ln in msg if re.search(r"\berror\b", ln, re.IGNORECASE)]
        msg = ["; ".join(errors[:3]) or (msg[0] if msg else "")]
    frames = traceback.extract_tb(e.__traceback__)
    mine = [f for f in frames if f.filename == candidate_file]
    where = f" (candidate line {mine[-1].lineno}: {(mine[-1].line or '').strip()})" if mine else ""
    reason = f"{type(e).__name__}: {msg[0][:300] if msg else ''}{where}"
    tb_lines = "".join(traceback.format_exception(e)).splitlines()
    return kind, reason, "\n".join(tb_lines[-25:])


def _sync(device: str) -> None:
    if device == "cuda":
        hooks._ORIGINALS["torch.cuda.synchronize"]()


def _load_candidate(path: str) -> type:
    spec = importlib.util.spec_from_file_location("candidate", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["candidate"] = module
    spec.loader.exec_module(module)
    cls = getattr(module, "ModelNew", None)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise Failure("rejected", "the module defines no class ModelNew(nn.Module)")
    for base in cls.__mro__:
        if base.__module__.startswith("kernelevo_problem") or (
            base.__name__ == "Model" and base is not cls and base.__module__ != "torch.nn.modules.module"
        ):
            raise Failure("rejected", "ModelNew subclasses the reference Model; write the forward yourself")
    return cls


def _call(fn: Any, args: list[Any], candidate_file: str, what: str) -> Any:
    try:
        with torch.no_grad():
            return fn(*args)
    except Failure:
        raise
    except Exception as e:
        kind, reason, tb = _describe(e, candidate_file)
        raise Failure(kind, f"{what}: {reason}", tb) from e


def _outputs(out: Any, inputs: list[Any], device: str, what: str) -> list[torch.Tensor]:
    flat = list(flatten_outputs(out))
    for o in flat:
        if type(o) is not torch.Tensor:
            raise Failure(
                "rejected", f"{what}: forward returned {type(o).__name__}; outputs must be plain torch.Tensor"
            )
    if hooks.aliases(flat, inputs):
        raise Failure("rejected", f"{what}: an output shares memory with an input; return a new tensor")
    return [o.detach().to("cpu", copy=True) for o in flat]


def _check(job: dict[str, Any], cls: type, count: Any, cand: str, job_dir: Path) -> dict[str, Any]:
    device = job["device"]
    cases = []
    for case in job["cases"]:
        label = case["label"]
        _progress(job_dir, f"size {label}: constructing ModelNew")
        model = _call(cls, list(case["init_inputs"]), cand, f"size {label}: ModelNew(*get_init_inputs())")
        try:
            model.to(device)
            model.load_state_dict(case["state_dict"], strict=True)
        except Exception as e:
            first = str(e).strip().splitlines()
            raise Failure(
                "rejected", f"ModelNew's state_dict does not match the reference: {first[0] if first else e}"
            ) from e
        draws = []
        for d, inputs in enumerate(case["draws"]):
            what = f"size {label}, draw {d}"
            _progress(job_dir, f"{what}: forward")
            args = to_device(list(inputs), device)
            guard, before = hooks.Guard(), count()
            with count.watch():
                out = _call(model, args, cand, what)
            _sync(device)
            outputs = _outputs(out, args, device, what)
            problem = guard.violation()
            if problem:
                raise Failure("rejected", f"{what}: {problem}")
            draws.append({"outputs": outputs, "launches": count() - before, "input_digest": digest(args)})
        buffers = {k: v.detach().to("cpu", copy=True) for k, v in model.named_buffers()}
        cases.append({"draws": draws, "buffers": buffers})

    # The ops the forward dispatches, on a fresh model so the draws above saw untouched state.
    first = job["cases"][0]
    _progress(job_dir, "tracing PyTorch ops")
    model = cls(*first["init_inputs"]).to(device)
    model.load_state_dict(first["state_dict"])
    recorder = OpRecorder()
    with recorder:
        _call(model, to_device(list(first["draws"][0]), device), cand, "op trace")
    return {"cases": cases, "ops": sorted(recorder.compute_ops)}


def _time(job: dict[str, Any], cls: type, count: Any, cand: str, job_dir: Path) -> dict[str, Any]:
    device, t = job["device"], job["timing"]
    problem = load_problem(job["problem_path"], job["overrides"], device=device)
    results = []
    for case in job["cases"]:
        label = case["label"]
        sides: dict[str, Any] = {}
        for side in ("candidate", "reference", "compiled") if t.get("compile_baseline") else ("candidate", "reference"):
            _progress(job_dir, f"size {label}: timing {side}")
            if side == "candidate":
                model = cls(*case["init_inputs"])
            else:
                model = problem.namespace(case["size"]).Model(*case["init_inputs"])
            model = model.to(device)
            model.load_state_dict(case["state_dict"])
            if side == "compiled":
                model = _compiled(model)
            inputs = RotatingInputs(to_device(list(case["timing_draw"]), device))

            def fn(*args: Any, model: Any = model) -> Any:
                with torch.no_grad():
                    return model(*args)

            before, guard = count(), hooks.Guard()
            if side == "candidate" and isinstance(count, hooks.ProfiledLaunchCounter):
                with count.watch():  # one watched, untimed call: the profiler would distort timings
                    _call(fn, inputs.fill(0), cand, f"size {label}, timing")

            try:
                if device == "cuda":
                    s = time_cuda(fn, inputs, t["gpu_warmup"], t["gpu_reps"], t["gpu_max_time_s"], t["l2_bytes"],
                                  graph=bool(t.get("cuda_graph")) and side != "compiled")
                else:
                    s = time_cpu(fn, inputs, t["cpu_warmup"], t["cpu_reps"])
            except Exception as e:
                if side == "compiled":  # the baseline failing to compile is not the candidate's fault
                    sides[side] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]}
                    continue
                kind, reason, tb = _describe(e, cand)
                raise Failure(kind, f"size {label}, timing {side}: {reason}", tb) from e
            problem_text = guard.violation()
            if problem_text and side != "compiled":  # Inductor's own compile threads are not the candidate's
                raise Failure("rejected", f"size {label}, timing: {problem_text}")
            entry: dict[str, Any] = {"ms": list(s.ms), "launches": count() - before, "graph": s.graph}
            if device == "cuda":
                entry["nvml"] = _nvml()
            if side == "candidate":
                entry["last_output"] = _outputs(s.last_output, inputs.bufs, device, f"size {label}, timing")
                if device == "cuda":
                    entry["kernels"] = _kernel_meta(count, sys.modules.get(cls.__module__))
            sides[side] = entry
        results.append(sides)
    return {"cases": results}


def _raw_kernel_names(source: str) -> set[str]:
    """Names given to CuPy ``RawKernel(code, "name")`` / ``get_function("name")``."""
    return set(re.findall(r"(?:RawKernel\([^,]+,\s*|get_function\(\s*)[\"'](\w+)[\"']", source))


def _compiled(model: torch.nn.Module) -> Any:
    """The reference under torch.compile (the baseline users would otherwise reach for)."""
    import torch._inductor.config as inductor_config

    inductor_config.compile_threads = 1  # no compile worker pool inside a worker we may kill
    return torch.compile(model)


def _nvml() -> dict[str, Any] | None:
    """Clocks, temperature, power and throttle reasons right after a measurement."""
    from dataclasses import asdict

    from kernelevo.profile.gpu import nvml_sample

    sample = nvml_sample(torch.cuda.current_device())
    return None if sample is None else asdict(sample)


def _kernel_meta(count: Any, module: Any = None) -> list[dict[str, Any]]:
    """Registers, spills, shared memory, warps and stages of the candidate's compiled kernels."""
    from dataclasses import asdict

    from kernelevo.profile.triton_meta import compiled_kernels

    metas = [asdict(m) for jit in getattr(count, "kernels", {}).values() if jit is not None
             for m in compiled_kernels(jit)]
    for obj in vars(module).values() if module is not None else ():
        if type(obj).__name__ == "RawKernel":  # CuPy: attributes of the compiled function
            try:
                metas.append({"name": obj.name, "registers": obj.num_regs, "spills": obj.local_size_bytes,
                              "shared_bytes": obj.shared_size_bytes, "num_warps": None, "num_stages": None})
            except Exception:  # not compiled yet, or an older CuPy: the profile is advisory
                pass
    return metas


def run_job(job_dir: Path, job_file: Path, secret: bytes) -> int:
    """Run one candidate's job; every outcome is written as a signed result. Returns an exit code."""
    global _T0
    _T0 = hooks.clock_ns()
    job = torch.load(job_file, weights_only=False)  # written by the controller, checked before the fork
    cand = str(job_dir / CANDIDATE_FILE)
    count = hooks.install_launch_counter(cand)
    source = Path(cand).read_text()
    if job["device"] == "cuda" and detect_language(source) == "cuda":
        count = hooks.ProfiledLaunchCounter(hooks.cuda_kernel_names(source) | _raw_kernel_names(source))
    phase = "check"
    try:
        with fp32_precision(job["allow_tf32"]):
            _progress(job_dir, "importing the candidate")
            try:
                cls = _load_candidate(cand)
            except Failure:
                raise
            except BaseException as e:
                kind, reason, tb = _describe(e, cand)
                raise Failure("compile_error" if kind == "compile_error" else "runtime_error",
                              f"importing the candidate failed: {reason}", tb) from e
            guard_problem = hooks.Guard().violation()
            if guard_problem:
                raise Failure("rejected", f"at import: {guard_problem}")
            write_result(job_dir, "check", _check(job, cls, count, cand, job_dir), secret)
            phase = "timing"
            write_result(job_dir, "timing", _time(job, cls, count, cand, job_dir), secret)
    except Failure as f:
        write_result(job_dir, phase, {"error": {"verdict": f.verdict, "reason": f.reason, "tb": f.tb}}, secret)
    except Exception as e:  # anything else the candidate's code raised outside a forward call
        kind, reason, tb = _describe(e, cand)
        write_result(job_dir, phase, {"error": {"verdict": kind, "reason": f"{phase}: {reason}", "tb": tb}}, secret)
    _progress(job_dir, "done")
    return 0
