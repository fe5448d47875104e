"""GPU measurements judged on the CPU: roofline, the speed-of-light bound, CUDA kernel names,
compiler-error trimming. The numbers are hand-computed; nothing here needs a GPU."""

from __future__ import annotations

import pytest

from kernelevo.evaluate.gpu_report import profile_of, with_roofline
from kernelevo.evaluate.launches import cuda_kernel_names, kernel_base_name
from kernelevo.evaluate.verdict import SizeResult
from kernelevo.evaluate.worker import describe
from kernelevo.profile.calibrate import Calibration
from kernelevo.settings import EvalSettings

CAL = Calibration(key="fake-gpu", gpu={}, software={}, copy_bytes_per_s=4e12,
                  flops_per_s={"fp32": 50e12, "tf32": 400e12, "bf16": 800e12, "fp16": 800e12}, measured="2026-11-23")


def size(latency_ms: float) -> SizeResult:
    return SizeResult({"n": 1}, 0.0, 0.0, latency_ms, 0.01, 1.0, 1)


def test_roofline_fills_achieved_throughput_and_fraction() -> None:
    # 4 GB moved in 2 ms = 2 TB/s = half the calibrated 4 TB/s; 1 GFLOP in 2 ms is far below 50 TFLOP/s.
    s, bad = with_roofline(size(2.0), flops=1e9, min_bytes=4e9, calibration=CAL, settings=EvalSettings())
    assert bad is None
    assert s.gbps == 2000.0 and abs(s.roofline - 0.5) < 1e-9 and s.tflops == 0.5


def test_faster_than_light_is_rejected_with_a_reason() -> None:
    # 4 GB cannot move in 0.1 ms at 4 TB/s (that would be 40 TB/s).
    _, bad = with_roofline(size(0.1), flops=1e9, min_bytes=4e9, calibration=CAL, settings=EvalSettings())
    assert bad and "\n" not in bad
    # TF32's ceiling applies only when the user allowed TF32: 1e12 FLOPs in 5 ms is 200 TFLOP/s.
    _, bad_fp32 = with_roofline(size(5.0), 1e12, 1e6, CAL, EvalSettings(), "float32")
    _, ok_tf32 = with_roofline(size(5.0), 1e12, 1e6, CAL, EvalSettings(allow_tf32=True), "float32")
    assert bad_fp32 and ok_tf32 is None


def test_without_calibration_nothing_is_judged() -> None:
    s, bad = with_roofline(size(0.0001), 1e12, 1e12, None, EvalSettings())
    assert bad is None and s.gbps is None and s.roofline is None


def test_profile_collects_kernels_nvml_and_renders() -> None:
    s, _ = with_roofline(size(2.0), 1e9, 4e9, CAL, EvalSettings())
    kernel = {"name": "_softmax_kernel", "registers": 40, "spills": 0, "shared_bytes": 0, "num_warps": 8,
              "num_stages": 3}
    nvml = {"sm_clock_mhz": 1980, "max_sm_clock_mhz": 1980, "temperature_c": 60, "power_w": 400.0,
            "throttle_reasons": ("hw_slowdown",), "throttled": True}
    result = {"cases": [{"candidate": {"kernels": [kernel], "nvml": nvml}, "reference": {}}]}
    profile, text = profile_of(result, (s,), CAL)
    assert profile["kernels"] == [kernel] and profile["throttled"] is True
    assert profile["sizes"][0]["bound"] == "memory" and abs(profile["sizes"][0]["bandwidth_fraction"] - 0.5) < 1e-9
    assert "_softmax_kernel" in text and "40 registers" in text and "None" not in text


def test_cuda_kernel_names_from_sources() -> None:
    src = ('k = cp.RawKernel(r"""extern "C" __global__ void add_one(float* x) {}""", "add_one")\n'
           'f = mod.get_function("scale2")\n'
           'SRC = "__global__ __launch_bounds__(256) void fused(float* y) {}"\n')
    assert cuda_kernel_names(src) == {"add_one", "fused", "scale2"}


def test_profiler_kernel_names_match_exactly_never_as_substrings() -> None:
    assert kernel_base_name("void add_one(float*)") == "add_one"
    assert kernel_base_name("void ns::fused<float, 4>(float const*, float*, int)") == "fused"
    assert kernel_base_name("add_one") == "add_one"
    # A library kernel whose name contains the candidate's must not count as the candidate's.
    assert kernel_base_name("void at::native::vectorized_elementwise_kernel<4, add_one_functor>(int)") \
        == "vectorized_elementwise_kernel"


def test_nvrtc_errors_are_trimmed_to_the_error_lines() -> None:
    class CompileException(Exception):  # the shape of CuPy's: a long log, a few "error" lines
        pass

    log = "\n".join(["nvrtc compilation log:", *[f"note {i}" for i in range(40)],
                     "kernel.cu(7): error: expected a \")\"", "1 error detected in the compilation"])
    kind, reason, _ = describe(CompileException(log), "candidate.py")
    assert kind == "compile_error"
    assert 'kernel.cu(7): error: expected a ")"' in reason and "note 3" not in reason and "\n" not in reason


def test_finalist_profiles_only_the_candidates_own_kernels() -> None:
    import ast

    from kernelevo.profile.finalist import _SCRIPT, own_kernel_regex
    from tests.conftest import ROOT

    assert own_kernel_regex((ROOT / "kernels" / "cross_entropy" / "seed.py").read_text()) == \
        "^(_cross_entropy_kernel|_mean_kernel)$"  # both kernels of the seed, each exactly
    multi = ("import triton\nfrom triton import jit\n@triton.jit(\n    do_not_specialize=['n'],\n)\n"
             "def _a(x, n):\n    pass\n@jit\ndef _b(x):\n    pass\n@triton.autotune(configs=[], key=[])\n"
             "@triton.jit\ndef _c(x):\n    pass\ndef helper():\n    pass\n")
    assert own_kernel_regex(multi) == "^(_a|_b|_c)$"  # decorators over several lines, bare @jit, stacked
    assert own_kernel_regex("def broken(:\n") is None
    assert own_kernel_regex("import torch\n") is None  # nothing to select: ncu is not run blind
    ast.parse('ARGS = "{}"\n' + _SCRIPT)  # the script ncu runs is valid Python
    body = _SCRIPT.split("range_push")[1]
    assert body.count("model(*inputs)") == 1 and "range_pop" in body  # one call profiled, after warm-up
    assert _SCRIPT.index("for _ in range(3)") < _SCRIPT.index("range_push")
    assert 'fp32_precision(args["allow_tf32"])' in _SCRIPT  # compiled as the timed run compiled it
    from kernelevo.problem import load_problem
    from kernelevo.profile.finalist import profile_finalist

    prob = load_problem(ROOT / "tests" / "problems" / "softmax_small.py")
    assert "no @triton.jit" in profile_finalist(prob, {}, "import torch\n")


@pytest.mark.parametrize("allow_tf32", [False, True])
def test_finalist_is_profiled_as_it_was_timed(monkeypatch, allow_tf32: bool) -> None:
    """Same precision (TF32 or not) as the timed run, the candidate's kernels named exactly."""
    from kernelevo.problem import load_problem
    from kernelevo.profile import finalist
    from tests.conftest import ROOT

    seen: dict = {}

    def fake_run_ncu(script, workdir, regex, **kw):
        seen.update(script=script.read_text(), regex=regex, **kw)
        return "profiled"

    monkeypatch.setattr(finalist, "run_ncu", fake_run_ncu)
    prob = load_problem(ROOT / "tests" / "problems" / "softmax_small.py")
    source = (ROOT / "tests" / "candidates" / "softmax_good.py").read_text()
    assert finalist.profile_finalist(prob, {}, source, allow_tf32=allow_tf32) == "profiled"
    assert ("TRITON_F32_DEFAULT" in seen["env"]) is (not allow_tf32)
    import ast
    import json

    args = json.loads(ast.literal_eval(seen["script"].splitlines()[0].split("=", 1)[1].strip()))
    assert args["allow_tf32"] is allow_tf32
    assert "TIMED_RANGE = 'kernelevo_timed'" in seen["script"]
    assert seen["regex"] == "^(_softmax_kernel)$"


def test_verify_gpu_runs_every_step_and_lists_the_failures(tmp_path) -> None:
    """One failing step (the GPU tests) must not skip calibration and the benchmarks."""
    import os
    import subprocess

    from tests.conftest import ROOT

    log = tmp_path / "calls"
    stub = tmp_path / "python"
    stub.write_text(f'#!/bin/sh\necho "$*" >> {log}\ncase "$*" in *pytest*) exit 1;; esac\nexit 0\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    p = subprocess.run(["bash", str(ROOT / "scripts" / "verify_gpu.sh"), "--ops", "softmax"], env=env,
                       capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines()
    assert [c.split()[1] if c.startswith("-m") else c.split()[0] for c in calls] == \
        ["pytest", "kernelevo", "scripts/bench_gpu.py", "scripts/bench_executors.py"]
    assert calls[-2].endswith("--ops softmax") and calls[-1].endswith("--device cuda --budget 30")
    assert p.returncode == 1 and "1 step(s) failed: gpu tests" in p.stdout
