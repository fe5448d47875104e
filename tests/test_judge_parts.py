"""The judge's in-process parts that other tests reach only through a worker: the plan of draws,
the audit hook, hiding the judge, launch counting and autotune pinning, the interpreter bridges.
Each patches something process-wide and puts it back, so they can run (and be mutation-tested)
in the test process."""

from __future__ import annotations

import importlib.util
import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import triton.language.extra.cuda.libdevice as cuda_libdevice
from triton.language.extra import libdevice

from kernelevo.evaluate import confine, interpreter, launches
from kernelevo.evaluate.plan import _floats, _stress_offset, _stress_scale, _truth, make_plan, plan_size
from kernelevo.evaluate.timing import Kernel
from kernelevo.problem import load_problem
from kernelevo.reference import build_reference
from tests.conftest import PROBLEMS

# -- the plan ---------------------------------------------------------------------------------------


def test_a_plan_is_the_documented_sequence_of_draws() -> None:
    ref = build_reference(load_problem(PROBLEMS / "layernorm_small.py"), "cpu")
    plan = make_plan(ref, 11, 0.25, 3.0)
    assert plan.seed == 11 and plan.notes == ()
    declared, extra = plan.sizes[:-1], plan.sizes[-1]
    assert [sp.label for sp in declared] == ["dim=33", "dim=64"] and extra.extra
    for sp, case in zip(declared, ref.cases, strict=True):
        assert [c.kind for c in sp.calls] == ["plain", "plain", "rescaled", "magnitude", "offset", "weights B"]
        assert [c.weights for c in sp.calls] == ["A"] * 5 + ["B"]
        assert sp.calls[0].note == "" and sp.calls[5].note == "after a second set of weights was loaded"
        assert sp.calls[2].note.startswith("inputs x") and sp.calls[3].note.startswith("input scale ")
        assert sp.calls[4].note.startswith("inputs offset by ")
        assert [c.truth is not None for c in sp.calls] == [False, False, False, True, True, False]
        assert all(c.truth[0].dtype == torch.float64 for c in sp.calls[3:5])
        assert not sp.stateful and all(c.state_after is None for c in sp.calls)
        assert sp.work == case.timing.inputs[0].numel() and sp.budget == 0.25 * sp.work
        assert (sp.flops, sp.min_bytes) == (case.flops, case.min_bytes) and not sp.extra
        # the second weight draw is what the model holds at the end, and what timed calls start from
        assert torch.equal(sp.final_state["ln.weight"], sp.state_b["ln.weight"])
        assert not torch.equal(sp.state_a["ln.weight"], sp.state_b["ln.weight"])
        first = sp.draw(0)
        assert torch.equal(sp.draw(0)[0], first[0]) and not torch.equal(sp.draw(1)[0], first[0])
        expected = torch.nn.functional.layer_norm(first[0], (first[0].shape[-1],), sp.state_b["ln.weight"],
                                                  sp.state_b["ln.bias"])
        assert torch.allclose(sp.reference(first)[0], expected, atol=1e-6)
    assert [c.kind for c in extra.calls] == ["extra", "extra"] and extra.size["dim"] > 64
    assert extra.label == f"dim={extra.size['dim']}"  # only dim is a declared size global


def test_stress_draws_are_large_and_offset_and_others_rescaled() -> None:
    ref = build_reference(load_problem(PROBLEMS / "softmax_small.py"), "cpu")
    sp = make_plan(ref, 3, 0.25, 3.0, extra=False).sizes[0]
    plain, rescaled, magnitude, offset = (sp.calls[i].inputs[0] for i in (0, 2, 3, 4))
    scale = float(sp.calls[3].note.split()[-1])
    assert 32 <= scale <= 64 and magnitude.abs().max() > 25
    shift = float(sp.calls[4].note.split()[-1])
    assert 100 <= abs(shift) <= 1000 and abs(float(offset.mean())) > 50
    factor = float(sp.calls[2].note.removeprefix("inputs x"))
    assert math.exp(-1) <= factor <= math.e
    assert 0.2 < float(plain.std()) < 5 and rescaled.shape == plain.shape


def test_plan_seeds_reproduce_and_differ() -> None:
    ref = build_reference(load_problem(PROBLEMS / "softmax_small.py"), "cpu")
    a, b, c = (make_plan(ref, s, 0.25, 3.0) for s in (5, 5, 6))
    for x, y in zip(a.sizes, b.sizes, strict=True):
        assert x.size == y.size and all(torch.equal(p.inputs[0], q.inputs[0]) for p, q in zip(x.calls, y.calls,
                                                                                              strict=True))
    assert not torch.equal(a.sizes[0].calls[0].inputs[0], c.sizes[0].calls[0].inputs[0])
    assert make_plan(ref, 5, 0.5, 3.0, extra=False).sizes[0].budget == 2 * a.sizes[0].budget
    assert all(not sp.extra for sp in make_plan(ref, 5, 0.25, 3.0, extra=False).sizes)


def test_stateful_plans_record_the_state_after_every_call() -> None:
    ref = build_reference(load_problem(PROBLEMS / "batchnorm_train.py"), "cpu")
    sp = make_plan(ref, 2, 0.25, 3.0, extra=False).sizes[0]
    assert sp.stateful and all(c.state_after is not None for c in sp.calls)
    means = [c.state_after["bn.running_mean"] for c in sp.calls]
    assert all(not torch.equal(a, b) for a, b in zip(means, means[1:], strict=False))
    assert int(sp.calls[4].state_after["bn.num_batches_tracked"]) == 5
    assert int(sp.calls[5].state_after["bn.num_batches_tracked"]) == 1  # weights B loaded: counts restart
    # a timed call starts from weights B: twice the same draw, the same output and state
    d = sp.draw(0)
    assert torch.equal(sp.reference(d)[0], sp.reference(d)[0])
    after = sp.reference_state(d)
    assert int(after["bn.num_batches_tracked"]) == 1
    assert torch.equal(sp.reference_state(d)["bn.running_mean"], after["bn.running_mean"])


def test_extra_size_failures_become_notes(tmp_path: Path) -> None:
    src = (PROBLEMS / "softmax_small.py").read_text().replace(
        "        return torch.softmax(x, dim=-1)",
        "        assert x.shape[-1] <= 64, 'too wide'\n        return torch.softmax(x, dim=-1)")
    f = tmp_path / "narrow.py"
    f.write_text(src)
    plan = make_plan(build_reference(load_problem(f), "cpu"), 1, 0.25, 3.0)
    assert all(not sp.extra for sp in plan.sizes)
    assert len(plan.notes) == 1 and plan.notes[0].startswith("no extra size")
    off = tmp_path / "off.py"
    off.write_text((PROBLEMS / "softmax_small.py").read_text() + "\nEXTRA_SIZE = False\n")
    assert make_plan(build_reference(load_problem(off), "cpu"), 1, 0.25, 3.0).notes == ()


def test_helpers_of_the_plan() -> None:
    import random

    rng = random.Random(0)
    assert all(32 <= _stress_scale(rng) <= 64 for _ in range(50))
    offsets = [_stress_offset(rng) for _ in range(100)]
    assert all(100 <= abs(o) <= 1000 for o in offsets) and min(offsets) < 0 < max(offsets)
    ints, fl = torch.arange(3), torch.ones(2)
    out = _floats([ints, fl, 2.0, "x"], lambda t: t * 3)
    assert torch.equal(out[0], ints) and torch.equal(out[1], fl * 3) and out[2:] == [2.0, "x"]

    class Float32Only(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            assert x.dtype == torch.float32
            return x

    assert _truth(Float32Only(), [torch.ones(2)], "cpu") is None
    t = _truth(torch.nn.Linear(2, 2), [torch.ones(1, 2)], "cpu")
    assert t is not None and t[0].dtype == torch.float64


def test_plan_size_refuses_a_broken_get_inputs(tmp_path: Path) -> None:
    f = tmp_path / "p.py"
    f.write_text("import torch\nimport torch.nn as nn\nn = 4\nclass Model(nn.Module):\n    def forward(self, x):\n"
                 "        return x\ndef get_inputs():\n    return torch.ones(n)\ndef get_init_inputs():\n"
                 "    return []\n")
    with pytest.raises(Exception, match="get_inputs\\(\\) must return a list"):
        plan_size(load_problem(f), 0, {}, "cpu", 0, 0.25, False)


# -- the audit hook and hiding the judge --------------------------------------------------------------


def _load(path: Path, name: str) -> object:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dynamo_is_refused_whoever_asks(tmp_path: Path) -> None:
    """First in this file: audit hooks cannot be removed, and every one refuses Dynamo."""
    fake = tmp_path / "torch" / "_dynamo"
    fake.mkdir(parents=True)
    (fake / "convert_frame.py").write_text("def run():\n    return compile('1', 'x', 'eval')\n")
    cand = tmp_path / "candidate.py"
    cand.write_text("def forward(dynamo):\n    return dynamo.run()\n")
    refusals: list[str] = []
    confine.install_audit(str(cand), refusals)
    dynamo, mine = _load(fake / "convert_frame.py", "fake_dynamo"), _load(cand, "dynamo_candidate")
    assert dynamo.run() is not None  # not on the candidate's behalf: Dynamo may work here
    with pytest.raises(PermissionError, match="torch.compile"):
        mine.forward(dynamo)
    assert refusals == ["torch.compile (Dynamo/Inductor are off in the judge)"]


def test_audit_hook_in_process(tmp_path: Path) -> None:
    """Refused to the candidate's own code however spelled; this test's code (not the candidate)
    keeps every use. Hooks cannot be removed: this one only ever acts for its own temporary file."""
    cand = tmp_path / "candidate.py"
    cand.write_text(textwrap.dedent("""
        import collections, dataclasses, inspect, sys

        def probe(fn):
            try:
                fn()
                return "allowed"
            except PermissionError as e:
                assert str(e).startswith("refused in the judge: ")
                return "refused"

        def tb_frame():
            try:
                raise ValueError
            except ValueError as e:
                return e.__traceback__.tb_frame

        def gen():
            yield 1

        def inner_frames():
            try:
                raise ValueError
            except ValueError as e:
                return inspect.getinnerframes(e.__traceback__)

        PROBES = {
            "getframe": lambda: sys._getframe(),
            "inspect": lambda: inspect.stack(),
            "tb_frame": tb_frame,
            "gi_frame": lambda: gen().gi_frame,
            "inner_frames": inner_frames,
            "code_attr": lambda: probe.__code__,
            "namedtuple": lambda: collections.namedtuple("P", "a b"),
            "dataclass": lambda: dataclasses.make_dataclass("D", ["a"]),
            "eval": lambda: __import__("builtins").__dict__["ev" + "al"]("1"),
            "compile": lambda: compile("1", "x", "eval"),
            "gc": lambda: __import__("g" + "c").get_objects(),
            "settrace": lambda: sys.settrace(None),
            "popen": lambda: __import__("os").popen("true").read(),
            "kill": lambda: __import__("os").kill(__import__("os").getpid(), 0),
            "socket": lambda: __import__("socket").socket(),
            "ctypes": lambda: __import__("ctypes").string_at(id(1), 4),
        }

        def run():
            return {name: probe(fn) for name, fn in PROBES.items()}
        """))
    refusals: list[str] = []
    confine.install_audit(str(cand), refusals)
    mod = _load(cand, "audit_probe_candidate")
    result = mod.run()
    assert result == {
        "getframe": "refused", "inspect": "refused", "tb_frame": "refused", "gi_frame": "refused",
        "inner_frames": "refused", "code_attr": "allowed",
        "namedtuple": "allowed", "dataclass": "allowed", "eval": "refused", "compile": "refused",
        "gc": "refused", "settrace": "refused", "popen": "refused", "kill": "refused", "socket": "refused",
        "ctypes": "refused",
    }
    assert refusals[0] == "frame inspection (sys._getframe)" and len(refusals) == 13
    assert refusals[2] == "frame inspection (object.__getattr__)"
    assert "raw memory access (ctypes) (ctypes.string_at)" in refusals
    assert "network access (socket.__new__)" in refusals and "starting processes (subprocess.Popen)" in refusals
    # this module is not the candidate: the same capabilities stay ours
    assert sys._getframe() is not None and eval("1") == 1 and compile("1", "x", "eval") is not None
    import gc

    assert gc.get_referents(refusals) is not None


def test_hiding_the_judge_refuses_importing_it_again() -> None:
    saved_modules = {k: v for k, v in sys.modules.items() if k.startswith("kernelevo")}
    saved_path = list(sys.meta_path)
    refusals: list[str] = []
    try:
        confine.hide_judge(refusals)
        assert not [k for k in sys.modules if k == "kernelevo" or k.startswith("kernelevo.")]
        with pytest.raises(ImportError, match="refused in the judge: importing kernelevo"):
            __import__("kernelevo.evaluate.timing")
        with pytest.raises(ImportError, match="refused in the judge: importing kernelevo.evaluate.judge"):
            confine_finder = sys.meta_path[0]
            confine_finder.find_spec("kernelevo.evaluate.judge")
        assert confine_finder.find_spec("json") is None  # others are left to the usual finders
        assert refusals == ["importing the judge (kernelevo)", "importing the judge (kernelevo.evaluate.judge)"]
        import json  # others import as ever

        assert json.dumps(1) == "1"
    finally:
        sys.meta_path[:] = saved_path
        sys.modules.update(saved_modules)


# -- launch counting and autotune pinning -----------------------------------------------------------

_KERNELS = textwrap.dedent('''
    import torch
    import triton
    import triton.language as tl


    @triton.jit
    def _double_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=mask) * 2, mask=mask)


    @triton.autotune(configs=[triton.Config({"BLOCK": 16}), triton.Config({"BLOCK": 32}),
                              triton.Config({"BLOCK": 64})], key=["n"])
    @triton.jit
    def _tuned_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=mask) + BLOCK, mask=mask)
    ''')


@pytest.fixture
def triton_patches():
    """Puts back every Triton class attribute the judge's installers wrap."""
    from triton.runtime import interpreter as interp
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    saved = [(JITFunction, "__init__"), (interp.InterpretedFunction, "__init__"), (interp.InterpretedFunction, "run"),
             (Autotuner, "__init__"), (Autotuner, "prune_configs"), (interp, "_implicit_cvt"),
             (interp, "_patch_lang_tensor"),
             (interp.InterpreterBuilder, "create_dot")]
    values = [(obj, name, getattr(obj, name)) for obj, name in saved]
    import triton.language.extra.cuda.libdevice as cuda_ld
    import triton.language.extra.libdevice as ld

    libdevice = {m: dict(vars(m)) for m in (ld, cuda_ld)}
    import triton

    try:
        active = triton.runtime.driver._active
    except AttributeError:
        active = None
    yield
    for obj, name, value in values:
        setattr(obj, name, value)
    for m, d in libdevice.items():
        for k, v in d.items():
            setattr(m, k, v)
    if hasattr(triton.runtime.driver, "_active"):
        triton.runtime.driver._active = active


def test_launches_of_the_candidates_own_kernels_are_counted(tmp_path: Path, triton_patches) -> None:
    cand = tmp_path / "candidate.py"
    cand.write_text(_KERNELS)
    other = tmp_path / "library.py"
    other.write_text(_KERNELS)
    counter = launches.install(str(cand), interpreted=True)
    mine, theirs = _load(cand, "launch_candidate"), _load(other, "launch_library")
    assert counter.names == {"_double_kernel", "_tuned_kernel"} and set(counter.jit) == counter.names
    assert len(counter.autotuners) == 1 and launches.autotune_configs(counter) == 3
    x = torch.arange(40.0)
    y = torch.empty(40)
    theirs._double_kernel[(3,)](x, y, 40, BLOCK=16)
    assert counter() == 0, "a kernel of the same name from another file is not the candidate's"
    mine._double_kernel[(3,)](x, y, 40, BLOCK=16)
    assert counter() == 1 and torch.equal(y, x * 2) and counter.dtypes == {"float32"}
    mine._double_kernel.warmup(x, y, 40, BLOCK=16, grid=(1,))
    assert counter() == 1, "compiling ahead is not a launch"
    assert counter.owns(mine._double_kernel) and not counter.owns(theirs._double_kernel)
    assert counter.own_names() == counter.names


def test_each_autotune_config_can_be_pinned(tmp_path: Path, triton_patches) -> None:
    interpreter.install()  # the interpreter's benchmarker: the autotuner keeps the first config
    cand = tmp_path / "candidate.py"
    cand.write_text(_KERNELS)
    counter = launches.install(str(cand), interpreted=True)
    mod = _load(cand, "pin_candidate")
    x = torch.zeros(40)
    y = torch.empty(40)

    def run() -> float:
        mod._tuned_kernel[lambda meta: (triton_cdiv(40, meta["BLOCK"]),)](x, y, 40)
        return float(y[0])

    from triton import cdiv as triton_cdiv

    assert run() == 16.0  # all configs tie in the interpreter: the first is kept
    seen = []
    for i in range(4):
        with launches.pin(counter, i) as used:
            seen.append(run())
        assert len(used) == 1 and used[0].startswith("_tuned_kernel with BLOCK: ")
    assert seen == [16.0, 32.0, 64.0, 16.0]  # wraps around
    assert run() == 16.0, "nothing pinned outlives the call"
    with launches.pin(counter, None) as used:
        assert run() == 16.0 and used == []


def test_profiler_launch_counts_and_kernel_names() -> None:
    c = launches.ProfiledLaunchCounter("candidate.py", {"add_one"})
    c.count([Kernel("void add_one(float*)", 3.0), Kernel("void at::native::add_one_kernel()", 1.0),
             Kernel("add_one", 2.0)])
    assert c() == 2 and set(c.jit) == {"void add_one(float*)", "add_one"} and c.own_names() == {"add_one"}
    src = ('__global__ void plain(float* x) {}\n__global__ __launch_bounds__(128) void bounded(int n) {}\n'
           'extern "C" __global__ static void qualified(float* y) {}\n'
           'k = cp.RawKernel(code, "raw")\nf = m.get_function(\'fetched\')\n')
    assert launches.cuda_kernel_names(src) == {"plain", "bounded", "qualified", "raw", "fetched"}
    assert launches.kernel_base_name("void ns::inner::k<float>(float*)") == "k"
    assert launches.kernel_base_name("  spaced  ") == "spaced"


# -- the interpreter bridges --------------------------------------------------------------------------


def test_interpreter_bridges(triton_patches) -> None:
    import triton
    import triton.language as tl

    interpreter.install()
    drv = triton.runtime.driver.active
    assert isinstance(drv, interpreter.InterpreterDriver) and drv.is_active()
    props = drv.utils.get_device_properties(0)
    assert props["multiprocessor_count"] == 4 and props["warpSize"] == 32 and props["max_num_regs"] == 65536
    assert drv.get_current_target().backend == "cuda" and drv.get_current_device() == 0
    assert drv.get_current_stream() == 0 and str(drv.get_active_torch_device()) == "cpu"
    assert drv.get_benchmarker()(lambda: None, quantiles=(0.5,)) == [0.0, 0.0, 0.0]
    assert drv.get_benchmarker()(lambda: None) == 0.0
    cache = drv.get_empty_cache_for_benchmark()
    cache.fill_(3)
    drv.clear_cache(cache)
    assert int(cache.abs().sum()) == 0 and cache.numel() == 1 << 16
    dev = drv.get_device_interface()
    start, end = dev.Event(enable_timing=True), dev.Event(enable_timing=True)
    start.record()
    end.record()
    end.synchronize()
    dev.synchronize()
    assert start.elapsed_time(end) >= 0 and dev.current_device() == 0

    @triton.jit
    def _k(x_ptr, y_ptr, n, eps, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        m = offs < n
        x = tl.load(x_ptr + offs, mask=m, other=1.0)
        y = libdevice.tanh(x) + libdevice.rsqrt(x * x + eps.to(tl.float32)) + libdevice.erf(x)  # noqa: F821
        tl.store(y_ptr + offs, tl.where(libdevice.isnan(y), 0.0, y), mask=m)

    x = torch.linspace(-2, 2, 10)
    y = torch.empty(10)
    handle = _k.warmup(x, y, 10, 1e-5, BLOCK=16, grid=(1,))
    assert isinstance(handle, interpreter.PrecompiledHandle) and handle.name == "_k"
    handle._init_handles()
    assert handle.n_regs > 0 and handle.metadata.shared > 0
    handle[(1, 1, 1)](x, y, 10, 1e-5, 16)
    expected = torch.tanh(x) + torch.rsqrt(x * x + 1e-5) + torch.erf(x)
    assert torch.allclose(y, expected, atol=1e-5)

    @triton.jit
    def _dot(a_ptr, b_ptr, c_ptr, PREC: tl.constexpr):
        r = tl.arange(0, 16)
        a = tl.load(a_ptr + r[:, None] * 16 + r[None, :])
        b = tl.load(b_ptr + r[:, None] * 16 + r[None, :])
        tl.store(c_ptr + r[:, None] * 16 + r[None, :], tl.dot(a, b, input_precision=PREC))

    a, b, c = torch.randn(16, 16), torch.randn(16, 16), torch.empty(16, 16)
    _dot[(1,)](a, b, c, "ieee")
    exact = (a.double() @ b.double()).float()
    assert (c - exact).abs().max() < 1e-4
    _dot[(1,)](a, b, c, "tf32")
    assert (c - exact).abs().max() > 1e-4  # TF32's 10 mantissa bits show, as on a GPU
    rounded = interpreter._round_tf32(np.array([1 + 2**-11], dtype=np.float32))
    assert rounded[0] == np.float32(1 + 2**-10)  # round half up at the 10th bit


def test_a_seed_reproduces_its_plan_exactly() -> None:
    """``--seed`` promises the same verdict later: the same draws, weights and extra size, bit for bit.
    (Digests of the inputs each call gets; sums of the weights and of timing draws.)"""
    ref = build_reference(load_problem(PROBLEMS / "layernorm_small.py"), "cpu")
    plan = make_plan(ref, 5, 0.25, 3.0)
    golden = [
        ("dim=33", ["d1684acc358e", "6455a6d527df", "d1bc7b4c5a04", "15b50216991b", "c562a703f2f5", "3959e4733627"],
         ["", "", "inputs x1.08", "input scale 40.9", "inputs offset by 332.6",
          "after a second set of weights was loaded"], 30.653696, 32.635117, 9.292269, 3.314480),
        ("dim=64", ["de2d5d275f32", "1d800d7133dc", "b2e00ce94bd0", "778851123ae4", "343e9743446d", "e762e8cda5e4"],
         ["", "", "inputs x1.23", "input scale 49.7", "inputs offset by -302",
          "after a second set of weights was loaded"], 68.730453, 65.435669, 21.901812, -2.308982),
        ("dim=67", ["711c91542978", "255fdff97449"], ["", ""], 66.039795, 65.332390, -15.266191, 18.808857),
    ]
    assert len(plan.sizes) == len(golden)
    for sp, (label, digests, notes, a, b, t0, t3) in zip(plan.sizes, golden, strict=True):
        assert sp.label == label
        assert [c.digest[:12] for c in sp.calls] == digests and [c.note for c in sp.calls] == notes
        assert float(sp.state_a["ln.weight"].sum()) == pytest.approx(a, abs=1e-4)
        assert float(sp.state_b["ln.weight"].sum()) == pytest.approx(b, abs=1e-4)
        assert float(sp.draw(0)[0].sum()) == pytest.approx(t0, abs=1e-4)
        assert float(sp.draw(3)[0].sum()) == pytest.approx(t3, abs=1e-4)
        assert sp.budget == 0.25 * sp.work and sp.work == 4 * int(label.split("=")[1])
        assert (sp.flops, sp.min_bytes) == ((0, ref.cases[sp.index].min_bytes) if not sp.extra else (0, 0))


def test_gpu_launch_paths_on_a_cpu(tmp_path: Path, triton_patches) -> None:
    """What a GPU worker uses, exercised without one: JIT functions recorded by file, the launch hook."""
    from triton.runtime.jit import JITFunction

    cand = tmp_path / "candidate.py"
    cand.write_text("def _gpu_kernel(x):\n    pass\n\n\ndef _other(x):\n    pass\n")
    other = tmp_path / "library.py"
    other.write_text("def _gpu_kernel(x):\n    pass\n")
    counter = launches.install(str(cand), interpreted=False)
    try:
        mine, theirs = _load(cand, "gpu_candidate"), _load(other, "gpu_library")
        JITFunction(mine._gpu_kernel)
        JITFunction(theirs._gpu_kernel)
        assert counter.names == {"_gpu_kernel"} and isinstance(counter.jit["_gpu_kernel"], JITFunction)
        assert counter.jit["_gpu_kernel"].fn is mine._gpu_kernel
        from triton.compiler.compiler import LazyDict

        def never(*args: object) -> dict:
            raise AssertionError("the kernel's launch_metadata callback must not run in our hook")

        lazy = LazyDict({"name": "_gpu_kernel", "grid": (1, 1, 1)})
        lazy.add(never, ())
        counter.on_launch(lazy)  # what Triton passes
        counter.on_launch(LazyDict({"name": "_other"}))
        counter.on_launch({"name": "_gpu_kernel"})  # older Triton: a plain dict
        counter.on_launch(None)
        assert counter() == 2
        import triton

        chain = triton.knobs.runtime.launch_enter_hook
        with counter.quiet():  # a timed block: no Python call of ours per launch
            assert counter.on_launch not in chain.calls
            counted = counter.count_traced([Kernel("_gpu_kernel", 5.0), Kernel("_other", 1.0),
                                            Kernel("void at::native::fill(float*)", 1.0), Kernel("_gpu_kernel", 5.0)])
        assert counter.on_launch in chain.calls and counted == 2 and counter() == 4
    finally:
        import triton

        hook = triton.knobs.runtime.launch_enter_hook
        if hasattr(hook, "remove"):
            hook.remove(counter.on_launch)


def test_interpreted_launches_record_floating_dtypes_only(tmp_path: Path, triton_patches) -> None:
    cand = tmp_path / "candidate.py"
    cand.write_text(_KERNELS)
    counter = launches.install(str(cand), interpreted=True)
    mod = _load(cand, "dtype_candidate")
    x16 = torch.zeros(8, dtype=torch.float16)
    mod._double_kernel[(1,)](x16, torch.empty(8, dtype=torch.float16), 8, BLOCK=8)
    assert counter.dtypes == {"float16"} and counter() == 1
    ints = torch.zeros(8, dtype=torch.int32)
    mod._double_kernel[(1,)](ints, torch.empty(8, dtype=torch.int32), 8, BLOCK=8)
    assert counter.dtypes == {"float16"} and counter() == 2
    mod._double_kernel[(1,)](x_ptr=torch.zeros(8), y_ptr=torch.empty(8), n=8, BLOCK=8)
    assert counter.dtypes == {"float16", "float32"} and counter() == 3  # keyword arguments too


def test_foreign_kernels_sorted_by_time_and_tiny_totals() -> None:
    names, share = launches.foreign_kernels([Kernel("a_kernel", 0.1), Kernel("z_kernel", 0.3), Kernel("mine", 0.1)],
                                            {"mine"})
    assert names == ("z_kernel", "a_kernel") and share == pytest.approx(0.8)
    names, _ = launches.foreign_kernels([Kernel("b", 1.0), Kernel("b", 1.0), Kernel("a", 1.5)], set())
    assert names == ("b", "a")  # summed per name


def test_cuda_libdevice_and_boolean_results_in_the_interpreter(triton_patches) -> None:
    import triton
    import triton.language as tl

    interpreter.install()

    @triton.jit
    def _k(x_ptr, y_ptr, m_ptr, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0)
        tl.store(y_ptr + offs, cuda_libdevice.tanh(x) + cuda_libdevice.pow(x, 2.0), mask=mask)  # noqa: F821
        tl.store(m_ptr + offs, cuda_libdevice.signbit(x).to(tl.int32), mask=mask)  # noqa: F821

    x = torch.linspace(-1, 1, 6)
    y, m = torch.empty(6), torch.empty(6, dtype=torch.int32)
    _k[(1,)](x, y, m, 6, BLOCK=8)
    assert torch.allclose(y, torch.tanh(x) + x * x, atol=1e-6)
    assert m.tolist() == [1, 1, 1, 0, 0, 0]
    assert cuda_libdevice.tanh(0.5) == pytest.approx(np.tanh(0.5))  # a plain number stays a number


def test_channel_messages_exactly(tmp_path: Path) -> None:
    import io
    import os
    import socket
    import time

    from kernelevo.evaluate import protocol as P

    a, b = socket.socketpair()
    key = os.urandom(32)
    left, right = P.Channel(a, key), P.Channel(b, key)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        right.recv(timeout=0)
    assert time.monotonic() - t0 < 0.5
    P.Channel(a, os.urandom(32)).send(P.Bye())
    with pytest.raises(P.ChannelError, match=r"^a message that fails its signature \(tampered with\)$"):
        right.recv(timeout=5)

    buf = io.BytesIO()
    torch.save({"kind": "Bye", "x": Path("/an/object")}, buf)  # an object, not data: weights_only refuses it
    data = buf.getvalue()
    a.sendall(P._HEADER.pack(len(data), P.hmac.new(key, data, P.hashlib.sha256).digest()) + data)
    with pytest.raises(P.ChannelError, match=r"^an unreadable message \(\w+\)$"):
        right.recv(timeout=5)
    buf = io.BytesIO()
    torch.save({"kind": "Nope"}, buf)
    with pytest.raises(P.ChannelError, match="^a message of no known kind$"):
        P.decode(buf.getvalue())
    buf = io.BytesIO()
    torch.save({"kind": "Bye", "extra": 1}, buf)
    with pytest.raises(P.ChannelError, match="^Bye has no field 'extra'$"):
        P.decode(buf.getvalue())
    a.sendall(P._HEADER.pack(P.MAX_FRAME, b"\0" * 32))  # the largest frame is still read, not refused...
    a.close()
    with pytest.raises(P.ChannelError, match="^the other side closed the connection$"):  # ...until it ends
        right.recv(timeout=5)
    left.close()
    b.close()


def test_static_reasons_exactly() -> None:
    from kernelevo.evaluate.static import check_source

    assert check_source("x = 1\n").reason == "no top-level class ModelNew(nn.Module) defined"
    r = check_source("class ModelNew(Model):\n    pass\n")
    assert r.reason == "line 1: ModelNew subclasses the reference Model; write the forward yourself" and r.line == 1
    assert check_source("class ModelNew(make()):\n    pass\n").verdict is None  # not a name: not the reference


def test_recheck_compares_integers_exactly() -> None:
    from kernelevo.evaluate import judge

    big = torch.tensor([2**60], dtype=torch.int64)
    assert "reused" in judge.judge_recheck({0: (big,)}, {0: (big + 1,)}, "n")  # beyond float64's integers


def test_fresh_memory_is_nan_in_checked_calls_and_switching_that_off_is_refused() -> None:
    refusals: list[str] = []
    saved = confine._deterministic()
    with confine.fresh_memory_filled(refusals):
        assert bool(torch.isnan(torch.empty(1000)).all()) and bool(torch.isnan(torch.empty_like(torch.ones(3))).all())
        assert bool((torch.empty(10, dtype=torch.int32) == torch.iinfo(torch.int32).max).all())
        assert torch.exp(torch.zeros(3)).tolist() == [1.0, 1.0, 1.0]  # ops themselves are unchanged
    assert confine._deterministic() == saved and refusals == []
    with confine.fresh_memory_filled(refusals):
        torch.use_deterministic_algorithms(False)
    assert refusals == ["a switch of PyTorch's deterministic-algorithm settings (the judge fills fresh memory)"]
    assert confine._deterministic() == saved  # put back whatever the block did
    state = confine.ProcessState(confine.Snapshot(), [], [])
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        assert "deterministic-algorithm settings" in (state.violation() or "")
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    assert state.violation() is None


def test_nothing_the_worker_runs_after_hiding_the_judge_imports_it() -> None:
    """``hide_judge`` drops kernelevo from ``sys.modules`` and refuses importing it again, so a
    function-level ``from kernelevo ...`` in code a candidate's worker runs later (the GPU timing
    path, device facts) would be refused and blamed on the candidate. Only code that runs before
    the candidate's import may import lazily."""
    import ast

    from tests.conftest import ROOT

    before_import = {("evaluate/worker.py", "_clock")}
    modules = ["evaluate/worker.py", "evaluate/launches.py", "evaluate/cuda_clock.py", "evaluate/confine.py",
               "evaluate/timing.py", "evaluate/poison.py", "evaluate/interpreter.py", "evaluate/landlock.py",
               "evaluate/protocol.py", "profile/gpu.py", "profile/triton_meta.py", "problem.py", "reference.py",
               "work.py", "candidate.py"]
    lazy = []
    for rel in modules:
        tree = ast.parse((ROOT / "kernelevo" / rel).read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or (rel, fn.name) in before_import:
                continue
            for node in ast.walk(fn):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                    [a.name for a in node.names] if isinstance(node, ast.Import) else []
                lazy += [f"{rel}:{fn.name} imports {n}" for n in names if n.split(".")[0] == "kernelevo"]
    assert lazy == []


_WIDE = ("import torch\nimport torch.nn as nn\nbatch = 4\nwidth = 8\n"
         "class Model(nn.Module):\n    def forward(self, x):\n        return x * 2\n"
         "def get_inputs():\n    return [torch.randn(batch, width)]\ndef get_init_inputs():\n    return []\n"
         'SIZES = [{"batch": 1024, "width": 4096}, {"batch": 4096, "width": 8192}]\n'
         'CPU_SIZES = [{"batch": 3, "width": 40}, {"batch": 5, "width": 72}]\n')


def test_cpu_extra_sizes_go_beyond_the_gpu_sizes_lean_and_within_the_cpu_budget(tmp_path: Path) -> None:
    """Golden extra sizes for three seeds: beyond the largest declared width (GPU sizes included),
    the other dimension at its smallest CPU value (the interpreter pays per program)."""
    from kernelevo.evaluate.plan import CPU_EXTRA_BLOCKS, CPU_EXTRA_BYTES, size_cost

    f = tmp_path / "wide.py"
    f.write_text(_WIDE)
    p = load_problem(f)
    ref = build_reference(p, "cpu")
    got = {}
    for seed in (1, 2, 3):
        plan = make_plan(ref, seed, 0.25, 3.0)
        (extra,) = [sp for sp in plan.sizes if sp.extra]
        assert plan.notes == () and extra.init_inputs == () and extra.label == p.label(extra.size)
        cost = size_cost(p, extra.size)
        assert cost[0] <= CPU_EXTRA_BYTES and cost[1] <= CPU_EXTRA_BLOCKS
        got[seed] = extra.size
    assert got == {1: {"batch": 3, "width": 8526}, 2: {"batch": 3, "width": 10842}, 3: {"batch": 3, "width": 10237}}


def test_a_reference_failing_only_at_the_extra_size_is_a_note(tmp_path: Path) -> None:
    src = _WIDE.replace("        return x * 2", "        if x.device.type != 'meta' and x.shape[-1] > 8192:\n"
                        "            raise ValueError('too wide')\n        return x * 2")
    f = tmp_path / "wide.py"
    f.write_text(src)
    plan = make_plan(build_reference(load_problem(f), "cpu"), 1, 0.25, 3.0)
    assert plan.notes == ("no extra size: the reference failed at batch=3, width=8526 (ValueError)",)
    assert [sp.extra for sp in plan.sizes] == [False, False]
    layer = load_problem(PROBLEMS / "layernorm_small.py")
    sp = make_plan(build_reference(layer, "cpu"), 1, 0.25, 3.0).sizes[0]
    assert sp.init_inputs == tuple(layer.namespace(sp.size).get_init_inputs())  # what ModelNew is built with


def test_one_element_arrays_index_under_any_numpy(triton_patches) -> None:
    """Triton 3.6's interpreter does ``int(handle.data)`` on a one-element array, which NumPy 2.4
    refuses; the fix takes the element. Applied twice, it wraps once."""
    import operator
    from types import SimpleNamespace

    import numpy as np
    from triton.runtime import interpreter as interp

    def old_patch(tensor: type, scope: object) -> None:  # what Triton 3.6 installs
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data))
        scope.set_attr(tensor, "__bool__", lambda self: True)

    interp._patch_lang_tensor = old_patch
    interpreter.fix_numpy_scalars()
    once = interp._patch_lang_tensor
    interpreter.fix_numpy_scalars()
    assert interp._patch_lang_tensor is once and once is not old_patch

    class Scope:
        def __init__(self) -> None:
            self.names: list[str] = []

        def set_attr(self, obj: type, name: str, value: object) -> None:
            self.names.append(name)
            setattr(obj, name, value)

    class T:
        pass

    scope = Scope()
    interp._patch_lang_tensor(T, scope)
    t = T()
    for data in (np.array([7]), np.array(7), np.array([[5]], dtype=np.int32)):
        t.handle = SimpleNamespace(data=data)
        assert operator.index(t) in (7, 5) and type(operator.index(t)) is int
    assert scope.names == ["__index__", "__bool__", "__index__"]  # Triton's own patches kept, then ours
