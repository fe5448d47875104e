"""One evaluation's plan: fresh weights, draws and expected outputs for every call the judge makes.

Built in the controller, before the candidate is imported, from a seed drawn fresh for each
evaluation (recorded, so ``--seed`` reproduces a verdict): nothing memoised in one
evaluation answers the next. Per declared size, on one model, in order:

- weights A; two plain draws, one with float inputs rescaled, and two stress draws (inputs at
  large magnitude, and with a large offset) whose outputs are judged against a float64
  reference where the reference itself stays finite;
- weights B loaded into the same model, and a plain draw (a weight cached or ignored shows);
- timed calls on fresh draws from the same ``get_inputs()``, checked after the fact; a stress
  draw (``SizePlan.stressed``) hides among them at a random place in each timing block, so a
  kernel cannot run one path when checked and another when timed.

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

from kernelevo.problem import Problem, ProblemError, flatten_outputs
from kernelevo.reference import Reference, digest, fp32_precision, randomise_, to_device
from kernelevo.work import WorkRecorder

# The extra size on a CPU: room for a few rows twice as wide as any declared width (GPU sizes
# included), but no more row blocks than the interpreter runs in a second or two: it pays per
# program, ~0.3 ms for a row kernel and ~3 ms for a matmul tile (measured: 1,650 tiles of the
# shipped matmul took 11.5 s over its two calls). A width beyond 50257 on 5 rows is 250 blocks.
CPU_EXTRA_BYTES = 16 << 20
CPU_EXTRA_BLOCKS = 512


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
    state_after: dict[str, torch.Tensor] | None = None  # a stateful model's state_dict after this call
    # per output: how far float64 moves when the inputs are rounded as float32 rounds (stress draws)
    sensitivity: tuple[float, ...] | None = None


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
    reference_state: Callable[[tuple[Any, ...]], dict[str, torch.Tensor]] = field(
        default=lambda x: {}, repr=False, compare=False)
    # A stress draw for the timed calls (k-th of the evaluation), with its expected outputs
    stressed: Callable[[int], PlannedCall] = field(default=lambda k: None, repr=False, compare=False)  # type: ignore


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


F32_EPS = 2.0 ** -24  # float32's unit roundoff


def _sensitivity(model: torch.nn.Module, inputs: list[Any], device: str, truth: tuple[torch.Tensor, ...] | None,
                 seed: int) -> tuple[float, ...] | None:
    """Per output, the largest change of the float64 result when every float input is moved by
    float32's unit roundoff (x * (1 + eps * u), u uniform in [-1, 1]): the error the problem's
    own conditioning forces on any float32 algorithm at these inputs. At an offset of 900 a
    LayerNorm amplifies rounding ~900x whatever the algorithm; a one-pass variance is ~1000x past
    that and an exp without the max overflows."""
    if truth is None:
        return None
    g = torch.Generator().manual_seed(seed)

    def nudge(t: torch.Tensor) -> torch.Tensor:
        u = torch.rand(t.shape, generator=g, dtype=torch.float64) * 2 - 1
        return t.double() * (1 + F32_EPS * u)

    try:
        m64 = copy.deepcopy(model).double()
        with torch.no_grad():
            out = m64(*to_device(_floats(inputs, nudge), device, copy=True))
        moved = tuple(o.detach().cpu().double() for o in flatten_outputs(out))
    except Exception:
        return None
    if len(moved) != len(truth):
        return None
    sens = []
    for m, t in zip(moved, truth, strict=True):
        if not t.is_floating_point() or m.shape != t.shape:
            sens.append(0.0)
            continue
        finite = torch.isfinite(m) & torch.isfinite(t.double())
        sens.append(float((m[finite] - t.double()[finite]).abs().max()) if bool(finite.any()) else 0.0)
    return tuple(sens)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _stress_scale(rng: random.Random) -> float:
    # randn x 32..64 reaches past 88.7, where exp overflows in float32.
    return round(rng.uniform(32.0, 64.0), 1)


def _stress_offset(rng: random.Random) -> float:
    return round(rng.choice((-1, 1)) * rng.uniform(100.0, 1000.0), 1)


def _stressed_inputs(kind: str, rng: random.Random, inputs: tuple[Any, ...]) -> tuple[tuple[Any, ...], str]:
    """A stress draw's inputs: float inputs at large magnitude, or moved by a large offset."""
    if kind == "magnitude":
        scale = _stress_scale(rng)
        return tuple(_floats(list(inputs), lambda t: t * scale)), f"input scale {scale:g}"
    offset = _stress_offset(rng)
    return (tuple(_floats(list(inputs), lambda t: t + offset * max(1.0, float(t.std()) if t.numel() > 1 else 1.0))),
            f"inputs offset by {offset:g}")


def plan_size(
    problem: Problem, index: int, size: dict[str, Any], device: str, seed: int, share: float,
    stateful: bool, flops: int = 0, min_bytes: int = 0, extra: bool = False,
) -> SizePlan:
    """The calls for one size. Raises when the reference cannot run there."""
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
        sens = _sensitivity(model, list(inputs), device, truth, base + 20 + len(calls)) if stress else None
        expected = _run(model, list(inputs), device)
        after = _state(model) if stateful else None
        calls.append(PlannedCall(kind, inputs, digest(list(inputs)), expected, truth, note, weights, after, sens))

    work = WorkRecorder()
    with work:
        add("extra" if extra else "plain", draw(0))
    add("extra" if extra else "plain", draw(1))
    if not extra:
        factor = math.exp(rng.uniform(-1.0, 1.0))
        add("rescaled", tuple(_floats(list(draw(2)), lambda t: t * factor)), f"inputs x{factor:.2f}")
        for kind, k in (("magnitude", 3), ("offset", 4)):
            add(kind, *_stressed_inputs(kind, rng, draw(k)), stress=True)
        model.load_state_dict(to_device(state_b, device))
        add("weights B", draw(5), "after a second set of weights was loaded", weights="B")
    final_state = _state(model)
    if not extra:
        model.load_state_dict(to_device(state_b, device))  # timed calls start from weights B

    def reference(inputs: tuple[Any, ...]) -> tuple[torch.Tensor, ...]:
        if stateful:
            model.load_state_dict(to_device(state_b, device))
        return _run(model, list(inputs), device)

    def reference_state(inputs: tuple[Any, ...]) -> dict[str, torch.Tensor]:
        """The state a timed call leaves: weights B, then this call."""
        reference(inputs)
        return _state(model)

    def stressed(k: int) -> PlannedCall:
        """A stress draw for the timed calls: the model as they find it (weights B)."""
        r = random.Random(base + 7919 * (k + 1))
        kind = r.choice(("magnitude", "offset"))
        inputs, note = _stressed_inputs(kind, r, draw(100_000 + k))
        if stateful:
            model.load_state_dict(to_device(state_b, device))
        truth = _truth(model, list(inputs), device)
        sens = _sensitivity(model, list(inputs), device, truth, base + 30 + k)
        return PlannedCall(kind, inputs, "", reference(inputs), truth, note, "B", sensitivity=sens)

    return SizePlan(
        index, problem.label(size), dict(size), init_inputs, state_a, state_b, tuple(calls), final_state,
        stateful, share * work.work, work.work, extra, flops, min_bytes,
        draw=lambda i: draw(100 + i), reference=reference, reference_state=reference_state, stressed=stressed,
    )


def _pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


def _pick(rng: random.Random, lo: int, hi: int, uniform: bool = False) -> int:
    """A value in [lo, hi] (log-uniform unless ``uniform``), not a power of two where the range allows."""
    lo, hi = max(1, lo), max(1, hi)
    for _ in range(20):
        v = rng.randint(lo, hi) if uniform else round(math.exp(rng.uniform(math.log(lo), math.log(hi + 1))))
        v = min(hi, max(lo, v))
        if not _pow2(v):
            return v
    return next((v for v in (hi, hi - 1, lo) if lo <= v <= hi and not _pow2(v)), hi)


def extra_size_knobs(problem: Problem, module: Any) -> dict[str, tuple[int, int, int]]:
    """The size globals an extra size may move: (smallest and largest value among this device's
    sizes, largest value any declared size has, GPU ones included)."""
    setting = getattr(module, "EXTRA_SIZE", None)
    if setting is False:
        return {}
    here = [s for s in problem.sizes if s]
    declared = [s for s in (*problem.declared, *problem.sizes) if s] if problem.declared else []

    def values(k: str, sizes: list[dict[str, Any]]) -> list[int]:
        vs = [s[k] for s in sizes if k in s] or [getattr(module, k, None)]
        return [v for v in vs if isinstance(v, int) and not isinstance(v, bool)]

    def knob(k: str, top: int | None = None) -> tuple[int, int, int]:
        local = values(k, here)
        return min(local), max(local), top if top is not None else max(values(k, declared))

    if isinstance(setting, dict):  # EXTRA_SIZE = {"dim": 8192}: only these, at most this far
        return {k: knob(k, max(1, int(v) // 2)) for k, v in setting.items()
                if isinstance(v, int) and not isinstance(v, bool) and k in problem.globals_ and values(k, here)}
    names = {k for s in declared for k, v in s.items() if isinstance(v, int) and not isinstance(v, bool)}
    if not declared:  # a single-size problem (KernelBench's own files): its dimension-like globals
        names = {k for k in problem.globals_ if isinstance(getattr(module, k, None), int)
                 and not isinstance(getattr(module, k), bool) and getattr(module, k) >= 8 and not k.isupper()}
    knobs = {k: knob(k) for k in sorted(names - set(problem.overrides)) if values(k, here)}
    return {k: v for k, v in knobs.items() if v[2] >= 2}


def _blocks(t: Any) -> int:
    """How many 1024-element row blocks a tensor spans: rows times blocks per row. The interpreter
    pays per program, so this, not bytes, is what a CPU evaluation's time follows."""
    if not isinstance(t, torch.Tensor) or t.dim() == 0:
        return 1
    if t.dim() == 1:
        return -(-t.numel() // 1024)
    last = t.shape[-1]
    return (t.numel() // max(last, 1)) * -(-last // 1024)


def size_cost(problem: Problem, size: dict[str, Any]) -> tuple[int, int]:
    """(bytes of inputs, weights and outputs; the most row blocks any of them spans) of the reference
    at ``size``, from shapes alone (meta tensors)."""
    mod = problem.namespace(size)
    with torch.device("meta"):
        model = mod.Model(*mod.get_init_inputs())
        inputs = mod.get_inputs()
        total = _numel_bytes(inputs) + sum(t.numel() * t.element_size() for t in model.state_dict().values())
        try:
            with torch.no_grad():
                out = list(flatten_outputs(model(*inputs)))
        except Exception:  # an op with no meta kernel: its inputs stand in for its outputs
            out = [t for t in flatten_outputs(inputs) if isinstance(t, torch.Tensor)]
    tensors = [t for t in (*flatten_outputs(inputs), *out) if isinstance(t, torch.Tensor)]
    return total + _numel_bytes(out), max((_blocks(t) for t in tensors), default=1)


def choose_extra_size(
    problem: Problem, module: Any, rng: random.Random, budget: tuple[int, int],
    measure: Callable[[dict[str, Any]], tuple[int, int]], lean: bool = False,
) -> tuple[dict[str, Any] | None, str]:
    """A size outside the declared ones: every size global beyond its largest declared value (up
    to twice it, not a power of two) while ``byte_budget`` allows, else as many as fit, chosen at
    random, with the others within this device's declared range (at their smallest when ``lean``:
    the interpreter pays per program), all within ``budget`` (bytes, output row blocks). Returns it,
    or None and a note saying why there is none."""
    knobs = extra_size_knobs(problem, module)
    if not knobs:
        return None, ""
    names = list(knobs)
    last = ""
    singles = names[:]
    rng.shuffle(singles)
    # Every dimension beyond first, shedding random ones while over the budget; then each alone.
    for beyond in [list(names)] + [[k] for k in singles] + [list(names)] * 2:
        size: dict[str, Any] = dict(problem.overrides)
        for k, (lo, hi, top) in knobs.items():
            # Uniform beyond the top (a cap at 1.33x the largest declared width shows 2 times in 3),
            # log-uniform within the declared range.
            size[k] = _pick(rng, top + 1, 2 * top, uniform=True) if k in beyond else lo if lean else _pick(rng, lo, hi)
        try:
            cost = measure(size)

            def over(c: tuple[int, int]) -> bool:
                return c[0] > budget[0] or c[1] > budget[1]

            # Over the budget: the others down to their smallest declared value, then fewer knobs beyond.
            for k in sorted((k for k in names if k not in beyond), key=lambda k: -size[k]):
                if not over(cost):
                    break
                size[k] = knobs[k][0]
                cost = measure(size)
            beyond = list(beyond)
            while over(cost) and len(beyond) > 1:
                k = beyond.pop(rng.randrange(len(beyond)))
                size[k] = knobs[k][0]
                cost = measure(size)
            for _ in range(8):  # one knob left: bring it nearer its top, staying beyond it
                if not over(cost):
                    break
                k, top = beyond[0], knobs[beyond[0]][2]
                size[k] = _pick(rng, top + 1, max(top + 1, (size[k] + top) // 2), uniform=True)
                cost = measure(size)
            if not over(cost):
                return size, ""
            last = (f"{problem.label(size)} needs {cost[0] / 2**20:.0f} MiB and {cost[1]} row blocks, over the "
                    f"budget ({budget[0] / 2**20:.0f} MiB, {budget[1]} blocks)")
        except Exception as e:  # noqa: BLE001 - the reference refuses this combination: try another
            last = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]
    return None, f"no extra size this time: {last}"


def make_plan(
    reference: Reference, seed: int, share: float, extra_budget_factor: float, extra: bool = True,
) -> Plan:
    """Fresh weights and draws for every declared size, and the extra size, for ``seed``."""
    problem, device = reference.problem, reference.device
    sizes: list[SizePlan] = []
    notes: list[str] = []
    with fp32_precision(reference.allow_tf32):
        for case in reference.cases:
            sizes.append(plan_size(problem, case.index, case.size, device, seed, share, case.stateful,
                                   case.flops, case.min_bytes))
        if extra:
            module = problem.namespace(problem.sizes[0])
            rng = random.Random(seed * 7919 + 13)
            largest = max(c.min_bytes for c in reference.cases)
            budget = (int(extra_budget_factor * largest), 1 << 62)
            if device == "cpu":  # the interpreter pays per program: bytes are cheap, row blocks are not
                budget = (max(budget[0], CPU_EXTRA_BYTES), CPU_EXTRA_BLOCKS)
            size, note = choose_extra_size(problem, module, rng, budget, lambda z: size_cost(problem, z),
                                           lean=device == "cpu")
            if note:
                notes.append(note)
            if size is not None:
                try:
                    sizes.append(plan_size(problem, len(sizes), size, device, seed, share,
                                           reference.cases[0].stateful, extra=True))
                except Exception as e:  # noqa: BLE001
                    notes.append(f"no extra size: the reference failed at {problem.label(size)} "
                                 f"({type(e).__name__})")
    return Plan(seed, tuple(sizes), tuple(notes))
