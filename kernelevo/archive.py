"""A MAP-Elites archive of kernel candidates, after LEVI.

A cell is named by what the code is (kernels, loops, tensor cores, atomics, persistent grid, tile,
warps) and by how it behaves (which sizes it wins, where it is strongest, how near the roofline).
Each cell keeps its fastest member; per-size champions are kept apart, as in GEPA's Pareto front,
so a kernel that is best on one size only is not lost to a better average.
"""

from __future__ import annotations

import ast
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

from kernelevo.evaluate.verdict import SizeResult, size_speedup

# Parent sources: exploit the best, explore random cells, and (the remaining 0.25) keep size specialists alive.
P_BEST, P_CELL = 0.35, 0.4  # parents from the best, a random cell, else a per-size champion (LEVI's mix)
# Spellings of "the number of SMs": a grid sized from it means one resident program per SM.
_SM_NAMES = {"numsms", "nsms", "smcount", "multiprocessorcount"}


@dataclass(frozen=True)
class CodeDescriptors:
    language: str
    kernels: int
    loops: int
    dot: bool
    atomics: bool
    persistent: bool
    tile: int
    num_warps: int | None
    num_stages: int | None


@dataclass(frozen=True)
class BehaviourDescriptors:
    wins: tuple[bool, ...]
    strongest: int
    roofline: float | None
    hybrid: bool = False  # PyTorch did a real share of the work (judged with --allow-torch-compute)


@dataclass(frozen=True)
class Entry:
    id: int
    fitness: float
    speedups: tuple[float, ...]
    code: CodeDescriptors
    behaviour: BehaviourDescriptors


@dataclass(frozen=True)
class AddResult:
    cell: str
    placed: bool
    new_best: bool
    champion_of: tuple[int, ...]


def code_descriptors(source: str, language: str = "triton") -> CodeDescriptors:
    """Structure read from the syntax tree; unparsable source gets all zeros (never raises)."""
    try:
        tree = ast.parse(source)
        return _cuda(tree, language) if language == "cuda" else _triton(tree, language)
    except Exception:  # SyntaxError, null bytes, deep nesting: a descriptor must never stop the search
        return CodeDescriptors(language, 0, 0, False, False, False, 0, None, None)


def _name(node: ast.AST) -> str:
    """The dotted name a node spells ("tl.dot", "_kernel"); "" for anything else."""
    return ast.unparse(node) if isinstance(node, (ast.Name, ast.Attribute)) else ""


def _int(node: ast.AST | None, consts: Mapping[str, int]) -> int | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name):
        return consts.get(node.id)
    if isinstance(node, ast.Call) and _name(node.func).endswith("constexpr") and len(node.args) == 1:
        return _int(node.args[0], consts)  # BLOCK = tl.constexpr(128)
    return None


def _module_ints(tree: ast.Module) -> dict[str, int]:
    consts: dict[str, int] = {}
    for stmt in tree.body:
        target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else (
            stmt.target if isinstance(stmt, ast.AnnAssign) else None)
        if isinstance(target, ast.Name) and (v := _int(getattr(stmt, "value", None), consts)) is not None:
            consts[target.id] = v
    return consts


def _largest_tile(consts: Mapping[str, int], more: list[int]) -> int:
    # Only powers of two: odd values are counts or bounds (MAX_ROWS-like), not tile shapes.
    sizes = [v for k, v in consts.items() if k.isupper() and ("BLOCK" in k or "TILE" in k)] + more
    return max((v for v in sizes if v > 0 and v & (v - 1) == 0), default=0)


def _uses_sm_count(tree: ast.AST) -> bool:
    for n in ast.walk(tree):
        name = (n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute)
                else n.arg if isinstance(n, (ast.arg, ast.keyword)) and n.arg
                else n.value if isinstance(n, ast.Constant) and isinstance(n.value, str) else "")
        if name.lower().replace("_", "") in _SM_NAMES:
            return True
    return False


def _triton(tree: ast.Module, language: str) -> CodeDescriptors:
    consts = _module_ints(tree)
    jitted = [fn for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef)
              and any(_name(d.func if isinstance(d, ast.Call) else d).endswith("jit") for d in fn.decorator_list)]
    names = {fn.name for fn in jitted}
    tiles: list[int] = []
    launched: set[str] = set()
    knobs: dict[str, list[int]] = {"num_warps": [], "num_stages": []}
    for n in ast.walk(tree):
        if not isinstance(n, ast.Call):
            continue
        pairs = [(kw.arg, kw.value) for kw in n.keywords if kw.arg]
        launch = isinstance(n.func, ast.Subscript) and (k := _name(n.func.value).split(".")[-1]) in names
        if launch:
            launched.add(k)
        elif _name(n.func).endswith("Config") and n.args and isinstance(d := n.args[0], ast.Dict):
            launch = True  # an autotune config is a launch in waiting: {"BLOCK_M": 128, ...}, num_warps=8
            pairs += [(k.value, v) for k, v in zip(d.keys, d.values, strict=True)
                      if isinstance(k, ast.Constant) and isinstance(k.value, str)]
        for k, v in pairs:
            if (i := _int(v, consts)) is None:
                continue
            if k in knobs:
                knobs[k].append(i)
            elif launch and k.upper().startswith(("BLOCK", "TILE")):
                tiles.append(i)
    # Inside a jitted body every call is a triton.language function or another kernel, whatever the alias.
    ops = {_name(n.func).split(".")[-1] for fn in jitted for n in ast.walk(fn) if isinstance(n, ast.Call)}
    return CodeDescriptors(
        language=language,
        kernels=len(launched),
        loops=sum(isinstance(n, (ast.For, ast.While)) for fn in jitted for n in ast.walk(fn)),
        dot=bool(ops & {"dot", "dot_scaled"}),
        atomics=any(op.startswith("atomic_") for op in ops),
        persistent=_uses_sm_count(tree) or any(_strides_by_programs(fn) for fn in jitted),
        tile=_largest_tile(consts, tiles),
        num_warps=max(knobs["num_warps"], default=None),
        num_stages=max(knobs["num_stages"], default=None),
    )


def _strides_by_programs(fn: ast.FunctionDef) -> bool:
    """Does a loop advance by the number of programs (the persistent-kernel idiom)?"""
    names: set[str] = set()

    def uses(node: ast.AST) -> bool:
        return any((isinstance(n, ast.Call) and _name(n.func).endswith("num_programs"))
                   or (isinstance(n, ast.Name) and n.id in names) for n in ast.walk(node))

    for _ in range(3):  # a few rounds follow `step = tl.num_programs(0) * 2; stride = step`
        names |= {t.id for n in ast.walk(fn) if isinstance(n, ast.Assign) and uses(n.value)
                  for t in n.targets if isinstance(t, ast.Name)}
    for loop in ast.walk(fn):
        if isinstance(loop, ast.For) and isinstance(loop.iter, ast.Call) and len(loop.iter.args) >= 3 \
                and uses(loop.iter.args[2]):
            return True
        if isinstance(loop, (ast.For, ast.While)) and any(
                isinstance(n, ast.AugAssign) and uses(n.value) for s in loop.body for n in ast.walk(s)):
            return True
    return False


# Where a CUDA module names the kernels it will launch: (keyword, position) of the name argument.
_NAME_ARG = {"get_function": ("name", 0), "RawKernel": ("name", 1), "load_inline": ("functions", 3)}
_GLOBAL = re.compile(r"__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+(\w+)")
_CUDA_TILE = re.compile(r"(?:#define\s+|\bconst(?:expr)?\s+(?:unsigned\s+)?\w+\s+)(\w*(?:BLOCK|TILE)\w*)\s*=?\s*(\d+)")


def _cuda(tree: ast.Module, language: str) -> CodeDescriptors:
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    device = "\n".join(s for s in strings if "__global__" in s) or "\n".join(strings)
    names: set[str] = set()
    for n in ast.walk(tree):
        if not isinstance(n, ast.Call) or (spot := _NAME_ARG.get(_name(n.func).split(".")[-1])) is None:
            continue
        key, pos = spot
        a = next((kw.value for kw in n.keywords if kw.arg == key), n.args[pos] if len(n.args) > pos else None)
        names |= {e.value for e in (a.elts if isinstance(a, (ast.List, ast.Tuple)) else [a])
                  if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return CodeDescriptors(
        language=language,
        kernels=len(names) or len(set(_GLOBAL.findall(device))),
        loops=len(re.findall(r"\b(?:for|while)\s*\(", device)),
        dot=re.search(r"(?<![A-Za-z])(?:w|wg)?mma", device) is not None,
        atomics=re.search(r"\batomic[A-Z]\w*\s*\(|\batom\.", device) is not None,
        # a grid-stride loop is CUDA's spelling of Triton's num_programs stride
        persistent=_uses_sm_count(tree) or re.search(r"\+=[^;]*gridDim", device) is not None,
        tile=_largest_tile(_module_ints(tree), [int(v) for k, v in _CUDA_TILE.findall(device) if k.isupper()]),
        num_warps=None,
        num_stages=None,
    )


def behaviour_descriptors(sizes: Sequence[SizeResult], stats: Sequence[tuple[float, float]] | None = None,
                          ceilings: tuple[float, float] | None = None, hybrid: bool = False) -> BehaviourDescriptors:
    """stats: per size (flops, min_bytes); ceilings: (bytes_per_s, flop_per_s) of the device."""
    speedups = [size_speedup(s) for s in sizes]
    strongest, top = 0, -math.inf
    for i, r in enumerate(speedups):
        if r is not None and r > top:  # strict: ties keep the lowest index
            strongest, top = i, r
    roofline = None
    if stats is not None and ceilings is not None:
        bw, peak = ceilings
        fracs = [max(nbytes / t / bw if bw > 0 else 0.0, flops / t / peak if peak > 0 else 0.0)
                 for s, (flops, nbytes) in zip(sizes, stats, strict=False)
                 if s.latency_ms and (t := s.latency_ms / 1e3) > 0]
        roofline = max((f for f in fracs if math.isfinite(f)), default=None)
    return BehaviourDescriptors(tuple(r is not None and r >= 1 for r in speedups), strongest, roofline, hybrid)


class Normaliser:
    """Running z-scores, squashed by a sigmoid into equal bins; frozen after warmup so cells stay put."""

    def __init__(self, warmup: int = 8, bins: int = 3) -> None:
        if warmup < 0 or bins < 1:
            raise ValueError(f"need warmup >= 0 and bins >= 1, got warmup={warmup}, bins={bins}")
        self.warmup = warmup
        self.bins = bins
        self.observations = 0
        self._stats: dict[str, list[float]] = {}  # name -> [count, mean, M2] (Welford)

    @property
    def frozen(self) -> bool:
        return self.observations >= self.warmup

    def observe(self, values: Mapping[str, float]) -> None:
        if self.frozen:
            return
        for name, v in values.items():
            if v is None or not math.isfinite(v):
                continue
            st = self._stats.setdefault(name, [0.0, 0.0, 0.0])
            st[0] += 1
            delta = v - st[1]
            st[1] += delta / st[0]
            st[2] += delta * (v - st[1])
        self.observations += 1

    def bin(self, name: str, value: float | None) -> int:
        if value is None or math.isnan(value):
            return -1
        st = self._stats.get(name)
        if not st or st[0] == 0:
            return self.bins // 2
        n, mean, m2 = st
        sd, diff = math.sqrt(max(m2, 0.0) / n), value - mean
        eps = 1e-12 * max(1.0, abs(mean))
        # Every warmup value equal: the same value is typical, anything else is an extreme.
        z = diff / sd if sd > eps else (0.0 if abs(diff) <= eps else math.copysign(math.inf, diff))
        p = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))
        return min(int(p * self.bins), self.bins - 1)

    def to_dict(self) -> dict[str, Any]:
        return {"warmup": self.warmup, "bins": self.bins, "observations": self.observations,
                "stats": {k: list(v) for k, v in self._stats.items()}}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Normaliser:
        n = Normaliser(int(d["warmup"]), int(d["bins"]))
        n.observations = int(d["observations"])
        n._stats = {k: [float(x) for x in v] for k, v in d["stats"].items()}
        return n


def _entry_to_dict(e: Entry) -> dict[str, Any]:
    d = asdict(e)
    d["speedups"] = list(e.speedups)
    d["behaviour"]["wins"] = list(e.behaviour.wins)
    return d


def _entry_from_dict(d: Mapping[str, Any]) -> Entry:
    b = d["behaviour"]
    return Entry(int(d["id"]), float(d["fitness"]), tuple(float(s) for s in d["speedups"]),
                 CodeDescriptors(**d["code"]),
                 BehaviourDescriptors(tuple(bool(w) for w in b["wins"]), int(b["strongest"]), b["roofline"],
                                      bool(b.get("hybrid", False))))


class Archive:
    def __init__(self, n_sizes: int, warmup: int = 8, bins: int = 3) -> None:
        if n_sizes < 0:
            raise ValueError(f"n_sizes must be >= 0, got {n_sizes}")
        self.n_sizes = n_sizes
        self.normaliser = Normaliser(warmup, bins)
        self._cells: dict[str, Entry] = {}
        self._champions: list[Entry | None] = [None] * n_sizes
        self._best: Entry | None = None
        # Entries added while the normaliser still learns: cells are rebuilt from them on every add,
        # so an early entry is not stranded in a cell its stats no longer map it to.
        self._warm: list[Entry] = []

    @property
    def best(self) -> Entry | None:
        return self._best

    @property
    def cells(self) -> Mapping[str, Entry]:
        return MappingProxyType(self._cells)

    @property
    def champions(self) -> tuple[Entry | None, ...]:
        return tuple(self._champions)

    def __len__(self) -> int:
        return len(self._cells)

    @staticmethod
    def _continuous(entry: Entry) -> dict[str, float | None]:
        w = entry.code.num_warps
        # log2: tiles and warps come in doublings, so doublings should be equal steps
        return {"log2_tile": math.log2(max(entry.code.tile, 0) + 1),
                "log2_warps": math.log2(w) if w and w > 0 else None,
                "roofline": entry.behaviour.roofline}

    def cell_of(self, entry: Entry) -> str:
        c, b, v = entry.code, entry.behaviour, self._continuous(entry)

        def nb(k: str) -> str:
            b = self.normaliser.bin(k, v[k])
            return "-" if b < 0 else str(b)

        return "|".join([
            c.language, f"k{min(c.kernels, 3)}", f"loop{min(c.loops, 2)}", "dot" if c.dot else "-",
            "atom" if c.atomics else "-", "pers" if c.persistent else "-", f"tile{nb('log2_tile')}",
            f"w{nb('log2_warps')}", "wins:" + "".join("1" if w else "0" for w in b.wins),
            f"strong{b.strongest}", f"roof{nb('roofline')}", *(["hybrid"] if b.hybrid else []),
        ])

    def _place(self, entry: Entry) -> tuple[str, bool]:
        cell = self.cell_of(entry)
        cur = self._cells.get(cell)
        if cur is None or entry.fitness > cur.fitness:  # strict: the incumbent keeps a tie
            self._cells[cell] = entry
            return cell, True
        return cell, False

    def add(self, entry: Entry) -> AddResult:
        f = entry.fitness
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or f <= 0:
            raise ValueError(f"candidate #{entry.id}: fitness must be a finite number > 0, got {f!r}")
        if len(entry.speedups) != self.n_sizes or any(not math.isfinite(s) or s < 0 for s in entry.speedups):
            raise ValueError(f"candidate #{entry.id}: need {self.n_sizes} finite speedups >= 0, got {entry.speedups}")
        new_best = self._best is None or f > self._best.fitness
        if new_best:
            self._best = entry
        champion_of = []
        for i, s in enumerate(entry.speedups):
            cur = self._champions[i]
            if s > 0 and (cur is None or s > cur.speedups[i]):
                self._champions[i] = entry
                champion_of.append(i)
        learning = not self.normaliser.frozen
        self.normaliser.observe({k: v for k, v in self._continuous(entry).items() if v is not None})
        if learning:
            self._warm.append(entry)
            self._cells = {}
            for e in self._warm:
                self._place(e)
            if self.normaliser.frozen:
                self._warm = []
            cell = self.cell_of(entry)
            placed = self._cells.get(cell) is entry
        else:
            cell, placed = self._place(entry)
        return AddResult(cell, placed, new_best, tuple(champion_of))

    def sample(self, rng: random.Random, inspirations: int = 2, p_best: float = P_BEST,
               p_cell: float = P_CELL) -> tuple[Entry | None, list[Entry], str]:
        """A parent (from the best, a random cell, or a per-size champion) and elites of other cells."""
        if not self._cells:
            return None, [], "empty"
        keys = sorted(self._cells)  # sorted, not insertion order: a restored archive samples the same
        champs = [i for i, e in enumerate(self._champions) if e is not None]
        r = rng.random()
        parent: Entry | None
        if r < p_best and self._best is not None:
            parent, source = self._best, "best"
        elif r >= p_best + p_cell and champs:
            parent, source = self._champions[rng.choice(champs)], "champion"
        else:
            parent, source = self._cells[rng.choice(keys)], "cell"
        assert parent is not None
        home = self.cell_of(parent)  # a champion need not be an elite: skip the cell it would sit in
        others = {e.id: e for k in keys if k != home and (e := self._cells[k]).id != parent.id}
        pool = list(others.values())
        return parent, rng.sample(pool, min(max(inspirations, 0), len(pool))), source

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1, "n_sizes": self.n_sizes, "normaliser": self.normaliser.to_dict(),
            "cells": {k: _entry_to_dict(e) for k, e in self._cells.items()},
            "champions": [_entry_to_dict(e) if e else None for e in self._champions],
            "best": _entry_to_dict(self._best) if self._best else None,
            "warm": [_entry_to_dict(e) for e in self._warm],
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Archive:
        a = Archive(int(d["n_sizes"]))
        a.normaliser = Normaliser.from_dict(d["normaliser"])
        a._cells = {k: _entry_from_dict(e) for k, e in d["cells"].items()}
        a._champions = [_entry_from_dict(e) if e else None for e in d["champions"]]
        a._best = _entry_from_dict(d["best"]) if d.get("best") else None
        a._warm = [_entry_from_dict(e) for e in d.get("warm", ())]
        return a
