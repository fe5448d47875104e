"""One evaluation's plan: fresh weights, draws and expected outputs for every call the judge makes.

Built in the controller, before the candidate is imported, from a seed drawn fresh for each
evaluation (recorded, so ``--seed`` reproduces a verdict): nothing memoised in one
evaluation answers the next. Per declared size, on one model, in order:

- weights A; two plain draws, one with float inputs rescaled, and two stress draws (inputs at
  large magnitude, and with a large offset) whose outputs are judged against a float64
  reference where the reference itself stays finite;
- weights B loaded into the same model, and a plain draw (a weight cached or ignored shows);
- timed calls on fresh draws from the same ``get_inputs()``, checked after the fact.

Then one extra size outside the declared ones — random, not a power of two, up to twice the
largest declared value of each size global, within a memory budget — with two plain draws
(a kernel that only works on the sizes it was shown shows). A problem bounds it with
``EXTRA_SIZE = {"dim": 8192}`` or turns it off with ``EXTRA_SIZE = False``.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from kernelevo.evaluate.poison import WorkRecorder
from kernelevo.problem import Problem, ProblemError, flatten_outputs
from kernelevo.reference import Reference, digest, fp32_precision, randomise_, to_device


@dataclass(frozen=True)
class PlannedCall:
    """One forward the candidate will be asked for, and what it must return."""

    kind: str  # "plain", "rescaled", "magnitude", "offset", "weights B", "extra"
    inputs: tuple[Any, ...]
    digest: str
    expected: tuple[torch.Tensor, ...]
    truth: tuple[torch.Tensor, ...] | None = None  # float64 reference (stress draws)
    note: str = ""  # what was done to the inputs, for the reason ("inputs x41")
    weights: str = "A"


@dataclass(frozen=True)
class SizePlan:
    index: int
    label: str
    size: dict[str, Any]
    init_inputs: tuple[Any, ...]
    state_a: dict[str, torch.Tensor]
    state_b: dict[str, torch.Tensor]
    calls: tuple[PlannedCall, ...]
    final_state: dict[str, torch.Tensor]  # the state_dict a correct model holds after the calls
    stateful: bool  # forward updates buffers (BatchNorm in training)
    budget: float  # PyTorch work a forward may do (work units)
    work: float  # the reference forward's own work
    extra: bool = False  # the size outside the declared ones: checked, never timed
    flops: int = 0
    min_bytes: int = 0
    draw: Callable[[int], tuple[Any, ...]] = field(default=lambda i: (), repr=False, compare=False)
    reference: Callable[[tuple[Any, ...]], tuple[torch.Tensor, ...]] = field(
        default=lambda x: (), repr=False, compare=False)


@dataclass(frozen=True)
class Plan:
    seed: int
    sizes: tuple[SizePlan, ...]
    notes: tuple[str, ...] = ()


def _numel_bytes(values: Any) -> int:
    return sum(t.numel() * t.element_size() for t in flatten_outputs(values) if isinstance(t, torch.Tensor))


def _floats(inputs: list[Any], fn: Callable[[torch.Tensor], torch.Tensor]) -> list[Any]:
    return [fn(v) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for v in inputs]


def _run(model: torch.nn.Module, inputs: list[Any], device: str) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = model(*to_device(inputs, device, copy=True))
    return tuple(o.detach().cpu().clone() for o in flatten_outputs(out))


def _truth(model: torch.nn.Module, inputs: list[Any], device: str) -> tuple[torch.Tensor, ...] | None:
    """The same call in float64 (a copy of the model in its current state), or None when the
    model does not run in float64."""
    try:
        m64 = copy.deepcopy(model).double()
        with torch.no_grad():
            out = m64(*to_device(_floats(inputs, lambda t: t.double()), device, copy=True))
        return tuple(o.detach().cpu().clone() for o in flatten_outputs(out))
    except Exception:
        return None


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _stress_scale(rng: random.Random) -> float:
    # randn x 32..64 reaches past 88.7, where exp overflows in float32.
    return round(rng.uniform(32.0, 64.0), 1)


def _stress_offset(rng: random.Random) -> float:
    return round(rng.choice((-1, 1)) * rng.uniform(100.0, 1000.0), 1)


def plan_size(
    problem: Problem, index: int, size: dict[str, Any], device: str, seed: int, share: float,
    stateful: bool, flops: int = 0, min_bytes: int = 0, extra: bool = False,
) -> tuple[SizePlan, list[str]]:
    """The calls for one size. Raises ProblemError when the reference cannot run there."""
    notes: list[str] = []
    mod = problem.namespace(size)
    base = seed * 1_000_003 + index * 101 + (7 if extra else 0)
    rng = random.Random(base)
    torch.manual_seed(base)
    init_inputs = tuple(mod.get_init_inputs())
    model = mod.Model(*init_inputs)
    init = copy.deepcopy(model)
    randomise_(model, torch.Generator().manual_seed(base + 1))
    state_a = _state(model)
    randomise_(init, torch.Generator().manual_seed(base + 2))
    state_b = _state(init)
    model = model.to(device)

    def draw(k: int) -> tuple[Any, ...]:
        torch.manual_seed(base + 10 + k)
        inputs = mod.get_inputs()
        if not isinstance(inputs, (list, tuple)):
            raise ProblemError(f"{problem.path}: get_inputs() must return a list, got {type(inputs).__name__}")
        return tuple(inputs)

    calls: list[PlannedCall] = []

    def add(kind: str, inputs: tuple[Any, ...], note: str = "", stress: bool = False, weights: str = "A") -> None:
        truth = _truth(model, list(inputs), device) if stress else None
        expected = _run(model, list(inputs), device)
        calls.append(PlannedCall(kind, inputs, digest(list(inputs)), expected, truth, note, weights))

    work = WorkRecorder()
    with work:
        add("extra" if extra else "plain", draw(0))
    add("extra" if extra else "plain", draw(1))
    if not extra:
        factor = math.exp(rng.uniform(-1.0, 1.0))
        add("rescaled", tuple(_floats(list(draw(2)), lambda t: t * factor)), f"inputs x{factor:.2f}")
        scale, offset = _stress_scale(rng), _stress_offset(rng)
        add("magnitude", tuple(_floats(list(draw(3)), lambda t: t * scale)), f"input scale {scale:g}", stress=True)
        add("offset", tuple(_floats(list(draw(4)), lambda t: t + offset * max(1.0, float(t.std()) if t.numel() > 1
                                                                              else 1.0))),
            f"inputs offset by {offset:g}", stress=True)
        model.load_state_dict(to_device(state_b, device))
        add("weights B", draw(5), "after a second set of weights was loaded", weights="B")
    final_state = _state(model)
    if not extra:
        model.load_state_dict(to_device(state_b, device))  # timed calls start from weights B

    def reference(inputs: tuple[Any, ...]) -> tuple[torch.Tensor, ...]:
        if stateful:
            model.load_state_dict(to_device(state_b, device))
        return _run(model, list(inputs), device)

    plan = SizePlan(
        index, problem.label(size), dict(size), init_inputs, state_a, state_b, tuple(calls), final_state,
        stateful, share * work.work, work.work, extra, flops, min_bytes,
        draw=lambda i: draw(100 + i), reference=reference,
    )
    return plan, notes


def _pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


def _pick(rng: random.Random, lo: int, hi: int) -> int:
    """A value in [lo, hi] that is not a power of two (when the range allows one)."""
    for _ in range(20):
        v = rng.randint(lo, hi)
        if not _pow2(v):
            return v
    return hi if not _pow2(hi) else max(lo, hi - 1)


def extra_size_knobs(problem: Problem, module: Any) -> dict[str, int]:
    """The size globals an extra size may move and how far (the largest value allowed)."""
    setting = getattr(module, "EXTRA_SIZE", None)
    if setting is False:
        return {}
    declared = [s for s in problem.sizes if s]
    if isinstance(setting, dict):
        return {k: int(v) for k, v in setting.items() if isinstance(v, int) and not isinstance(v, bool)}
    names: set[str] = set()
    for s in declared:
        names |= {k for k, v in s.items() if isinstance(v, int) and not isinstance(v, bool) and k not in
                  problem.overrides}
    if not declared:  # a single-size problem (KernelBench's own files): its dimension-like globals
        names = {k for k in problem.globals_ if isinstance(getattr(module, k, None), int)
                 and not isinstance(getattr(module, k), bool) and getattr(module, k) >= 8 and k.isidentifier()
                 and not k.isupper() and k not in problem.overrides}
    knobs = {}
    for k in sorted(names):
        values = [s[k] for s in declared if k in s] or [getattr(module, k)]
        top = max(values)
        if top >= 2:
            knobs[k] = 2 * top
    return knobs


def choose_extra_size(
    problem: Problem, module: Any, rng: random.Random, byte_budget: int, measure: Callable[[dict[str, Any]], int],
) -> tuple[dict[str, Any] | None, str]:
    """A size outside the declared ones within ``byte_budget`` (``measure`` gives a size's bytes),
    and a note when there is none."""
    knobs = extra_size_knobs(problem, module)
    if not knobs:
        return None, ""
    declared = [s for s in problem.sizes if s] or [{}]
    tops = {k: max([s.get(k, getattr(module, k, 0)) for s in declared]) for k in knobs}
    last_error = ""
    for _attempt in range(4):
        size = {**problem.overrides}
        for k, cap in knobs.items():
            top = tops[k]
            size[k] = _pick(rng, top + 1, max(top + 1, cap)) if cap > top else top
        order = list(knobs)
        rng.shuffle(order)
        try:
            nbytes = measure(size)
            # Over budget: bring knobs back to at most their declared top, one at a time, keeping one beyond.
            while nbytes > byte_budget and sum(size[k] > tops[k] for k in knobs) > 1:
                k = next(k for k in order if size[k] > tops[k])
                size[k] = _pick(rng, max(1, (tops[k] + 1) // 2), tops[k])
                nbytes = measure(size)
            if nbytes > byte_budget:
                k = next(k for k in order if size[k] > tops[k])
                size[k] = tops[k] + 1 if not _pow2(tops[k] + 1) else tops[k] + 3
                nbytes = measure(size)
            return size, ""
        except Exception as e:  # noqa: BLE001 - the reference refuses this combination: try another
            last_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]
    return None, f"no extra size: the reference failed at every size tried ({last_error})"


def make_plan(
    reference: Reference, seed: int, share: float, extra_budget_factor: float, extra: bool = True,
) -> Plan:
    """Fresh weights and draws for every declared size, and the extra size, for ``seed``."""
    problem, device = reference.problem, reference.device
    sizes: list[SizePlan] = []
    notes: list[str] = []
    with fp32_precision(reference.allow_tf32):
        for case in reference.cases:
            sp, n = plan_size(problem, case.index, case.size, device, seed, share, case.stateful,
                              case.flops, case.min_bytes)
            sizes.append(sp)
            notes += n
        if extra:
            module = problem.namespace(problem.sizes[0])
            rng = random.Random(seed * 7919 + 13)
            largest = max(c.min_bytes for c in reference.cases)

            def measure(size: dict[str, Any]) -> int:
                mod = problem.namespace(size)
                torch.manual_seed(0)
                m = mod.Model(*mod.get_init_inputs())
                inputs = mod.get_inputs()
                out = _run(m.to(device), list(inputs), device)
                weights = sum(t.numel() * t.element_size() for t in m.state_dict().values())
                return _numel_bytes(inputs) + _numel_bytes(out) + weights

            size, note = choose_extra_size(problem, module, rng, int(extra_budget_factor * largest), measure)
            if note:
                notes.append(note)
            if size is not None:
                try:
                    sp, n = plan_size(problem, len(sizes), size, device, seed, share, reference.cases[0].stateful,
                                      extra=True)
                    sizes.append(sp)
                    notes += n
                except Exception as e:  # noqa: BLE001
                    notes.append(f"no extra size: the reference failed at {problem.label(size)} "
                                 f"({type(e).__name__})")
    return Plan(seed, tuple(sizes), tuple(notes))
