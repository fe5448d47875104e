"""The judge's pure parts, one behaviour per test: stress comparison, mismatch patterns, call and
state judgements, the extra size, the work meter, the poison, the channel, the snapshot and the
audit policy. Fast, so the mutation score (scripts/mutation.py) runs them for every mutant."""

from __future__ import annotations

import math
import os
import random
import socket
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

from kernelevo.evaluate import judge, poison
from kernelevo.evaluate import protocol as P
from kernelevo.evaluate.compare import Tolerance, compare_stress, compare_tensor, describe_mismatch
from kernelevo.evaluate.confine import ProcessState, Snapshot, _stdlib, _transparent
from kernelevo.evaluate.plan import (
    PlannedCall,
    SizePlan,
    _blocks,
    _pick,
    _pow2,
    choose_extra_size,
    extra_size_knobs,
    size_cost,
)
from kernelevo.evaluate.timing import Kernel
from kernelevo.evaluate.verdict import Verdict
from kernelevo.problem import load_problem
from tests.conftest import PROBLEMS, ROOT

FP32 = Tolerance.for_dtype(torch.float32)


# -- stress draws ----------------------------------------------------------------------------------


def test_stress_passes_what_is_as_accurate_as_pytorch() -> None:
    truth = torch.randn(64, dtype=torch.float64) * 1000
    ref = truth.float()
    assert compare_stress([ref.clone()], [ref], [truth], note="input scale 40").ok
    # off by a few times PyTorch's own rounding: still fine
    assert compare_stress([(truth + 3 * (ref.double() - truth)).float()], [ref], [truth], note="x").ok


def test_stress_allows_what_the_problems_conditioning_forces_and_no_more() -> None:
    from kernelevo.evaluate.compare import SENSITIVITY_FACTOR
    from kernelevo.evaluate.plan import _sensitivity

    # LayerNorm at an offset of 500: rounding the inputs as float32 does moves the exact result
    model = torch.nn.LayerNorm(1000)
    x = torch.randn(8, 1000) + 500.0
    with torch.no_grad():
        truth = (model.double()(x.double()),)
    model.float()
    sens = _sensitivity(model, [x], "cpu", truth, seed=0)
    assert sens is not None and 1e-6 < sens[0] < 1e-3  # ~ eps * 500 * rstd: about 3e-5
    ref = model(x).detach()
    t = truth[0]
    luckier = t + (ref.double() - t).sign() * 1e-9  # PyTorch's own error taken as tiny
    stable = (t + 20 * sens[0] * torch.sign(torch.randn_like(t))).float()  # Welford measured up to 23x
    assert not compare_stress([stable], [luckier.float()], [t], note="offset 500").ok  # 4x PyTorch's: too tight
    assert compare_stress([stable], [luckier.float()], [t], note="offset 500", sensitivity=list(sens)).ok
    one_pass = (t + 4 * SENSITIVITY_FACTOR * sens[0]).float()  # one-pass variance: 370x and more
    c = compare_stress([one_pass], [luckier.float()], [t], note="offset 500", sensitivity=list(sens))
    assert not c.ok and "loses precision at offset 500" in c.reason


def test_stress_fails_overflow_where_the_reference_is_finite() -> None:
    truth = torch.linspace(0, 1, 8, dtype=torch.float64)
    ref = truth.float()
    got = ref.clone()
    got[3] = float("inf")
    c = compare_stress([got], [ref], [truth], note="input scale 40")
    assert not c.ok and c.reason.startswith("overflow: inf at input scale 40") and "1 of 8" in c.reason
    got[3] = float("nan")
    assert "overflow: nan" in compare_stress([got], [ref], [truth], note="n").reason


def test_stress_ignores_elements_where_the_reference_overflowed() -> None:
    ref = torch.tensor([1.0, float("inf"), 2.0])
    truth = torch.tensor([1.0, 1e300, 2.0], dtype=torch.float64)
    got = torch.tensor([1.0, 5.0, 2.0])
    assert compare_stress([got], [ref], [truth], note="n").ok


def test_stress_fails_a_loss_of_precision_and_says_how_much() -> None:
    truth = torch.randn(256, dtype=torch.float64)
    ref = truth.float()
    c = compare_stress([(truth * 1.01).float()], [ref], [truth], note="inputs offset by 500")
    assert not c.ok and "loses precision at inputs offset by 500" in c.reason and "PyTorch's own" in c.reason
    assert c.max_abs_err > 0


def test_stress_checks_shape_dtype_count_and_integers() -> None:
    ref = torch.ones(4)
    assert "shape" in compare_stress([torch.ones(5)], [ref], None, note="n").reason
    assert "dtype" in compare_stress([torch.ones(4, dtype=torch.float64)], [ref], None, note="n").reason
    assert "returned 2 tensors" in compare_stress([ref, ref], [ref], None, note="n").reason
    ints = torch.arange(4)
    assert compare_stress([ints.clone()], [ints], None, note="n").ok
    assert not compare_stress([ints + 1], [ints], None, note="n").ok
    # without a float64 truth the float32 reference is the yardstick
    assert not compare_stress([ref * 1.1], [ref], None, note="n").ok


def test_stress_respects_the_problem_tolerance() -> None:
    truth = torch.ones(8, dtype=torch.float64)
    assert compare_stress([torch.full((8,), 1.01)], [truth.float()], [truth], atol=0.0, rtol=0.02, note="n").ok
    assert not compare_stress([torch.full((8,), 1.01)], [truth.float()], [truth], note="n").ok


# -- mismatch patterns -----------------------------------------------------------------------------


def test_mismatch_names_columns_never_written() -> None:
    e = torch.randn(4, 100)
    a = e.clone()
    a[:, 64:] = 0
    assert describe_mismatch(a, e, FP32) == "columns 64 and beyond are never written? (the first 64 are right)"
    a[:, 64:] = torch.randn(4, 36)
    assert describe_mismatch(a, e, FP32) == "columns 64 and beyond are wrong (the first 64 are right)"


def test_mismatch_names_rows_elements_and_everything() -> None:
    e = torch.randn(10, 8)
    a = e.clone()
    a[6:] += 1
    assert describe_mismatch(a, e, FP32).startswith("rows 6 and beyond are wrong")
    flat = torch.randn(50)
    cut = flat.clone()
    cut[20:] = 0
    assert describe_mismatch(cut, flat, FP32).startswith("elements 20 and beyond are never written?")
    assert describe_mismatch(e + 1, e, FP32) == "every element is wrong"
    assert describe_mismatch(e.clone(), e, FP32) == ""  # nothing wrong: no pattern
    scattered = e.clone()
    scattered[0, 3] += 1
    scattered[5, 0] += 1
    assert describe_mismatch(scattered, e, FP32) == ""
    assert describe_mismatch(torch.ones(3), e, FP32) == ""  # a shape mismatch has its own reason


# -- call, recheck and state judgements ------------------------------------------------------------


def _size(work: float = 100.0, stateful: bool = False, final: dict | None = None) -> SizePlan:
    return SizePlan(0, "n=4", {"n": 4}, (), {}, {}, (), final or {"w": torch.ones(2)}, stateful, 25.0, work)


def _planned(kind: str = "plain", expected: torch.Tensor | None = None) -> PlannedCall:
    x = torch.arange(4.0)
    return PlannedCall(kind, (x,), "d0", (x * 2 if expected is None else expected,), None, "inputs x2")


def _out(values: torch.Tensor, launches: int = 1, poisoned: bool = False, work: float = 0.0,
         digest: str = "d0", dtypes: tuple[str, ...] = ()) -> P.Output:
    return P.Output(0, (values,), launches, digest, work, ("aten::exp",) if work else (), poisoned, dtypes)


def test_judge_call_passes_a_right_answer_with_its_errors() -> None:
    j = judge.judge_call(_planned(), _out(torch.arange(4.0) * 2), _size(), None, None, 0.25, 0)
    assert j.ok and j.verdict is None and j.max_abs_err == 0.0


def test_judge_call_order_of_reasons() -> None:
    right, wrong = torch.arange(4.0) * 2, torch.zeros(4)
    assert "modified its inputs" in judge.judge_call(_planned(), _out(right, digest="x"), _size(), None, None,
                                                     0.25, 0).reason
    poisoned = judge.judge_call(_planned(), _out(wrong, 0, True, 300.0), _size(), None, None, 0.25, 3)
    assert poisoned.verdict is Verdict.REJECTED
    assert "correct for 3 calls, then 300% of the reference's work ran in PyTorch (aten::exp)" in poisoned.reason
    assert "beyond 25%" in poisoned.reason
    first = judge.judge_call(_planned(), _out(wrong, 1, True, 50.0), _size(), None, None, 0.25, 0)
    assert "correct for" not in first.reason and "50%" in first.reason
    no_kernel = judge.judge_call(_planned(), _out(right, 0), _size(), None, None, 0.25, 0)
    assert no_kernel.verdict is Verdict.REJECTED and "no kernel of its own" in no_kernel.reason
    plain_wrong = judge.judge_call(_planned(), _out(wrong), _size(), None, None, 0.25, 0)
    assert plain_wrong.verdict is Verdict.INCORRECT and "size n=4, draw (inputs x2): " in plain_wrong.reason
    # poisoned but right (the garbage was discarded): nothing to hold against it
    assert judge.judge_call(_planned(), _out(right, 1, True, 999.0), _size(), None, None, 0.25, 0).ok


def test_judge_call_says_which_kind_of_draw_failed() -> None:
    wrong = torch.zeros(4)
    extra = judge.judge_call(_planned("extra"), _out(wrong), _size(), None, None, 0.25, 5)
    assert "correct on the declared sizes but wrong at this one, outside them" in extra.reason
    extra_torch = judge.judge_call(_planned("extra"), _out(wrong, 0, True, 100.0), _size(), None, None, 0.25, 5)
    assert "correct on the declared sizes, but at this one, outside them, 100%" in extra_torch.reason
    b = judge.judge_call(_planned("weights B"), _out(wrong), _size(), None, None, 0.25, 5)
    assert "second set of weights" in b.reason
    low = judge.judge_call(_planned(), _out(torch.arange(4.0) * 2.001, dtypes=("float16",)), _size(), None, None,
                           0.25, 0)
    assert "received float16 tensors in a float32 problem" in low.reason
    fine = judge.judge_call(_planned(), _out(torch.arange(4.0) * 2.001), _size(), None, None, 0.25, 0)
    assert "received" not in fine.reason


def test_judge_call_uses_the_problem_tolerance_and_stress_comparison() -> None:
    near = torch.arange(4.0) * 2 * 1.01
    assert judge.judge_call(_planned(), _out(near), _size(), 0.0, 0.02, 0.25, 0).ok
    assert not judge.judge_call(_planned(), _out(near), _size(), None, None, 0.25, 0).ok
    x = torch.arange(4.0)
    stress = PlannedCall("magnitude", (x,), "d0", (x.exp(),), (x.double().exp(),), "input scale 40")
    inf = x.exp()
    inf[1] = float("inf")
    assert "overflow: inf at input scale 40" in judge.judge_call(stress, _out(inf), _size(), None, None, 0.25, 0).reason


def test_recheck_catches_a_reused_buffer_and_a_lost_output() -> None:
    a = {0: (torch.ones(3),), 1: (torch.zeros(3),)}
    assert judge.judge_recheck(a, {0: (torch.ones(3),), 1: (torch.zeros(3),)}, "n=3") is None
    nan = {0: (torch.tensor([float("nan")]),)}
    assert judge.judge_recheck(nan, {0: (torch.tensor([float("nan")]),)}, "n=3") is None
    changed = judge.judge_recheck(a, {0: (torch.zeros(3),), 1: (torch.zeros(3),)}, "n=3")
    assert changed and "the buffer is reused" in changed and changed.startswith("size n=3")
    assert "gone" in judge.judge_recheck(a, {0: (torch.ones(3),)}, "n=3")
    assert "reused" in judge.judge_recheck(a, {0: (torch.ones(4),), 1: (torch.zeros(3),)}, "n=3")
    assert "reused" in judge.judge_recheck({0: (torch.arange(3),)}, {0: (torch.arange(3) + 1,)}, "n=3")


def test_state_parameters_exact_buffers_of_stateful_problems_within_tolerance() -> None:
    final = {"w": torch.ones(4), "running_mean": torch.zeros(4)}
    sp = _size(final=final)
    assert judge.judge_state({k: v.clone() for k, v in final.items()}, sp, None, None) is None
    nudged = {"w": torch.ones(4) + 1e-7, "running_mean": torch.zeros(4)}
    assert "w changed during forward" in judge.judge_state(nudged, sp, None, None)
    assert "gone" in judge.judge_state({"w": torch.ones(4)}, sp, None, None)
    stateful = _size(stateful=True, final=final)
    assert judge.judge_state(nudged, stateful, None, None) is None  # within tolerance: an update's rounding
    bad = {"w": torch.ones(4), "running_mean": torch.ones(4)}
    reason = judge.judge_state(bad, stateful, None, None, when="call 2")
    assert "running_mean after call 2" in reason and "updates it on every call" in reason
    assert judge.judge_state(bad, stateful, None, None, expected_state=bad) is None


def test_timed_outputs_are_checked_and_missing_ones_reported() -> None:
    sp = _size()
    exp = {3: (torch.ones(2),)}
    assert judge.judge_timed({3: (torch.ones(2),)}, exp, sp, None, None, 7) is None
    wrong = judge.judge_timed({3: (torch.zeros(2),)}, exp, sp, None, None, 7)
    assert "a timed call's output is wrong after 7 correct calls" in wrong
    assert "gone" in judge.judge_timed({}, exp, sp, None, None, 7)


def test_shares_and_foreign_kernels() -> None:
    assert judge.share_text(99, 100) == "99%" and judge.share_text(2500, 100) == "25x"
    assert "does none" in judge.share_text(1, 0)
    assert judge.torch_share(50, 200) == 0.25 and judge.torch_share(0, 0) == 0.0
    assert judge.torch_share(1, 0) == float("inf")
    out = P.Output(0, (), 1, "", 0, (), False, (), ("cupy_matmul",), 0.9)
    assert "90% of the GPU time ran in kernels it did not write (cupy_matmul)" in judge.foreign_reason(out, 0.25)
    assert judge.foreign_reason(P.Output(0, (), 1, "", 0, (), False, (), ("k",), 0.1), 0.25) is None


def test_foreign_kernels_are_those_neither_the_candidate_nor_pytorch_wrote() -> None:
    from kernelevo.evaluate.launches import foreign_kernels

    trace = [Kernel("_softmax_kernel", 10.0),
             Kernel("void at::native::vectorized_elementwise_kernel<4, FillFunctor>(int)", 2.0),
             Kernel("cupy_exp__float32_float32", 24.0), Kernel("sm90_xmma_gemm_f32f32_tf32f32", 12.0),
             Kernel("void cupy_exp__float32_float32()", 0.0), Kernel("void add_one(float*)", 0.0),
             Kernel("_kernelevo_l2_flush_kernel", 50.0), Kernel("_kernelevo_mark_kernel", 1.0),  # ours
             Kernel("Memcpy DtoD (Device -> Device)", 30.0), Kernel("Memset (Device)", 5.0)]  # data movement
    names, share = foreign_kernels(trace, {"_softmax_kernel", "add_one"})
    assert names[:2] == ("cupy_exp__float32_float32", "sm90_xmma_gemm_f32f32_tf32f32")
    assert "void add_one(float*)" not in names and share == pytest.approx(36.0 / 48.0)
    assert foreign_kernels([], {"k"}) == ((), 0.0)
    assert foreign_kernels([Kernel("k", 0.0)], {"k"}) == ((), 0.0)


def test_interpreter_gaps_are_not_blamed_on_the_kernel() -> None:
    from kernelevo.evaluate.interpreter import _round_tf32, interpreter_fault

    tb = 'File "/x/site-packages/triton/runtime/interpreter.py", line 872, in create_extern_elementwise'
    gap = interpreter_fault(NotImplementedError("extern_elementwise not supported in interpreter mode"), tb)
    assert gap and "interpreter's limit, not necessarily a fault of the kernel" in gap
    numpy_gap = interpreter_fault(TypeError("only length-1 arrays can be converted to Python scalars"), tb)
    assert numpy_gap and "only length-1 arrays" in numpy_gap
    assert interpreter_fault(ValueError("shape mismatch"), tb) is None  # the kernel's own fault
    assert interpreter_fault(NotImplementedError("x"), "File /x/kernel.py") is None  # not the interpreter
    import numpy as np

    x = np.array([1.0 + 2**-12, 1.0 + 2**-10, -3.14159], dtype=np.float32)
    r = _round_tf32(x)
    assert r[0] == 1.0 and r[1] == x[1] and abs(r[2] - x[2]) < 2**-9 and r.dtype == np.float32


# -- the extra size --------------------------------------------------------------------------------


def test_picks_are_in_range_and_not_powers_of_two() -> None:
    rng = random.Random(0)
    for lo, hi in ((65, 128), (5, 10), (4097, 8194)):
        for uniform in (False, True):
            vs = [_pick(rng, lo, hi, uniform) for _ in range(50)]
            assert all(lo <= v <= hi and not _pow2(v) for v in vs)
    assert _pick(rng, 4, 4) == 4  # nothing else to pick
    assert [_pow2(v) for v in (0, 1, 2, 3, 64, 96)] == [False, True, True, False, True, False]


def test_extra_size_goes_beyond_every_declared_size_within_budget() -> None:
    p = load_problem(ROOT / "kernels" / "softmax" / "problem.py")
    m = p.namespace(p.sizes[0])
    knobs = extra_size_knobs(p, m)
    assert knobs == {"batch_size": (5, 16, 32768), "dim": (33, 4097, 50257)}  # GPU sizes count too
    size, note = choose_extra_size(p, m, random.Random(1), (4 << 20, 1 << 62),
                                   lambda z: (8 * z["batch_size"] * z["dim"], 0), lean=True)
    assert note == "" and size["dim"] > 50257 and size["dim"] <= 2 * 50257 and size["batch_size"] == 5
    rows, _ = choose_extra_size(p, m, random.Random(1), (1 << 62, 2048), lambda z: (0, z["batch_size"]), lean=True)
    assert rows["batch_size"] == 5 and rows["dim"] > 50257  # many rows cost the interpreter: width goes beyond
    roomy, _ = choose_extra_size(p, m, random.Random(1), (1 << 62, 1 << 62), lambda z: (0, 0))
    assert roomy["batch_size"] > 32768 and roomy["dim"] > 50257  # every dimension beyond when it fits


def test_size_cost_counts_bytes_and_output_row_blocks() -> None:
    p = load_problem(ROOT / "kernels" / "softmax" / "problem.py")
    assert size_cost(p, {"batch_size": 5, "dim": 3000}) == (2 * 5 * 3000 * 4, 5 * 3)
    assert _blocks(torch.empty(2500)) == 3 and _blocks(torch.empty(())) == 1
    assert _blocks(torch.empty(7, 3, 1025)) == 21 * 2 and _blocks(3.0) == 1
    assert _blocks(torch.empty(1025)) == 2 and _blocks(torch.empty(1024)) == 1  # 1-D: blocks of the one row
    assert _blocks(torch.empty(2, 1024)) == 2 and _blocks(torch.empty(4, 0)) == 0  # empty rows span nothing
    assert _blocks(torch.empty(3, 1)) == 3


def test_extra_size_gives_up_with_a_note() -> None:
    p = load_problem(ROOT / "kernels" / "softmax" / "problem.py")
    m = p.namespace(p.sizes[0])
    size, note = choose_extra_size(p, m, random.Random(1), (10, 10), lambda z: (1 << 30, 1))
    assert size is None and "over the budget" in note

    def refuse(z: dict) -> int:
        raise ValueError("shapes do not fit")

    size, note = choose_extra_size(p, m, random.Random(1), (10, 10), refuse)
    assert size is None and "ValueError: shapes do not fit" in note


def test_extra_size_setting_bounds_or_turns_it_off(tmp_path) -> None:
    src = (PROBLEMS / "softmax_small.py").read_text()
    off = tmp_path / "off.py"
    off.write_text(src + "\nEXTRA_SIZE = False\n")
    p = load_problem(off)
    assert extra_size_knobs(p, p.namespace(p.sizes[0])) == {}
    assert choose_extra_size(p, p.namespace(p.sizes[0]), random.Random(0), (1, 1), lambda z: (0, 0)) == (None, "")
    bound = tmp_path / "bound.py"
    bound.write_text(src + '\nEXTRA_SIZE = {"dim": 100}\n')
    p = load_problem(bound)
    assert extra_size_knobs(p, p.namespace(p.sizes[0])) == {"dim": (37, 64, 50)}
    size, _ = choose_extra_size(p, p.namespace(p.sizes[0]), random.Random(0), (1, 1), lambda z: (0, 0))
    assert set(size) == {"dim"} and 50 < size["dim"] <= 100


def test_single_size_problems_move_their_dimension_like_globals(tmp_path) -> None:
    f = tmp_path / "kb.py"
    f.write_text("import torch\nimport torch.nn as nn\nbatch_size = 16\ndim = 1000\nkernel_size = 3\nLIMIT = 64\n"
                 "class Model(nn.Module):\n    def forward(self, x):\n        return x\n"
                 "def get_inputs():\n    return [torch.randn(batch_size, dim)]\n"
                 "def get_init_inputs():\n    return []\n")
    p = load_problem(f)
    assert extra_size_knobs(p, p.namespace({})) == {"batch_size": (16, 16, 16), "dim": (1000, 1000, 1000)}
    pinned = load_problem(f, {"dim": 40})  # --set fixes a global for every size: the extra one too
    assert set(extra_size_knobs(pinned, pinned.namespace(pinned.sizes[0]))) == {"batch_size"}


# -- the meter and the poison ----------------------------------------------------------------------


def test_work_counts_flops_for_matmuls_elements_for_the_rest_and_nothing_for_glue() -> None:
    a, b = torch.randn(4, 5), torch.randn(5, 6)
    mm = torch.ops.aten.mm.default
    assert poison.work_of(mm.overloadpacket, mm.name(), (a, b), {}, a @ b) == 2 * 4 * 5 * 6
    exp = torch.ops.aten.exp.default
    assert poison.work_of(exp.overloadpacket, exp.name(), (a,), {}, a.exp()) == 20
    view = torch.ops.aten.view.default
    assert poison.work_of(view.overloadpacket, view.name(), (a, [20]), {}, a.view(20)) == 0
    size = torch.ops.aten.sym_size.int
    assert poison.work_of(size.overloadpacket, size.name(), (a, 0), {}, 4) == 0  # metadata
    item = torch.ops.aten._local_scalar_dense.default
    assert poison.work_of(item.overloadpacket, item.name(), (a[0, 0],), {}, 1.0) == 1
    assert poison.base_name("aten::add_.Tensor") == "add" and poison.base_name("aten::__and__.Tensor") == "__and__"


def test_the_recorder_meters_the_reference_as_the_poison_meters_the_candidate() -> None:
    x = torch.randn(8, 16)
    with poison.WorkRecorder() as rec:
        torch.softmax(x, -1)
        torch.nn.functional.linear(x, torch.randn(4, 16))  # decomposes: charged as its matmul
    assert rec.work == 8 * 16 + 2 * 8 * 16 * 4
    assert set(rec.ops) == {"_softmax", "mm"}  # the transpose is glue: no work, not listed


def test_meter_top_ops_and_reset() -> None:
    m = poison.Meter()
    m.ops.update({"exp": 3, "sum": 1, "div": 2})
    m.spent, m.poisoned = 5.0, True
    assert m.top_ops(2) == ("aten::exp", "aten::div")
    m.begin(10.0)
    assert (m.budget, m.spent, m.poisoned, m.top_ops()) == (10.0, 0.0, False, ())


def test_poison_charges_garbles_past_the_budget_spares_glue_and_comes_out() -> None:
    """Installed, the poison charges compute, garbles it past the budget however the op is reached,
    spares glue and exempt files; removed, PyTorch is itself again."""
    x = torch.randn(8, 16)
    right = torch.softmax(x, -1)
    p = poison.install(("CPU",))
    try:
        m = p.meter
        m.begin(1e9)
        y = torch.softmax(x, -1)
        assert not m.poisoned and m.spent == 8 * 16 and m.top_ops() == ("aten::_softmax",)
        assert torch.equal(y, right)
        m.begin(10)
        y = torch.softmax(x, -1)
        assert m.poisoned
        m.begin(float("inf"))  # judging the garbage is compute too
        assert not torch.allclose(y, right)
        m.begin(0)
        torch.empty(5).fill_(1.0).view(5, 1).clone().t().contiguous()
        assert not m.poisoned and m.spent == 0
        def inference() -> torch.Tensor:
            with torch.inference_mode():
                return torch.exp(x)

        def exclude_python() -> torch.Tensor:
            with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.Python)):
                return torch.exp(x)

        reached = {
            "inference_mode": inference,
            "redispatch": lambda: torch.ops.aten.exp.default.redispatch(
                torch._C.DispatchKeySet(torch._C.DispatchKey.CPU), x),
            "exclude_python": exclude_python,
            "item": lambda: x.sum().item(),
            "wrapped_scalar": lambda: x * 2,
            "in_place": lambda: x.clone().mul_(3),
            "out": lambda: torch.exp(x, out=torch.empty_like(x)),
        }
        for name, fn in reached.items():
            m.begin(0)
            got = fn()
            assert m.poisoned, name
            if isinstance(got, torch.Tensor) and name != "item":
                m.begin(float("inf"))
                assert not torch.allclose(got.float(), (x * 2 if name == "wrapped_scalar" else
                                                        x * 3 if name == "in_place" else x.exp())), name
        m.begin(0)
        w = torch.ones(3).sum()  # 3 elements: charged, over a budget of 0
        assert m.poisoned and m.spent == 3
        int_out = torch.arange(6).argmax()  # a garbled index stays an index
        m.begin(float("inf"))
        assert 0 <= int(int_out) < 7 and w.dtype == torch.float32
        p.exempt(__file__)
        m.begin(0)
        assert torch.equal(torch.softmax(x, -1), right) and not m.poisoned  # the harness's own ops
    finally:
        p.remove()
    assert torch.equal(torch.softmax(x, -1), right)


def test_poison_refuses_host_reads() -> None:
    refused: list[str] = []
    originals = poison.Poison.refuse_host_reads(refused)
    try:
        t = torch.ones(3)
        for read in (lambda: t.numpy(), lambda: t.tolist(), lambda: t.__array__(), lambda: t.__dlpack__()):
            with pytest.raises(RuntimeError, match="refused in the judge"):
                read()
        assert refused == ["numpy", "tolist", "__array__", "__dlpack__"]
        assert originals["numpy"](t).tolist() == [1.0, 1.0, 1.0]
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)
    assert torch.ones(2).tolist() == [1.0, 1.0]


# -- the channel -----------------------------------------------------------------------------------


def test_channel_round_trip_and_refusals() -> None:
    a, b = socket.socketpair()
    key = os.urandom(32)
    left, right = P.Channel(a, key), P.Channel(b, key)
    msg = P.Call(3, (torch.arange(4), 2.5, (1, 2)), pin=1)
    left.send(msg)
    got = right.recv(timeout=5)
    assert isinstance(got, P.Call) and got.id == 3 and got.pin == 1 and torch.equal(got.inputs[0], torch.arange(4))
    assert got.inputs[1:] == (2.5, (1, 2))
    P.Channel(a, b"wrong key" * 4).send(P.Bye())
    with pytest.raises(P.ChannelError, match="signature"):
        right.recv(timeout=5)
    with pytest.raises(TimeoutError):
        right.recv(timeout=0.05)
    a.close()
    with pytest.raises(P.ChannelError):
        right.recv(timeout=5)
    b.close()


def test_messages_of_unknown_kind_or_fields_are_refused() -> None:
    import io

    for body in ({"kind": "Nope"}, {"kind": "Bye", "extra": 1}, [1, 2]):
        buf = io.BytesIO()
        torch.save(body, buf)
        with pytest.raises(P.ChannelError):
            P.decode(buf.getvalue())
    assert P.decode(P.encode(P.Ready(("k",), 3, "note"))) == P.Ready(("k",), 3, "note")


# -- the snapshot, the process state and the audit policy ------------------------------------------


def test_snapshot_names_a_patched_function_or_a_shadowed_method() -> None:
    snap = Snapshot()
    assert snap.changed() is None
    original = torch.softmax
    torch.softmax = lambda *a, **k: None
    try:
        assert snap.changed() == "torch.softmax"
    finally:
        torch.softmax = original
    torch.Tensor.exp = lambda self: self  # shadows TensorBase.exp
    try:
        assert snap.changed() == "torch.Tensor.exp"
    finally:
        del torch.Tensor.exp
    assert snap.changed() is None


def test_process_state_sees_modes_threads_and_refusals() -> None:
    from torch.utils._python_dispatch import TorchDispatchMode

    refusals: list[str] = []
    reads: list[str] = []
    state = ProcessState(Snapshot(), refusals, reads)
    assert state.violation() is None
    mode = TorchDispatchMode()
    mode.__enter__()
    try:
        assert "TorchDispatchMode" in state.violation()
    finally:
        mode.__exit__(None, None, None)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert "thread" in state.violation()
    finally:
        stop.set()
        t.join()
    assert state.violation() is None
    reads.append("numpy")
    assert "Tensor.numpy()" in state.violation()
    refusals.append("frame inspection (sys._getframe)")
    assert state.violation().startswith("used frame inspection")


def test_audit_policy_on_whose_behalf() -> None:
    import inspect

    assert _stdlib(inspect.__file__) and _stdlib("<frozen importlib._bootstrap>") and not _stdlib(torch.__file__)
    assert _transparent(inspect.__file__, "frames") and not _transparent(threading.__file__, "frames")
    assert _transparent(threading.__file__, "system") and not _transparent(torch.__file__, "system")
    assert not _transparent(inspect.__file__, "direct")


def test_audit_hook_in_a_process_of_its_own(tmp_path) -> None:
    """Refused to the candidate's code however spelled; libraries keep their own uses."""
    cand = tmp_path / "candidate.py"
    cand.write_text(textwrap.dedent("""
        import collections, dataclasses, inspect, sys

        def probe(fn):
            try:
                fn()
                return "allowed"
            except PermissionError:
                return "refused"

        def run():
            return {
                "getframe": probe(lambda: sys._getframe()),
                "inspect": probe(lambda: inspect.stack()),
                "namedtuple": probe(lambda: collections.namedtuple("P", "a b")),
                "dataclass": probe(lambda: dataclasses.make_dataclass("D", ["a"])),
                "eval": probe(lambda: __import__("builtins").__dict__["ev" + "al"]("1")),
                "gc": probe(lambda: __import__("g" + "c").get_objects()),
                "popen": probe(lambda: __import__("os").popen("true").read()),
                "socket": probe(lambda: __import__("socket").socket()),
            }
        """))
    script = textwrap.dedent(f"""
        import importlib.util, subprocess
        from kernelevo.evaluate.confine import install_audit
        refusals = []
        install_audit({str(cand)!r}, refusals)
        spec = importlib.util.spec_from_file_location("candidate", {str(cand)!r})
        m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
        result = m.run()
        subprocess.run(["true"])  # this script is not the candidate: allowed
        print(repr((result, len(refusals))))
        """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    result, n = eval(res.stdout.strip().splitlines()[-1])  # noqa: S307 - our own script's repr
    assert result == {"getframe": "refused", "inspect": "refused", "namedtuple": "allowed",
                      "dataclass": "allowed", "eval": "refused", "gc": "refused", "popen": "refused",
                      "socket": "refused"}, res.stderr
    assert n == 6


# -- exact behaviour of the stress comparison and the mismatch patterns (mutation-tested) ------------


def test_stress_reports_exactly() -> None:
    nan = float("nan")
    one = torch.ones(3)
    c = compare_stress([one, one], [one], None, note="n")
    assert (c.ok, c.reason) == (False, "forward returned 2 tensors, expected 1")
    assert c.max_abs_err != c.max_abs_err and c.max_rel_err != c.max_rel_err
    two = [torch.ones(2), torch.ones(3)]
    c = compare_stress([torch.ones(2), torch.ones(4)], two, None, note="n")
    assert c.reason == "output[1] has shape (4,), expected (3,)"
    c = compare_stress([torch.ones(2), "x"], two, None, note="n")
    assert c.reason == "output[1] is str, expected a torch.Tensor"
    truth = [t.double() for t in two]
    c = compare_stress([torch.ones(2), torch.ones(3) * 2], two, truth, note="input scale 40")
    assert c.reason.startswith("output[1] loses precision at input scale 40: 3 of 3 elements off by up to 1")
    ok = compare_stress([torch.ones(2), torch.ones(3)], two, truth, note="n")
    assert (ok.ok, ok.reason, ok.max_abs_err, ok.max_rel_err) == (True, "", 0.0, 0.0)
    assert nan != nan


def test_stress_checks_every_output_past_integer_and_overflowed_ones() -> None:
    ints, floats = torch.arange(3), torch.ones(3)
    assert not compare_stress([ints, floats * 2], [ints, floats], [ints.double(), floats.double()], note="n").ok
    inf = torch.full((3,), float("inf"))
    assert not compare_stress([inf, floats * 2], [inf, floats], [inf.double(), floats.double()], note="n").ok
    # where the float64 truth overflows but the float32 reference did not, nothing is compared
    assert compare_stress([torch.tensor([5.0])], [torch.tensor([1.0])], [torch.tensor([float("inf")],
                          dtype=torch.float64)], note="n").ok


def test_stress_overflow_is_reported_with_its_counts() -> None:
    e = torch.ones(4)
    got = torch.tensor([1.0, float("-inf"), float("inf"), 1.0])
    c = compare_stress([got], [e], [e.double()], note="inputs offset by 500")
    assert c.reason == "overflow: inf at inputs offset by 500 where the reference is finite (2 of 4 elements)"
    assert c.max_abs_err != c.max_abs_err and c.max_rel_err != c.max_rel_err


def test_stress_allowance_is_the_tolerance_plus_four_times_pytorchs_error() -> None:
    t = torch.full((10,), 100.0, dtype=torch.float64)  # RMS 100: atol 1e-2; rtol 1e-4 x 100 = 1e-2
    ref = (t + 0.5).float()  # PyTorch's own error: 0.5
    base = 1e-2 + 1e-2 + 4 * 0.5
    assert compare_stress([(t + base - 1e-3).float()], [ref], [t], note="n").ok
    c = compare_stress([(t + base + 2e-2).float()], [ref], [t], note="n")
    assert not c.ok and "PyTorch's own float32 error there: 0.5" in c.reason
    assert abs(c.max_abs_err - (base + 2e-2)) < 1e-3 and abs(c.max_rel_err - (base + 2e-2) / 100) < 1e-5
    # the cap: outputs of scale 1e-3 allow at most 1e-5 absolute, not 1e-4
    small = torch.full((4,), 1e-3, dtype=torch.float64)
    assert compare_stress([(small + 9e-6).float()], [small.float()], [small], rtol=0.0, note="n").ok
    assert not compare_stress([(small + 2e-5).float()], [small.float()], [small], rtol=0.0, note="n").ok
    # the problem's atol and rtol apply, each on its own
    ten = torch.full((4,), 10.0, dtype=torch.float64)  # RMS 10, cap 0.1
    off = [(ten + 0.05).float()]
    assert compare_stress(off, [ten.float()], [ten], atol=0.01, rtol=0.0, note="n").ok  # 0.01 x 10
    assert not compare_stress(off, [ten.float()], [ten], atol=0.001, rtol=0.0, note="n").ok
    assert compare_stress(off, [ten.float()], [ten], atol=0.0, rtol=0.01, note="n").ok


def test_mismatch_patterns_edges() -> None:
    tol = Tolerance(1e-4, 1e-4)
    single = torch.tensor([1.0])
    assert describe_mismatch(single + 1, single, tol) == ""  # one element: no pattern to name
    nan = torch.tensor([float("nan"), 1.0, 2.0])
    assert describe_mismatch(nan.clone(), nan, tol) == ""  # NaN where the reference has NaN is right
    e = torch.arange(1.0, 11.0)
    a = e.clone()
    a[0] += 1  # wrong from the very first element: not a block that stops short
    a[5:] += 1
    assert describe_mismatch(a, e, tol) == ""
    nine = e.clone()
    nine[1:] += 1
    nine[5] = e[5]  # 8 of the 9 beyond index 1 wrong: under 90%
    assert describe_mismatch(nine, e, tol) == ""
    tenth = torch.arange(1.0, 12.0)
    t = tenth.clone()
    t[1:] += 1
    t[6] = tenth[6]  # 9 of the 10 beyond index 1 wrong: exactly 90%
    assert describe_mismatch(t, tenth, tol).startswith("elements 1 and beyond are wrong")
    garbage = e.clone()
    garbage[4:] = 70.0  # a constant: never written (an allocator's leftovers repeat too)
    assert describe_mismatch(garbage, e, tol) == "elements 4 and beyond are never written? (the first 4 are right)"
    big = torch.full((5,), 1e6)
    assert describe_mismatch(big * (1 + 5e-5), big, tol) == ""  # within rtol of a large scale
    tiny = torch.full((5,), 1e-6)
    assert describe_mismatch(tiny * 1.5, tiny, tol) == "every element is wrong"  # atol capped by the scale
    allinf = torch.full((3,), float("inf"))
    assert describe_mismatch(torch.zeros(3), allinf, tol) == "every element is wrong"
    rows = torch.ones(4, 3)
    r = rows.clone()
    r[2:] = 5.0
    assert describe_mismatch(r, rows, tol) == "rows 2 and beyond are never written? (the first 2 are right)"


# -- exact texts and branches of the judgements (mutation-tested) -------------------------------------


def test_kind_texts() -> None:
    def kind(k: str, note: str = "") -> str:
        return judge._kind_text(PlannedCall(k, (), "", (), None, note))

    assert kind("plain") == "draw" and kind("rescaled", "inputs x2") == "draw (inputs x2)"
    assert kind("magnitude", "input scale 40") == "stress draw (input scale 40)"
    assert kind("offset", "inputs offset by 9") == "stress draw (inputs offset by 9)"
    assert kind("weights B", "after b") == "draw (after b)" and kind("extra") == "draw (extra size)"
    assert kind("something new") == "something new"


def test_torch_reason_text() -> None:
    sp = _size(work=200.0)
    assert judge.torch_reason(100.0, ("aten::exp", "aten::sum"), sp, 0.25) == (
        "50% of the reference's work ran in PyTorch (aten::exp, aten::sum); PyTorch compute beyond 25% of it "
        "returns garbage in the judge, so the output was wrong: do the work in your own kernels")
    assert "(PyTorch ops)" in judge.torch_reason(100.0, (), sp, 0.25)
    assert judge.share_text(999, 100) == "999%" and judge.share_text(1000, 100) == "10x"


def test_low_precision_note_needs_a_float32_problem_and_a_low_dtype() -> None:
    wrong = torch.arange(4.0) * 2.001
    for dtypes, expect in ((("float16",), True), (("bfloat16", "float32"), True), (("float32",), False),
                           (("float64",), False)):
        reason = judge.judge_call(_planned(), _out(wrong, dtypes=dtypes), _size(), None, None, 0.25, 0).reason
        assert ("received" in reason) is expect, dtypes
        if expect:
            assert reason.endswith(f"(your kernels received {', '.join(dtypes)} tensors in a float32 problem)")
    half = PlannedCall("plain", (torch.ones(2),), "d0", (torch.ones(2, dtype=torch.float16),), None)
    got = P.Output(0, (torch.full((2,), 1.5, dtype=torch.float16),), 1, "d0", 0.0, (), False, ("float16",))
    assert "received" not in judge.judge_call(half, got, _size(), None, None, 0.25, 0).reason


def test_mismatch_pattern_leads_the_reason_and_stress_draws_skip_it() -> None:
    e = torch.randn(4, 100)
    cut = e.clone()
    cut[:, 64:] = 0
    planned = PlannedCall("plain", (e,), "d0", (e,), None)
    r = judge.judge_call(planned, _out(cut), _size(), None, None, 0.25, 0).reason
    assert r.startswith("size n=4, draw: columns 64 and beyond are never written? (the first 64 are right); output:")
    two = PlannedCall("plain", (e,), "d0", (torch.ones(3), e), None)
    r2 = judge.judge_call(two, P.Output(0, (torch.ones(3), cut), 1, "d0", 0, (), False), _size(), None, None, 0.25, 0)
    assert "columns 64 and beyond" in r2.reason  # the pattern of the output that is wrong
    stress = PlannedCall("magnitude", (e,), "d0", (e,), (e.double(),), "input scale 40")
    r3 = judge.judge_call(stress, _out(cut), _size(), None, None, 0.25, 0).reason
    assert "columns" not in r3 and "loses precision at input scale 40" in r3


def test_recheck_and_state_reasons_exactly() -> None:
    first = {3: (torch.ones(2),)}
    assert judge.judge_recheck(first, {}, "n=2") == "size n=2: call 3's output is gone after later calls"
    assert judge.judge_recheck(first, {3: (torch.ones(2), torch.ones(2))}, "n=2").endswith("after later calls")
    assert judge.judge_recheck(first, {3: (torch.ones(2).double(),)}, "n=2").endswith(
        "an earlier output changed after a later call: the buffer is reused; return a new tensor from every call")
    sp = _size(final={"w": torch.ones(2)})
    assert judge.judge_state({}, sp, None, None) == "size n=4: state_dict entry w is gone after the calls"
    assert judge.judge_state({"w": torch.ones(3)}, sp, None, None) == (
        "size n=4: w changed during forward (parameters and buffers are read-only; keep transformed copies "
        "elsewhere)")
    assert "changed during forward" in judge.judge_state({"w": torch.ones(2).double()}, sp, None, None)
    assert judge.judge_state({"w": torch.ones(2), "extra": torch.ones(1)}, sp, None, None) is None
    stateful = _size(stateful=True, final={"w": torch.ones(2)})
    assert judge.judge_state({"w": torch.ones(2) * 1.01}, stateful, 0.0, 0.02) is None  # problem tolerance
    assert judge.judge_state({"w": torch.ones(2) * 1.01}, stateful, None, None) is not None


def test_timed_reason_exactly() -> None:
    sp = _size()
    wrong = judge.judge_timed({5: (torch.zeros(2),)}, {5: (torch.ones(2),)}, sp, None, None, 4)
    assert wrong.startswith("size n=4: a timed call's output is wrong after 4 correct calls (output: 2 of 2")
    assert wrong.endswith("); every call is checked, timed ones included")
    assert judge.judge_timed({5: (torch.zeros(2),)}, {5: (torch.ones(2),)}, sp, 0.0, 2.0, 4) is None
    assert judge.judge_timed({}, {5: (torch.ones(2),)}, sp, None, None, 4) == "size n=4: timed call 5's output is gone"
    assert judge.judge_timed({}, {}, sp, None, None, 4) is None


def test_foreign_reason_threshold_and_names() -> None:
    def out(names: tuple[str, ...], share: float) -> P.Output:
        return P.Output(0, (), 1, "", 0.0, (), False, (), names, share)

    assert judge.foreign_reason(out(("a", "b", "c", "d"), 0.5), 0.25) == (
        "50% of the GPU time ran in kernels it did not write (a, b, c); write them yourself")
    assert judge.foreign_reason(out(("a",), 0.25), 0.25) is None  # at the share: allowed
    assert judge.foreign_reason(out((), 0.9), 0.25) is None
    timed = P.Timed((1.0,), 1, foreign=("x",), foreign_share=0.3)
    assert "30% of the GPU time" in judge.foreign_reason(timed, 0.25)


def test_process_state_reasons_exactly(monkeypatch) -> None:
    import torch._dynamo.config as dynamo_config

    refusals: list[str] = []
    reads: list[str] = []
    monkeypatch.setenv("TORCH_COMPILE_DISABLE", "1")
    monkeypatch.setattr(dynamo_config, "disable", True)  # as the variable makes it in a worker
    state = ProcessState(Snapshot(), refusals, reads)
    assert state.compile_off and state.violation() is None
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        assert state.violation() == "changed the TF32 / matmul precision settings"
    finally:
        torch.set_float32_matmul_precision(old)
    flag = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = not flag
    try:
        assert state.violation() == "changed the TF32 / matmul precision settings"
    finally:
        torch.backends.cudnn.allow_tf32 = flag
    with torch.autocast("cpu"):
        assert state.violation().startswith("changed the autocast state")
    was = dynamo_config.disable
    dynamo_config.disable = False
    try:
        assert state.violation() == "switched torch.compile back on (Dynamo/Inductor are off in the judge)"
        monkeypatch.setenv("TORCH_COMPILE_DISABLE", "0")
        assert ProcessState(Snapshot(), [], []).violation() is None  # off only where the worker turned it off
    finally:
        dynamo_config.disable = was
    from torch.overrides import TorchFunctionMode

    with TorchFunctionMode():
        assert state.violation() == ("left a TorchDispatchMode or TorchFunctionMode active; outputs must be computed "
                                     "when returned")
    reads.append("tolist")
    assert state.violation() == ("read tensor data on the host (Tensor.tolist()); host round trips are refused: "
                                 "compute in your kernels")
    refusals.append("x")
    assert state.violation() == "used x, which candidates may not"


def test_raw_threads_count_too() -> None:
    import _thread

    state = ProcessState(Snapshot(), [], [])
    stop = threading.Event()
    started = threading.Event()

    def body() -> None:
        started.set()
        stop.wait()

    _thread.start_new_thread(body, ())  # not a threading.Thread: only _thread's count sees it
    started.wait()
    try:
        assert state.violation() == "left a thread running (work after return is not timed)"
    finally:
        stop.set()
    import time as _t

    for _ in range(100):
        if state.violation() is None:
            break
        _t.sleep(0.01)
    assert state.violation() is None


@pytest.mark.parametrize("name", ["torch.nn.functional.softmax", "torch.Tensor.__matmul__", "torch.nn.Module.__call__",
                                  "time.perf_counter", "threading.Thread", "torch.cuda.synchronize",
                                  "torch.cuda.Event.record", "torch.library.impl", "torch.linalg.norm",
                                  "torch.special.expit", "torch.fft.fft", "torch.nn.Linear.forward", "torch.exp"])
def test_snapshot_covers(name: str) -> None:
    import importlib

    snap = Snapshot()
    owner_path, attr = name.rsplit(".", 1)
    parts = owner_path.split(".")
    owner = importlib.import_module(parts[0])
    for p in parts[1:]:
        owner = getattr(owner, p)
    original = owner.__dict__[attr] if isinstance(owner, type) and attr in owner.__dict__ else None
    setattr(owner, attr, lambda *a, **k: None)
    try:
        assert snap.changed() == name
    finally:
        if original is not None:
            setattr(owner, attr, original)
        elif isinstance(owner, type):
            delattr(owner, attr)
        else:
            setattr(owner, attr, snap._entries[name][2])
    assert snap.changed() is None


def test_snapshot_leaves_private_names_alone() -> None:
    snap = Snapshot()
    assert "torch._C" not in snap._entries and "torch.Tensor.__repr__" in snap._entries
    torch._kernelevo_probe = 1
    try:
        assert snap.changed() is None
    finally:
        del torch._kernelevo_probe


def test_channel_edges() -> None:
    import io

    a, b = socket.socketpair()
    key = os.urandom(32)
    left, right = P.Channel(a, key), P.Channel(b, key)
    big = torch.arange(3_000_000, dtype=torch.float32)  # 12 MB: many reads to assemble
    left_thread = threading.Thread(target=left.send, args=(P.Load({"w": big}),))
    left_thread.start()
    got = right.recv(timeout=30)
    left_thread.join()
    assert isinstance(got, P.Load) and torch.equal(got.state_dict["w"], big)
    # a valid signature over bytes that are not a message
    garbage = b"not a torch file"
    mac = P.hmac.new(key, garbage, P.hashlib.sha256).digest()
    a.sendall(P._HEADER.pack(len(garbage), mac) + garbage)
    with pytest.raises(P.ChannelError, match="unreadable message"):
        right.recv(timeout=5)
    a.sendall(P._HEADER.pack(P.MAX_FRAME + 1, mac))
    with pytest.raises(P.ChannelError, match="too large"):
        right.recv(timeout=5)
    right.close()
    right.close()  # closing twice is harmless
    with pytest.raises(P.ChannelError, match="the other side is gone"):
        for _ in range(100):  # the peer's close shows on a later send
            left.send(P.Bye())
    a.close()
    buf = io.BytesIO()
    torch.save({"kind": "Call", "id": 1, "inputs": [torch.ones(1), 2], "pin": None}, buf)
    call = P.decode(buf.getvalue())
    assert isinstance(call.inputs, tuple) and call.inputs[1] == 2  # tuple fields stay tuples


def test_every_message_round_trips() -> None:
    t = torch.ones(2)
    messages = [
        P.Setup("candidate", "cpu", False, {"cpu_reps": 3}, "/p.py", {"n": 4}),
        P.Construct(0, "n=4", (4,), 9.5, {"n": 4}),
        P.Load({"w": t}), P.Call(1, (t,), 2), P.Recheck((1, 2)), P.Release((3,)), P.GetState(),
        P.Time(4, ((t,), (t,)), 1, {"w": t}), P.Bye(), P.Ready(("k",), 2, "n"), P.Done(),
        P.Failed("rejected", "r", "tb", 3, 1.5, ("aten::exp",)),
        P.Output(1, (t,), 1, "d", 2.0, ("aten::exp",), True, ("float32",), ("f",), 0.5, ("c",)),
        P.Outputs({1: (t,)}), P.State({"w": t}), P.Timed((1.0, 2.0), 3, True, {"x": 1}, 4.0, True, ("o",), ("f",), 0.1),
    ]
    for msg in messages:
        back = P.decode(P.encode(msg))
        assert type(back) is type(msg)
        assert repr(back) == repr(msg), type(msg).__name__


def test_host_reads_of_gpu_tensors_pass_through_dlpack_only() -> None:
    refused: list[str] = []
    originals = poison.Poison.refuse_host_reads(refused)
    try:
        meta = torch.empty(2, device="meta")
        with pytest.raises(Exception) as info:  # not ours: the original's own complaint about meta tensors
            meta.__dlpack__()
        assert "refused in the judge" not in str(info.value)
        with pytest.raises(RuntimeError, match=r"Tensor.tolist\(\) is refused in the judge"):
            meta.tolist()
        assert refused == ["tolist"] and torch.Tensor.numpy.__name__ == "numpy"
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


def test_interpreter_gap_messages() -> None:
    from kernelevo.evaluate.interpreter import _GAPS, interpreter_fault

    tb = "/site-packages/triton/runtime/interpreter.py"
    for gap in _GAPS:
        assert interpreter_fault(RuntimeError(gap), tb) is not None, gap
        assert interpreter_fault(RuntimeError(gap), "elsewhere.py") is None
    wrapped = interpreter_fault(RuntimeError("InterpreterError: 0 active drivers"), "no traceback")
    assert wrapped is None  # the name in a message proves nothing: the error's type or its traceback does
    from triton.runtime.errors import InterpreterError

    assert interpreter_fault(InterpreterError("0 active drivers ([])"), "kernel.py") is not None
    assert interpreter_fault(NotImplementedError(""), tb).startswith(
        "Triton's CPU interpreter cannot run a construct this kernel uses (NotImplementedError)")


def test_extra_size_knob_rules(tmp_path) -> None:
    src = ("import torch\nimport torch.nn as nn\nbatch = 16\nwidth = 40\nflag = True\nAXIS = 64\nsmall = 4\n"
           "class Model(nn.Module):\n    def forward(self, x):\n        return x\n"
           "def get_inputs():\n    return [torch.randn(batch, width)]\ndef get_init_inputs():\n    return []\n")
    single = tmp_path / "single.py"
    single.write_text(src)
    p = load_problem(single)
    assert extra_size_knobs(p, p.namespace({})) == {"batch": (16, 16, 16), "width": (40, 40, 40)}
    sized = tmp_path / "sized.py"
    sized.write_text(src + 'SIZES = [{"batch": 8, "width": 40, "flag": False}, {"batch": 16, "width": 24}]\n'
                     'CPU_SIZES = [{"batch": 2, "width": 5}]\n')
    p = load_problem(sized)
    m = p.namespace(p.sizes[0])
    assert extra_size_knobs(p, m) == {"batch": (2, 2, 16), "width": (5, 5, 40)}  # bools are not sizes
    gpu = load_problem(sized, device="cuda")
    assert extra_size_knobs(gpu, gpu.namespace(gpu.sizes[0])) == {"batch": (8, 16, 16), "width": (24, 40, 40)}
    bounded = tmp_path / "bounded.py"
    bounded.write_text(src + 'SIZES = [{"batch": 8, "width": 40}]\nEXTRA_SIZE = {"width": 200, "batch": True, '
                       '"nope": 5, "batch2": "x"}\n')
    p = load_problem(bounded)
    assert extra_size_knobs(p, p.namespace(p.sizes[0])) == {"width": (40, 40, 100)}
    for bound, top in ((5, 2), (4, 2), (3, 1), (2, 1)):  # beyond half the bound, up to the bound
        b = tmp_path / f"b{bound}.py"
        b.write_text(src + f'SIZES = [{{"batch": 8, "width": 40}}]\nEXTRA_SIZE = {{"width": {bound}}}\n')
        q = load_problem(b)
        assert extra_size_knobs(q, q.namespace(q.sizes[0])) == {"width": (40, 40, top)}
    edge = tmp_path / "edge.py"  # a single-size problem: its globals of 8 and up are dimensions
    edge.write_text(src.replace("small = 4", "small = 7\neight = 8"))
    q = load_problem(edge)
    assert set(extra_size_knobs(q, q.namespace({}))) == {"batch", "width", "eight"}
    modes = tmp_path / "modes.py"  # a string-valued size global is not a dimension
    modes.write_text(src.replace("small = 4", "mode = 'fast'") + 'SIZES = [{"batch": 8, "mode": "fast"}, '
                     '{"batch": 16, "mode": "slow"}]\n')
    q = load_problem(modes)
    assert extra_size_knobs(q, q.namespace(q.sizes[0])) == {"batch": (8, 16, 16)}


def test_extra_size_budget_steps(tmp_path) -> None:
    import random as _random

    f = tmp_path / "p.py"
    f.write_text(_ABC)
    p = load_problem(f)
    m = p.namespace(p.sizes[0])
    seen = []

    def measure(z: dict) -> tuple[int, int]:
        seen.append(dict(z))
        return (z["a"] * z["b"] * z["c"], 0)

    size, note = choose_extra_size(p, m, _random.Random(3), (10**9, 10), measure)
    assert note == "" and size["a"] > 20 and size["b"] > 30 and size["c"] > 40 and len(seen) == 1
    seen.clear()
    # only one dimension may go beyond, the others come back to their smallest declared value
    size, note = choose_extra_size(p, m, _random.Random(3), (50 * 10 * 10, 10), measure, lean=True)
    assert note == "" and sum(size[k] > top for k, top in (("a", 20), ("b", 30), ("c", 40))) == 1
    assert sorted(v for k, v in size.items() if v <= 40) == [10, 10]
    # a budget only the nearest values beyond fit: the last knob is brought near its top
    size, note = choose_extra_size(p, m, _random.Random(3), (21 * 10 * 10, 10), measure, lean=True)
    assert note == "" and size == {"a": 21, "b": 10, "c": 10}


# -- the poison's parts, one by one (mutation-tested) ---------------------------------------------------


def test_garbage_replaces_values_by_kind() -> None:
    gens: dict[str, torch.Generator] = {}
    f = torch.ones(1000)
    poison._garbage(f, gens)
    assert abs(float(f.mean())) < 0.5 and 2.5 < float(f.std()) < 3.5  # N(0, 3), unrelated to the ones
    ints = torch.full((1000,), 100)
    poison._garbage(ints, gens)
    assert int(ints.min()) >= 0 and int(ints.max()) <= 6 and len(set(ints.tolist())) == 7
    bools = torch.zeros(1000, dtype=torch.bool)
    poison._garbage(bools, gens)
    assert 300 < int(bools.sum()) < 700
    c = torch.ones(500, dtype=torch.complex64)
    poison._garbage(c, gens)
    assert float(c.abs().std()) > 1
    one = torch.ones(1)
    poison._garbage(one, gens)
    assert float(one) != 1.0  # a single element is garbled too
    poison._garbage(torch.empty(0), gens)
    assert set(gens) == {"cpu"} and isinstance(gens["cpu"], torch.Generator)
    again = torch.ones(1000)
    poison._garbage(again, gens)
    assert not torch.equal(again, f), "the generator moves on: no two garbles alike"


def test_mutated_and_rewrapped_arguments() -> None:
    add_ = torch.ops.aten.add_.Tensor._schema
    x, y = torch.ones(2), torch.ones(2)
    assert [t is x for t in poison._mutated(add_, (x, y), {})] == [True]
    exp_out = torch.ops.aten.exp.out._schema
    out = torch.empty(2)
    assert [t is out for t in poison._mutated(exp_out, (x,), {"out": out})] == [True]
    assert poison._mutated(torch.ops.aten.exp.default._schema, (x,), {}) == []
    split_out = torch.ops.aten.split_with_sizes_copy.out._schema
    outs = [torch.empty(1), torch.empty(1)]
    got = poison._mutated(split_out, (x, [1, 1]), {"out": outs})
    assert [id(t) for t in got] == [id(t) for t in outs]
    assert poison._mutated(split_out, (x, [1, 1]), {}) == []
    mul = torch.ops.aten.mul.Tensor._schema
    positions = poison._tensor_positions(mul)
    assert positions == {"self": 0, "other": 1}
    args, kwargs = poison._rewrap(positions, (x, 2.5), {})
    assert args[0] is x and args[1].dim() == 0 and args[1].dtype == torch.float32 and float(args[1]) == 2.5
    args, kwargs = poison._rewrap(positions, (x,), {"other": 3})
    assert kwargs["other"].dtype == torch.int64 and int(kwargs["other"]) == 3
    same_args, same_kwargs = poison._rewrap(positions, (x, y), {"alpha": 2})
    assert same_args == (x, y) and same_kwargs == {"alpha": 2}  # not a Tensor parameter: left alone
    assert poison._as_tensor(True).dtype == torch.bool and poison._as_tensor(1j).dtype == torch.complex64
    assert poison._as_tensor("x") == "x" and poison._tensor_positions(torch.ops.aten.sym_size.int._schema) == {
        "self": 0}
    opt = poison._tensor_positions(torch.ops.aten.clamp.Tensor._schema)
    assert opt == {"self": 0, "min": 1, "max": 2}  # Optional[Tensor] parameters count


def test_copies_to_the_host_and_overloads() -> None:
    cpu, meta = torch.empty(1), torch.empty(1, device="meta")
    assert poison.to_host(cpu, meta) and not poison.to_host(meta, cpu) and not poison.to_host(cpu, cpu)
    assert poison._overload("aten::add.Tensor") is torch.ops.aten.add.Tensor
    assert poison._overload("aten::relu") is torch.ops.aten.relu.default
    assert poison._overload("aten::no_such_op_xyz") is None


def test_work_counts_kwargs_and_outputs_and_formulas_get_every_argument() -> None:
    x = torch.ones(10)
    add = torch.ops.aten.add.Tensor
    assert poison.work_of(add.overloadpacket, add.name(), (x,), {"other": torch.ones(30)}, x) == 30
    assert poison.work_of(add.overloadpacket, add.name(), (torch.ones(2),), {}, torch.ones(40)) == 40
    assert poison.work_of(add.overloadpacket, add.name(), (), {}, torch.ones(0)) == 1  # at least one unit
    addmm = torch.ops.aten.addmm.default
    b, m1, m2 = torch.ones(3), torch.ones(2, 4), torch.ones(4, 3)
    assert poison.work_of(addmm.overloadpacket, addmm.name(), (b, m1, m2), {}, torch.ones(2, 3)) == 2 * 2 * 4 * 3
    conv = torch.ops.aten.convolution.default
    w = torch.ones(5, 3, 3, 3)
    inp = torch.ones(1, 3, 8, 8)
    out = torch.ones(1, 5, 6, 6)
    flops = poison.work_of(conv.overloadpacket, conv.name(), (inp, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1),
                           {}, out)
    assert flops == 2 * 5 * 6 * 6 * 3 * 3 * 3
    assert poison.work_of(None, "aten::exp", (x,), {}, x) == 10  # no formula known: elements
    from kernelevo import work

    assert work._numel([torch.ones(3), [torch.ones(7)]]) == 7 and work._numel(2.0) == 0


def test_recorder_counts_each_op_once_per_call() -> None:
    x = torch.ones(6)
    with poison.WorkRecorder() as rec:
        torch.exp(x)
        torch.exp(x)
        torch.add(x, x, alpha=2)
        x.view(2, 3)
    assert rec.ops == {"exp": 2, "add": 1} and rec.work == 18 and rec.compute_ops == {"exp", "add"}
    with poison.WorkRecorder() as rec:
        torch.nn.functional.silu(x)  # decomposes or not, it is charged once as the work it does
    assert rec.work == 6 and sum(rec.ops.values()) == 1


def test_finalizer_is_detached_and_budget_edges() -> None:
    import weakref

    x = torch.ones(4)
    expected = x.exp()
    p = poison.install(("CPU",))
    try:
        ours = p._destroy.__self__
        assert all(f.peek() is None or f.peek()[0] is not ours for f in list(weakref.finalize._registry))
        m = p.meter
        m.begin(4.0)
        y = torch.exp(x)  # exactly the budget: not over it
        assert m.spent == 4.0 and not m.poisoned
        m.begin(float("inf"))
        assert torch.equal(y, expected)
        m.begin(3.0)
        torch.exp(x)
        assert m.poisoned and m.ops["exp"] == 1
        m.begin(100.0)
        torch.exp(x)
        torch.exp(x)
        assert m.spent == 8.0 and m.ops["exp"] == 2
        m.begin(0.0)
        s = x.sum().item()  # a number out: garbled, its type kept
        assert isinstance(s, float) and 0 <= s < 7 and m.poisoned
    finally:
        p.remove()


def test_refusals_keep_the_originals_callable_for_gpu_dlpack() -> None:
    refused: list[str] = []
    originals = poison.Poison.refuse_host_reads(refused)
    try:
        assert set(originals) == {"numpy", "tolist", "__array__", "__dlpack__"}
        t = torch.arange(3.0)
        for name in ("numpy", "tolist", "__array__"):
            with pytest.raises(RuntimeError, match=f"Tensor.{name}\\(\\) is refused in the judge: reading tensor data "
                               "on the host is compute outside your kernels"):
                getattr(t, name)()
        assert originals["tolist"](t) == [0.0, 1.0, 2.0] and originals["numpy"](t).shape == (3,)
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


def test_pick_edges_and_distributions() -> None:
    rng = random.Random(7)
    assert _pick(rng, 0, 0) == 1 and _pick(rng, 3, 3) == 3 and _pick(rng, 4, 4) == 4
    assert {_pick(rng, 4, 5) for _ in range(30)} == {5} and {_pick(rng, 4, 5, True) for _ in range(30)} == {5}
    assert {_pick(rng, 2, 4) for _ in range(30)} == {3}
    assert {_pick(rng, 63, 64) for _ in range(30)} == {63}
    top = 1000
    uni = [(_pick(random.Random(i), top + 1, 2 * top, uniform=True) - top) / top for i in range(600)]
    log = [(_pick(random.Random(i), top + 1, 2 * top) - top) / top for i in range(600)]
    assert abs(sum(uni) / 600 - 0.5) < 0.04 and abs(sum(log) / 600 - 0.443) < 0.04
    assert max(uni) > 0.95 and min(uni) < 0.05


def test_beyond_picks_are_uniform_and_the_note_names_the_budget(tmp_path) -> None:
    p = load_problem(ROOT / "kernels" / "softmax" / "problem.py")
    m = p.namespace(p.sizes[0])
    dims = [choose_extra_size(p, m, random.Random(i), (1 << 62, 1 << 62), lambda z: (0, 0))[0]["dim"]
            for i in range(300)]
    share = sum((d - 50257) / 50257 for d in dims) / len(dims)
    assert abs(share - 0.5) < 0.05  # uniform up to twice the top: a cap at 1.33x shows 2 times in 3
    size, note = choose_extra_size(p, m, random.Random(0), (3 << 20, 7), lambda z: (5 << 20, 9))
    assert size is None and note.startswith("no extra size this time: ")
    assert note.endswith(" needs 5 MiB and 9 row blocks, over the budget (3 MiB, 7 blocks)")


def test_shedding_brings_the_largest_other_dimension_down_first(tmp_path) -> None:
    f = tmp_path / "p.py"
    f.write_text("import torch\nimport torch.nn as nn\na = 10\nb = 10\n"
                 "class Model(nn.Module):\n    def forward(self, x):\n        return x\n"
                 "def get_inputs():\n    return [torch.randn(a, b)]\ndef get_init_inputs():\n    return []\n"
                 'SIZES = [{"a": 2, "b": 2}, {"a": 100, "b": 100}]\nCPU_SIZES = SIZES\n')
    p = load_problem(f)
    m = p.namespace(p.sizes[0])
    calls = []

    def measure(z: dict) -> tuple[int, int]:
        calls.append(dict(z))
        # over the budget while either dimension is above 150, and while "b" is in its declared range
        return (0, 1 if max(z["a"], z["b"]) <= 150 or (z["a"] > 100 and z["b"] == 2) else 99)

    size, note = choose_extra_size(p, m, random.Random(1), (1, 1), measure)
    assert note == "" and (size["a"] > 100) != (size["b"] > 100)
    beyond = "a" if size["a"] > 100 else "b"
    other = "b" if beyond == "a" else "a"
    assert size[other] == 2 or size[beyond] <= 150  # the other down to its smallest, or the one beyond nearer


def test_judged_fields_exactly() -> None:
    right, wrong = torch.arange(4.0) * 2, torch.zeros(4)
    j = judge.judge_call(_planned(), _out(right * (1 + 1e-6)), _size(), None, None, 0.25, 0)
    assert j.verdict is None and j.reason == "" and 0 < j.max_abs_err < 1e-5 and 0 < j.max_rel_err < 2e-6
    bad = judge.judge_call(_planned(), _out(wrong), _size(), None, None, 0.25, 0)
    assert bad.verdict is Verdict.INCORRECT and bad.max_abs_err == 6.0 and bad.max_rel_err == pytest.approx(1.0)
    p = judge.judge_call(_planned(), _out(wrong, 1, True, 50.0), _size(), None, None, 0.25, 0)
    assert p.reason.startswith("size n=4, draw (inputs x2): 50% of the reference's work") and p.max_abs_err == 6.0
    modified = judge.judge_call(_planned(), _out(right, digest="other"), _size(), None, None, 0.25, 0)
    assert modified.verdict is Verdict.REJECTED
    assert modified.reason == "size n=4, draw (inputs x2): forward modified its inputs; inputs are read-only"
    none = judge.judge_call(_planned(), _out(right, 0), _size(), None, None, 0.25, 0)
    assert none.reason == ("size n=4, draw (inputs x2): forward launched no kernel of its own (a PyTorch path or a "
                           "fallback ran instead)")
    low = judge.judge_call(_planned(), _out(wrong, dtypes=("float16",)), _size(), None, None, 0.25, 0)
    assert "outside atol" in low.reason and low.reason.endswith("in a float32 problem)")


def test_stress_judgement_uses_the_truth_and_the_problem_tolerance() -> None:
    x = torch.full((4,), 10.0)
    truth = (x.double() + 0.05,)
    stress = PlannedCall("offset", (x,), "d0", (x,), truth, "inputs offset by 500")
    # against the float64 truth the float32 reference is 0.05 off: four times that is allowed
    assert judge.judge_call(stress, _out(x + 0.2), _size(), None, None, 0.25, 0).ok
    assert not judge.judge_call(stress, _out(x + 0.5), _size(), None, None, 0.25, 0).ok
    assert judge.judge_call(stress, _out(x + 0.5), _size(), 0.0, 0.1, 0.25, 0).ok
    ones = _planned(expected=torch.full((4,), 10.0))
    assert judge.judge_call(ones, _out(torch.full((4,), 10.5)), _size(), 0.0, 0.1, 0.25, 0).ok  # rtol
    assert judge.judge_call(ones, _out(torch.full((4,), 10.05)), _size(), 0.01, 0.0, 0.25, 0).ok  # atol x RMS 10
    assert not judge.judge_call(ones, _out(torch.full((4,), 10.05)), _size(), 0.001, 0.0, 0.25, 0).ok


def test_comparisons_say_exactly_ok_false_and_empty_reasons() -> None:
    e = torch.tensor([float("inf"), 1.0])
    c = compare_tensor(torch.tensor([float("inf"), float("inf")]), e, FP32)
    assert c.ok is False and c.reason == "output has Inf where the reference has none (or the opposite sign)"
    nan_e = torch.tensor([float("nan"), 2.0, 4.0])
    ok = compare_tensor(torch.tensor([float("nan"), 2.0, 4.0 + 4e-4]), nan_e, FP32)
    assert ok.ok is True and ok.reason == "" and ok.max_abs_err == pytest.approx(4e-4, rel=1e-2)
    assert ok.max_rel_err == pytest.approx(1e-4, rel=1e-2)
    assert compare_tensor(torch.ones(2) * 3, torch.ones(2), FP32).ok is False
    two64 = [torch.full((3,), 2.0, dtype=torch.float64)]
    s = compare_stress([torch.full((3,), 2.0001)], [torch.full((3,), 2.0)], two64, note="n")
    assert s.ok is True and s.reason == "" and s.max_abs_err == pytest.approx(1e-4, rel=1e-2)
    assert s.max_rel_err == pytest.approx(5e-5, rel=1e-2)
    bad = compare_stress([torch.full((3,), 3.0)], [torch.full((3,), 2.0)], two64, note="n")
    assert bad.ok is False and bad.reason.startswith("output loses precision at n: 3 of 3 elements")
    over = compare_stress([torch.tensor([float("inf")])], [torch.ones(1)], None, note="n")
    assert over.ok is False


def test_copies_to_the_host_are_charged_as_reads_of_the_data() -> None:
    """The CUDA copy-to-host charge, exercised on the CPU: ``host_read`` marks which copies count."""
    host_read = lambda dst, src: src.dtype == torch.float64  # noqa: E731 - stands in for "device to host"
    p = poison.install((), copy_keys=("CPU",), host_read=host_read)
    try:
        m = p.meter
        src, dst = torch.arange(50, dtype=torch.float64), torch.zeros(50, dtype=torch.float64)
        m.begin(100.0)
        dst.copy_(src)
        assert m.spent == 50.0 and m.ops == {"_copy_to_host": 1} and not m.poisoned
        m.begin(float("inf"))
        assert torch.equal(dst, src)
        m.begin(49.0)
        dst.copy_(src)  # over the budget: what arrived on the host is garbage
        assert m.poisoned and m.spent == 50.0
        m.begin(float("inf"))
        assert not torch.equal(dst, src)
        m.begin(0.0)
        f = torch.zeros(50)
        f.copy_(torch.ones(50))  # not a host read: glue, free
        assert m.spent == 0.0 and not m.poisoned and torch.equal(f, torch.ones(50))
        m.begin(0.0)
        torch.exp(src)  # compute is not poisoned at a key it was not asked for
        assert m.spent == 0.0
        p.exempt(__file__)
        m.begin(0.0)
        dst.copy_(src)  # the harness's own copies to the host
        assert m.spent == 0.0 and torch.equal(dst, src)
    finally:
        p.remove()
    m.begin(0.0)
    dst.zero_().copy_(src)
    assert m.spent == 0.0 and torch.equal(dst, src)


def test_garbage_leaves_pytorchs_own_generator_alone() -> None:
    """A candidate drawing from the default generator after a probe must not see that it was poisoned."""
    state = torch.get_rng_state()
    gens: dict[str, torch.Generator] = {}
    for t in (torch.ones(100), torch.zeros(100, dtype=torch.bool), torch.zeros(100, dtype=torch.int32)):
        poison._garbage(t, gens)
    assert torch.equal(torch.get_rng_state(), state)
    assert gens["cpu"].device.type == "cpu" and gens["cpu"].initial_seed() < 2**63


def test_stress_edges_exact_zeros_reference_overflow_small_rms_and_relative_error() -> None:
    zeros = torch.zeros(6)
    assert compare_stress([zeros.clone()], [zeros], [zeros.double()], note="n").ok  # nothing allowed, nothing off
    both = torch.tensor([1.0, float("inf")])
    # where the float32 reference overflowed but the truth did not, the element is not judged at all
    assert compare_stress([both.clone()], [both], [torch.tensor([1.0, 1e300], dtype=torch.float64)], note="n").ok
    small = torch.zeros(8, dtype=torch.float64)  # RMS 0.32: atol is not scaled, and the 1% cap is above it
    small[0] = 0.9
    assert compare_stress([(small + 0.9e-3).float()], [small.float()], [small], atol=1e-3, rtol=0.0, note="n").ok
    c = compare_stress([(small + 1.5e-3 * (small == 0)).float()], [small.float()], [small], atol=1e-3, rtol=0.0,
                       note="n")
    assert not c.ok and "7 of 8 elements" in c.reason
    tiny = torch.full((4,), 1e-3, dtype=torch.float64)
    c = compare_stress([(tiny + 1e-6).float()], [tiny.float()], [tiny], note="n")
    assert c.ok and c.max_abs_err == pytest.approx(1e-6, rel=1e-3) and c.max_rel_err == pytest.approx(1e-3, rel=1e-3)


def test_judge_call_describes_mismatches_under_the_problem_tolerance() -> None:
    e = torch.arange(1.0, 9.0) * 10
    within_atol = torch.cat([e[:4] + 0.5, e[4:] + 100])  # 0.5 is inside ATOL=1, 100 is not
    j = judge.judge_call(_planned(expected=e), _out(within_atol), _size(), 1.0, 0.0, 0.25, 0)
    assert "elements 4 and beyond are wrong (the first 4 are right)" in j.reason
    within_rtol = torch.cat([e[:4] * 1.05, e[4:] + 100])  # 5% is inside RTOL=0.1
    j = judge.judge_call(_planned(expected=e), _out(within_rtol), _size(), 0.0, 0.1, 0.25, 0)
    assert "elements 4 and beyond are wrong (the first 4 are right)" in j.reason
    near = judge.judge_call(_planned(expected=e), _out(e * 1.01), _size(), 0.0, 0.02, 0.25, 0)
    assert near.ok and near.max_rel_err == pytest.approx(0.01, rel=1e-4)
    assert near.max_abs_err == pytest.approx(0.8, rel=1e-4)


def test_stress_judgement_without_a_float64_truth_uses_the_problem_tolerance() -> None:
    x = torch.arange(1.0, 5.0)
    stress = PlannedCall("offset", (x,), "d0", (x * 100,), None, "inputs offset by 500")
    off = x * 100 * 1.01
    assert judge.judge_call(stress, _out(off), _size(), 0.0, 0.02, 0.25, 0).ok
    j = judge.judge_call(stress, _out(off), _size(), None, None, 0.25, 0)
    assert not j.ok and "loses precision at inputs offset by 500" in j.reason
    assert judge.judge_call(stress, _out(x * 100 + 1e-3), _size(), None, None, 0.25, 0).ok
    assert not judge.judge_call(stress, _out(x * 100 + 1e-3), _size(), 0.0, 0.0, 0.25, 0).ok  # ATOL=0 is strict


def test_state_and_timed_judgements_use_the_problem_tolerance() -> None:
    final = {"running_mean": torch.full((4,), 10.0)}
    sp = _size(stateful=True, final=final)
    near = {"running_mean": torch.full((4,), 10.05)}  # 0.5% off
    assert judge.judge_state(near, sp, 0.1, 0.0) is None
    assert "running_mean after the calls" in (judge.judge_state(near, sp, 0.0, 0.0) or "")
    assert judge.judge_state(near, sp, 0.0, 0.01) is None
    expected = {3: (torch.full((4,), 10.0),)}
    assert judge.judge_timed({3: (torch.full((4,), 10.05),)}, expected, sp, 0.1, 0.0, 7) is None
    wrong = judge.judge_timed({3: (torch.full((4,), 10.05),)}, expected, sp, 0.0, 0.0, 7)
    assert wrong is not None and wrong.startswith("size n=4: a timed call's output is wrong after 7 correct calls")


def test_shares_of_small_reference_work() -> None:
    assert judge.share_text(1.0, 0.5) == "200%" and judge.share_text(0.0, 0.0) == \
        "PyTorch compute where the reference does none"
    assert judge.share_text(123.0, 1.0) == "123x" and judge.share_text(9.99, 1.0) == "999%"
    assert judge.torch_share(1.0, 0.5) == 2.0 and judge.torch_share(1.0, 0.0) == float("inf")
    assert judge.torch_share(0.0, 0.0) == 0.0


def test_comparison_numbers_for_nan_mismatches_and_two_element_outputs() -> None:
    e = torch.tensor([float("nan"), 1.0])
    c = compare_tensor(torch.tensor([0.0, 1.0]), e, FP32, "output")
    assert c.reason == "output is finite where the reference is NaN" and c.max_rel_err != c.max_rel_err
    assert describe_mismatch(torch.tensor([5.0, 6.0]), torch.tensor([1.0, 2.0]), FP32) == "every element is wrong"
    # NaN where the reference is NaN is right, so only the last element is wrong here: no pattern
    assert describe_mismatch(torch.tensor([float("nan"), 1.0, 9.0]), torch.tensor([float("nan"), 1.0, 2.0]),
                             FP32) == "elements 2 and beyond are never written? (the first 2 are right)"
    empty = compare_tensor(torch.empty(0), torch.empty(0), FP32, "output")
    assert empty.ok and empty.max_abs_err == 0.0 and empty.max_rel_err == 0.0


_ABC = ("import torch\nimport torch.nn as nn\na = 10\nb = 10\nc = 10\n"
        "class Model(nn.Module):\n    def forward(self, x):\n        return x\n"
        "def get_inputs():\n    return [torch.randn(a, b, c)]\ndef get_init_inputs():\n    return []\n"
        'SIZES = [{"a": 10, "b": 10, "c": 10}, {"a": 20, "b": 30, "c": 40}]\n')

# Golden traces of the extra-size search (every size it measured, in order) for fixed seeds: the
# search is random but reproducible, and each step of it (which knobs go beyond, which are shed
# first, how the last one nears its top, what a refusal does) shows in the trace.
_GOLDEN = [
    (3, 2100, False, {"a": 21, "b": 10, "c": 10},
     [(40, 46, 78), (10, 46, 78), (10, 10, 78), (20, 46, 14), (10, 46, 14), (10, 46, 10), (10, 34, 10),
      *[(10, 31, 10)] * 7, (19, 18, 41), (10, 18, 41), (10, 10, 41), (23, 12, 39), (23, 12, 10), (23, 10, 10),
      (21, 10, 10)]),
    (5, 18000, False, {"a": 26, "b": 11, "c": 19}, [(37, 31, 70), (10, 31, 70), (10, 10, 70), (26, 11, 19)]),
    (7, 3300, True, {"a": 22, "b": 10, "c": 10},
     [(33, 51, 44), (10, 51, 44), (10, 10, 44), (10, 10, 78), (22, 10, 10)]),
]


@pytest.mark.parametrize(("seed", "budget", "lean", "expected", "trace"), _GOLDEN)
def test_extra_size_search_trace(tmp_path, seed, budget, lean, expected, trace) -> None:
    f = tmp_path / "p.py"
    f.write_text(_ABC)
    p = load_problem(f)
    seen: list[tuple[int, int, int]] = []

    def measure(z: dict) -> tuple[int, int]:
        seen.append((z["a"], z["b"], z["c"]))
        if z["a"] == z["b"]:
            raise ValueError("equal a and b\nsecond line")  # the reference refuses: try another
        return (z["a"] * z["b"] * z["c"], 0)

    size, note = choose_extra_size(p, p.namespace(p.sizes[0]), random.Random(seed), (budget, 10), measure, lean=lean)
    assert (size, note, seen) == (expected, "", trace)


def test_extra_size_notes_name_the_last_refusal(tmp_path) -> None:
    f = tmp_path / "p.py"
    f.write_text(_ABC)
    p = load_problem(f)

    def refuse(z: dict) -> tuple[int, int]:
        raise ValueError("no such size\nsecond line")

    size, note = choose_extra_size(p, p.namespace(p.sizes[0]), random.Random(1), (10**9, 10), refuse)
    assert size is None and note == "no extra size this time: ValueError: no such size"

    def bare(z: dict) -> tuple[int, int]:
        raise RuntimeError

    assert choose_extra_size(p, p.namespace(p.sizes[0]), random.Random(1), (10**9, 10), bare)[1] == \
        "no extra size this time: RuntimeError: "

    def long(z: dict) -> tuple[int, int]:
        raise ValueError("x" * 300)

    note = choose_extra_size(p, p.namespace(p.sizes[0]), random.Random(1), (10**9, 10), long)[1]
    assert note == "no extra size this time: " + ("ValueError: " + "x" * 300)[:160]


class _Pow2Rng:
    """Always draws 8: every draw a power of two, so _pick falls back to its fixed choices."""

    def randint(self, lo: int, hi: int) -> int:
        return 8

    def uniform(self, lo: float, hi: float) -> float:
        return math.log(8)


def test_pick_falls_back_to_the_top_then_below_it_then_the_bottom() -> None:
    rng = _Pow2Rng()
    assert _pick(rng, 7, 9, uniform=True) == 9 and _pick(rng, 6, 8, uniform=True) == 7
    assert _pick(rng, 7, 8, uniform=True) == 7 and _pick(rng, 8, 8) == 8 and _pick(rng, 1, 2) == 2
    assert _pick(rng, 0, 0) == 1  # ranges start at 1
    assert [_pick(random.Random(s), 3, 1000) for s in range(4)] == [_pick(random.Random(s), 3, 1000) for s in range(4)]


def test_an_unwritten_tail_starts_where_the_kernel_stopped_even_if_an_element_matches_by_chance() -> None:
    e = torch.arange(1.0, 21.0)
    e[10] = 1e-9  # the reference is ~0 there: the unwritten 0 matches it within atol
    a = torch.cat([e[:10], torch.zeros(10)])
    assert describe_mismatch(a, e, FP32) == "elements 10 and beyond are never written? (the first 10 are right)"


def test_a_hidden_stress_draw_is_left_out_of_its_blocks_times_unless_too_few_remain() -> None:
    from kernelevo.evaluate.evaluator import _without

    # a block of draws 10..15 with one warm-up call: times are for draws 11..15; draw 13 is stressed
    assert _without((1.0, 2.0, 9.0, 4.0, 5.0), 10, 1, {13: object()}) == (1.0, 2.0, 4.0, 5.0)
    assert _without((1.0, 2.0), 10, 0, {3: object()}) == (1.0, 2.0)  # not in this block
    assert _without((7.0,), 4, 0, {4: object()}) == (7.0,)  # a CPU block of one: kept (noise anyway)
