"""The offline proposer: a local search over a kernel's launch constants, with no language model.

A knob is an integer literal the tuner may rewrite: a module constant such as ``BLOCK_M = 128`` or
``NUM_WARPS = 8``, or a literal keyword of a launch ``kernel[grid](..., num_warps=4, BLOCK=1024)``.
Only those literals change; every other byte of the source stays as it was, so the same tuner can
polish a seed or a language model's winner.
"""

from __future__ import annotations

import ast
import random
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from kernelevo.candidate import source_digest

MAX_BLOCK = 8192
MAX_GROUP = 64
WARPS = (1, 2, 4, 8, 16)
STAGES = (1, 2, 3, 4, 5)
RANDOM_DRAWS = 200
_DOT_BLOCK = re.compile(r"BLOCK_(SIZE_)?[MNK](?![A-Z])")  # tl.dot needs these >= 16


@dataclass(frozen=True)
class Knob:
    name: str  # "BLOCK_M" for a module constant; "launch:_gelu_kernel:num_warps" for a launch keyword
    value: int
    choices: tuple[int, ...]  # values to try, the current one included, ascending


def _kind(name: str) -> str | None:
    upper = name.upper()
    if "WARPS" in upper:
        return "warps"
    if "STAGES" in upper:
        return "stages"
    if "BLOCK" in upper or "TILE" in upper:
        return "block"
    if any(w in upper for w in ("GROUP", "SPLIT", "CHUNK")):
        return "group"
    return None


def _choices(name: str, value: int) -> tuple[int, ...] | None:
    """The values a knob may take, or None when the literal is not a knob (e.g. a block of 100)."""
    kind = _kind(name)
    if kind is None or value < 1:
        return None
    if kind == "warps":
        return tuple(sorted({*WARPS, value}))
    if kind == "stages":
        return tuple(sorted({*STAGES, value}))
    if value & (value - 1):  # blocks, tiles, groups, splits and chunks are powers of two
        return None
    lo = 16 if kind == "block" and _DOT_BLOCK.search(name.upper()) else 1
    hi = MAX_BLOCK if kind == "block" else MAX_GROUP
    near = (value // 4, value // 2, value * 2, value * 4)  # value is a power of two: the halves are exact
    return tuple(sorted({value, *(v for v in near if v >= 1 and lo <= v <= hi)}))


def _int_literal(node: ast.AST | None) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    return None


def _locate(source: str) -> list[tuple[Knob, ast.Constant]]:
    """Each knob with the literal node that holds its value."""
    tree = ast.parse(source)
    found: list[tuple[Knob, ast.Constant]] = []
    assigned: Counter[str] = Counter()
    constants: list[tuple[str, ast.AST | None]] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets = [t.id for t in stmt.targets if isinstance(t, ast.Name)]
            assigned.update(targets)
            if len(stmt.targets) == 1 and targets:
                constants.append((targets[0], stmt.value))
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            assigned[stmt.target.id] += 1
            constants.append((stmt.target.id, stmt.value))
    for name, value_node in constants:
        value = _int_literal(value_node)
        if value is None or assigned[name] > 1 or not name.isupper():  # a reassigned name is ambiguous
            continue
        choices = _choices(name, value)
        if choices is not None:
            assert isinstance(value_node, ast.Constant)
            found.append((Knob(name, value, choices), value_node))
    seen: Counter[str] = Counter()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript)):
            continue
        target = node.func.value
        kernel = target.id if isinstance(target, ast.Name) else (
            target.attr if isinstance(target, ast.Attribute) else ast.unparse(target))
        for kw in node.keywords:
            value = _int_literal(kw.value)
            if kw.arg is None or value is None:
                continue
            if not (kw.arg in ("num_warps", "num_stages") or kw.arg.startswith(("BLOCK", "TILE"))
                    or kw.arg.isupper()):
                continue
            choices = _choices(kw.arg, value)
            if choices is None:
                continue
            name = f"launch:{kernel}:{kw.arg}"
            seen[name] += 1
            if seen[name] > 1:  # the same kernel launched twice with the same literal keyword
                name = f"{name}#{seen[name]}"
            assert isinstance(kw.value, ast.Constant)
            found.append((Knob(name, value, choices), kw.value))
    return found


def find_knobs(source: str) -> list[Knob]:
    """The tunable integer literals of a module, in source order for constants, then launches."""
    return [k for k, _ in _locate(source)]


def _rewrite(source: str, located: list[tuple[Knob, ast.Constant]], values: Mapping[str, int]) -> str:
    nodes = {k.name: node for k, node in located}
    unknown = sorted(set(values) - set(nodes))
    if unknown:
        raise KeyError(f"no knob named {', '.join(unknown)}")
    data = source.encode()
    starts = [0]
    for line in data.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    spans = []
    for name, value in values.items():
        node = nodes[name]
        assert node.end_lineno is not None and node.end_col_offset is not None
        # ast offsets are UTF-8 byte columns
        spans.append((starts[node.lineno - 1] + node.col_offset, starts[node.end_lineno - 1] + node.end_col_offset,
                      str(int(value)).encode()))
    for begin, end, text in sorted(spans, reverse=True):
        data = data[:begin] + text + data[end:]
    return data.decode()


def apply(source: str, values: Mapping[str, int]) -> str:
    """``source`` with the named knobs' literals set to ``values``; every other byte unchanged."""
    return _rewrite(source, _locate(source), values)


def _label(name: str, knobs: list[Knob]) -> str:
    short = name.rsplit(":", 1)[-1]
    if name.startswith("launch:") and sum(k.name.rsplit(":", 1)[-1] == short for k in knobs) == 1:
        return short
    return name


class Tuner:
    """Proposes a parent with one or two knobs moved to a neighbouring value, never a tried source."""

    def __init__(self, seed_source: str, rng: random.Random | None = None):
        self.seed_source = seed_source
        self.seed_knobs = find_knobs(seed_source) if seed_source.strip() else []
        self.rng = rng or random.Random()

    def propose(self, parent_source: str, tried: set[str]) -> tuple[str, str] | None:
        """(new source, "BLOCK_M 128->64, num_warps 4->8"), or None when every neighbour within reach was tried."""
        try:
            located = _locate(parent_source)
        except (SyntaxError, ValueError):
            return None
        knobs = [k for k, _ in located]
        movable = [k for k in knobs if len(k.choices) > 1]
        if not movable:
            return None
        skip = set(tried) | {source_digest(parent_source)}

        def attempt(moves: dict[Knob, int]) -> tuple[str, str] | None:
            source = _rewrite(parent_source, located, {k.name: v for k, v in moves.items()})
            digest = source_digest(source)
            if digest in skip:
                return None
            skip.add(digest)
            return source, ", ".join(f"{_label(k.name, knobs)} {k.value}->{v}" for k, v in moves.items())

        for _ in range(RANDOM_DRAWS):
            n = 2 if len(movable) > 1 and self.rng.random() >= 0.7 else 1
            picked = self.rng.sample(movable, n)
            move = attempt({k: self.rng.choice([c for c in k.choices if c != k.value]) for k in picked})
            if move is not None:
                return move
        for k in movable:
            for c in k.choices:
                if c != k.value and (move := attempt({k: c})) is not None:
                    return move
        return None
