"""The MAP-Elites archive: descriptors from real seeds, frozen normalisation, elites, champions, resume."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest

from kernelevo.archive import (
    Archive,
    BehaviourDescriptors,
    CodeDescriptors,
    Entry,
    Normaliser,
    behaviour_descriptors,
    code_descriptors,
)
from kernelevo.evaluate.verdict import SizeResult

KERNELS = Path(__file__).parent.parent / "kernels"

PERSISTENT_STRIDE = '''
import triton
import triton.language as tl

@triton.jit
def _scale(x_ptr, n_tiles, BLOCK: tl.constexpr):
    step = tl.num_programs(0)
    for tile in range(tl.program_id(0), n_tiles, step):
        offs = tile * BLOCK + tl.arange(0, BLOCK)
        tl.store(x_ptr + offs, tl.load(x_ptr + offs) * 2)

def scale(x):
    _scale[(132,)](x, x.numel() // 256, BLOCK=256)
'''

PERSISTENT_GRID = '''
import torch
import triton
import triton.language as tl

@triton.jit
def _copy(x_ptr, y_ptr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.load(x_ptr + offs))

def copy(x, y):
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    _copy[(sms,)](x, y, BLOCK=512)
'''

ATOMICS = '''
import triton
import triton.language as tl

BLOCK_ROWS = 100  # not a power of two: not a tile

@triton.jit
def _helper(x):  # jitted but never launched from Python: not a kernel of its own
    return x * 2

@triton.jit
def _sum(x_ptr, out_ptr, n, BLOCK_SIZE: tl.constexpr):
    offs = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    tl.atomic_add(out_ptr, tl.sum(_helper(x), axis=0))

def total(x, out):
    _sum[(x.numel() // 256 + 1,)](x, out, x.numel(), BLOCK_SIZE=256, num_warps=4, num_stages=2)
'''

CUDA = '''
import cupy as cp

_SRC = r"""
#define TILE 32
extern "C" __global__ void dot_rows(const float* x, float* out, int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        atomicAdd(out, x[i]);
    }
}
"""
_mod = cp.RawModule(code=_SRC)
_kernel = _mod.get_function("dot_rows")
'''


def test_matmul_seed_descriptors() -> None:
    d = code_descriptors((KERNELS / "matmul" / "seed.py").read_text())
    assert d == CodeDescriptors("triton", kernels=1, loops=1, dot=True, atomics=False, persistent=False,
                                tile=128, num_warps=8, num_stages=3)


def test_softmax_and_cross_entropy_seed_descriptors() -> None:
    d = code_descriptors((KERNELS / "softmax" / "seed.py").read_text())
    assert (d.kernels, d.loops, d.dot, d.atomics, d.persistent) == (1, 2, False, False, False)
    assert (d.tile, d.num_warps, d.num_stages) == (4096, 8, None)  # MAX_BLOCK = 4096, NUM_WARPS = 8
    ce = code_descriptors((KERNELS / "cross_entropy" / "seed.py").read_text())
    assert (ce.kernels, ce.loops, ce.num_warps) == (2, 2, 8)  # two launch sites; warps 8 and 4, max 8


def test_persistent_toys() -> None:
    stride = code_descriptors(PERSISTENT_STRIDE)
    assert stride.persistent and stride.loops == 1 and stride.tile == 256
    grid = code_descriptors(PERSISTENT_GRID)
    assert grid.persistent and grid.loops == 0 and grid.tile == 512
    assert not code_descriptors((KERNELS / "softmax" / "seed.py").read_text()).persistent


def test_atomics_toy() -> None:
    d = code_descriptors(ATOMICS)
    assert d.atomics and not d.dot and not d.persistent
    assert (d.kernels, d.tile, d.num_warps, d.num_stages) == (1, 256, 4, 2)


def test_cuda_best_effort() -> None:
    d = code_descriptors(CUDA, "cuda")
    assert d == CodeDescriptors("cuda", kernels=1, loops=1, dot=False, atomics=True, persistent=False,
                                tile=32, num_warps=None, num_stages=None)


@pytest.mark.parametrize("language", ["triton", "cuda"])
def test_syntax_error_gives_zeros(language: str) -> None:
    d = code_descriptors("def broken(:\n    tl.dot(a, b)\n", language)
    assert d == CodeDescriptors(language, 0, 0, False, False, False, 0, None, None)


def _size(ref: float | None, lat: float | None) -> SizeResult:
    return SizeResult(size={}, latency_ms=lat, reference_ms=ref)


def test_behaviour_descriptors() -> None:
    sizes = [_size(1.0, 2.0), _size(3.0, 1.0), _size(3.0, 1.0), _size(1.0, 1.0)]
    b = behaviour_descriptors(sizes)
    assert b.wins == (False, True, True, True)  # equal to the reference counts as a win
    assert b.strongest == 1  # sizes 1 and 2 tie at 3x: the lower index
    assert b.roofline is None
    stats = [(0.0, 1e9), (4e12, 0.0), (0.0, 0.0), (0.0, 0.0)]
    assert behaviour_descriptors(sizes, stats).roofline is None  # no ceilings, no roofline
    # size 0: 1 GB in 2 ms = 500 GB/s of 1 TB/s; size 1: 4 TFLOP in 1 ms = 4000 TFLOP/s of 10000
    b = behaviour_descriptors(sizes, stats, (1e12, 1e16))
    assert b.roofline == pytest.approx(0.5)
    assert behaviour_descriptors(sizes, stats, (1e12, 1e15)).roofline == pytest.approx(4.0)
    missing = behaviour_descriptors([_size(1.0, None), _size(1.0, 0.5)])
    assert missing.wins == (False, True) and missing.strongest == 1


def test_normaliser_freezes_after_warmup_and_round_trips() -> None:
    n = Normaliser(warmup=4, bins=3)
    assert n.bin("x", 5.0) == 1 and n.bin("x", None) == -1  # nothing seen: middle; unknown: -1
    for v in (1.0, 2.0, 3.0, 4.0):
        assert not n.frozen
        n.observe({"x": v})
    assert n.frozen
    probes = [0.0, 1.0, 2.5, 4.0, 10.0]
    before = [n.bin("x", v) for v in probes]
    assert before[0] == 0 and before[2] == 1 and before[-1] == 2
    moving = Normaliser(warmup=100, bins=3)
    for v in (1.0, 2.0, 3.0, 4.0, 1e6, 2e6, 3e6):
        n.observe({"x": v})
        moving.observe({"x": v})
    assert [n.bin("x", v) for v in probes] == before
    assert [moving.bin("x", v) for v in probes] != before  # without freezing the extremes would move them
    restored = Normaliser.from_dict(json.loads(json.dumps(n.to_dict())))
    assert restored.frozen and [restored.bin("x", v) for v in probes] == before


def _entry(id_: int, speedups: tuple[float, ...], *, tile: int = 128, dot: bool = True, loops: int = 1,
           warps: int | None = 8, roofline: float | None = None) -> Entry:
    fitness = math.exp(sum(math.log(s) for s in speedups) / len(speedups))
    code = CodeDescriptors("triton", 1, loops, dot, False, False, tile, warps, None)
    strongest = max(range(len(speedups)), key=lambda i: (speedups[i], -i))
    return Entry(id_, fitness, speedups, code, BehaviourDescriptors(tuple(s >= 1 for s in speedups), strongest,
                                                                      roofline))


def test_better_replaces_equal_and_worse_do_not() -> None:
    a = Archive(n_sizes=3, warmup=0)
    r1 = a.add(_entry(1, (1.5, 1.5, 1.5)))
    assert r1.placed and r1.new_best and r1.champion_of == (0, 1, 2)
    assert r1.cell == "triton|k1|loop1|dot|-|-|tile1|w1|wins:111|strong0|roof-"
    r2 = a.add(_entry(2, (2.0, 2.0, 2.0)))
    assert r2.cell == r1.cell and r2.placed and r2.new_best
    r3 = a.add(_entry(3, (2.0, 2.0, 2.0)))
    assert not r3.placed and not r3.new_best and r3.champion_of == ()
    r4 = a.add(_entry(4, (1.2, 1.2, 1.2)))
    assert not r4.placed and not r4.new_best
    assert len(a) == 1 and a.cells[r1.cell].id == 2 and a.best is not None and a.best.id == 2
    with pytest.raises(TypeError):
        a.cells["x"] = a.cells[r1.cell]  # type: ignore[index]


def test_per_size_champion_differs_from_best() -> None:
    a = Archive(n_sizes=3, warmup=0)
    a.add(_entry(1, (2.0, 2.5, 2.0)))
    r = a.add(_entry(2, (3.0, 0.5, 0.5), dot=False))  # best on size 0 only
    assert r.placed and not r.new_best and r.champion_of == (0,)
    assert a.best is not None and a.best.id == 1
    assert [c.id if c else None for c in a.champions] == [2, 1, 1]
    assert len(a) == 2
    # A champion that is no elite: the elite of the cell it would sit in (#1) is no inspiration for it.
    shadow = a.add(_entry(3, (1.2, 2.8, 1.2)))  # #1's cell, lower fitness, fastest on size 1
    assert not shadow.placed and shadow.champion_of == (1,) and a.cells[shadow.cell].id == 1
    a.add(_entry(4, (1.0, 1.0, 3.0), loops=0))
    assert [c.id if c else None for c in a.champions] == [2, 3, 4] and len(a) == 3
    rng, seen = random.Random(2), 0
    for _ in range(400):
        parent, insp, source = a.sample(rng, inspirations=5)
        if parent is not None and parent.id == 3:
            seen += 1
            assert source == "champion" and sorted(e.id for e in insp) == [2, 4]
    assert seen > 10


def _entries(n: int, seed: int = 3) -> list[Entry]:
    rng = random.Random(seed)
    return [_entry(i, tuple(round(rng.uniform(0.4, 3.0), 3) for _ in range(3)), tile=rng.choice([32, 64, 128, 256]),
                   dot=rng.random() < 0.5, loops=rng.randint(0, 2), warps=rng.choice([4, 8, None]),
                   roofline=rng.uniform(0, 1)) for i in range(1, n + 1)]


def _filled(warmup: int = 4, n: int = 16, seed: int = 3) -> Archive:
    a = Archive(n_sizes=3, warmup=warmup)
    for e in _entries(n, seed):
        a.add(e)
    return a


def test_sample_reaches_every_source_with_inspirations_from_other_cells() -> None:
    a = _filled()
    assert len(a) >= 5
    rng = random.Random(11)
    sources: Counter[str] = Counter()
    for _ in range(2000):
        parent, insp, source = a.sample(rng, inspirations=2)
        assert parent is not None
        sources[source] += 1
        home = a.cell_of(parent)
        assert len(insp) == 2 and len({e.id for e in insp} | {parent.id}) == 3
        assert all(a.cell_of(e) != home and a.cells[a.cell_of(e)] == e for e in insp)
    assert set(sources) == {"best", "cell", "champion"}
    assert 0.30 < sources["best"] / 2000 < 0.40 and 0.20 < sources["champion"] / 2000 < 0.30
    assert Archive(n_sizes=3).sample(rng) == (None, [], "empty")


def test_warmup_entries_are_replaced_and_cells_do_not_move_after() -> None:
    warm = [_entry(i, (1.5, 1.5, 1.5), tile=t) for i, t in enumerate([256, 64, 16, 4], 1)]
    a = Archive(n_sizes=3, warmup=4)
    for e in warm:
        a.add(e)
    assert a.normaliser.frozen
    cells = dict(a.cells)
    # Each warmup entry sits in (or lost, by fitness, to the elite of) the cell the final stats give it,
    # not one its early, moving stats gave it.
    assert all(a.cell_of(e) == k for k, e in cells.items())
    assert {a.cell_of(e) for e in warm} == set(cells) and len(cells) == 3
    a.add(_entry(99, (0.5, 0.5, 0.5), tile=1 << 20, warps=64, roofline=50.0))
    assert all(a.cell_of(e) == k for k, e in cells.items())


@pytest.mark.parametrize("warmup,n", [(4, 16), (8, 5)])  # frozen, and resumed mid-warmup
def test_round_trip_is_exact(warmup: int, n: int) -> None:
    a = _filled(warmup, n)
    saved = json.loads(json.dumps(a.to_dict()))
    assert saved == a.to_dict()  # plain JSON types: a stored state compares equal to the live one
    b = Archive.from_dict(saved)
    assert dict(b.cells) == dict(a.cells) and b.best == a.best and b.champions == a.champions
    probes = [_entry(100 + i, (s, 1.0, 2.0), tile=t, warps=w, roofline=r)
              for i, (s, t, w, r) in enumerate([(0.5, 16, 2, 0.01), (1.5, 1024, 16, 0.9), (3.0, 128, None, None)])]
    assert [b.cell_of(p) for p in probes] == [a.cell_of(p) for p in probes]
    ra, rb = random.Random(5), random.Random(5)
    for _ in range(50):
        pa, ia, sa = a.sample(ra)
        pb, ib, sb = b.sample(rb)
        assert (pa, ia, sa) == (pb, ib, sb)
    assert [a.add(p) for p in probes] == [b.add(p) for p in probes]
    assert a.to_dict() == b.to_dict()


@pytest.mark.parametrize("fitness", [0.0, -1.0, math.nan, math.inf])
def test_bad_fitness_raises(fitness: float) -> None:
    a = Archive(n_sizes=1)
    good = _entry(1, (1.0,))
    with pytest.raises(ValueError, match="fitness"):
        a.add(Entry(good.id, fitness, good.speedups, good.code, good.behaviour))
    with pytest.raises(ValueError, match="speedups"):
        a.add(Entry(2, 1.0, (1.0, 1.0), good.code, good.behaviour))
    assert len(a) == 0 and a.best is None
