"""The offline tuner: which literals are knobs, byte-exact rewrites, and a local search that never repeats."""

from __future__ import annotations

import ast
import importlib.util
import random
from pathlib import Path

import pytest
import torch

from kernelevo.propose.tuner import Knob, Tuner, apply, find_knobs, source_digest

KERNELS = Path(__file__).parents[1] / "kernels"


def seed(op: str) -> str:
    return (KERNELS / op / "seed.py").read_text()


def knobs(source: str) -> dict[str, Knob]:
    return {k.name: k for k in find_knobs(source)}


def test_matmul_knobs() -> None:
    k = knobs(seed("matmul"))
    assert {n: k[n].value for n in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "NUM_WARPS", "NUM_STAGES")} == {
        "BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8, "NUM_WARPS": 8, "NUM_STAGES": 3}
    assert k["BLOCK_M"].choices == (32, 64, 128, 256, 512)
    assert k["BLOCK_K"].choices == (16, 32, 64, 128)  # 8 would break tl.dot
    assert k["GROUP_M"].choices == (2, 4, 8, 16, 32)
    assert k["NUM_WARPS"].choices == (1, 2, 4, 8, 16)
    assert k["NUM_STAGES"].choices == (1, 2, 3, 4, 5)
    assert not any(n.startswith("launch:") for n in k)  # its launch passes names, not literals


def test_softmax_knobs() -> None:
    k = knobs(seed("softmax"))
    assert set(k) == {"MAX_BLOCK", "NUM_WARPS"}
    assert k["MAX_BLOCK"].value == 4096 and k["MAX_BLOCK"].choices == (1024, 2048, 4096, 8192)  # clamped at 8192


SYNTHETIC = """\
import triton  # naïve comment: non-ASCII bytes before the literals
BLOCK = 256
BLOCK_ODD = 100
TILE_N: int = 64
SPLIT_K = 128
NUM_WARPS = 4
block_lower = 64
EPS = 8
GROUP = 2
GROUP = 4


def launch(x, y):
    _k[(1,)](x, y, n, BLOCK=512, num_warps=2, num_stages=2, other=7)
    other.kern[(2,)](x, BLOCK_SIZE=16, num_warps=8)
"""


def test_synthetic_knobs_and_bounds() -> None:
    k = knobs(SYNTHETIC)
    assert set(k) == {"BLOCK", "TILE_N", "SPLIT_K", "NUM_WARPS", "launch:_k:BLOCK", "launch:_k:num_warps",
                      "launch:_k:num_stages", "launch:kern:BLOCK_SIZE", "launch:kern:num_warps"}
    assert k["SPLIT_K"].choices == (32, 64, 128)  # GROUP/SPLIT/CHUNK stay within [1, 64]; the current value stays
    assert k["launch:kern:BLOCK_SIZE"].choices == (4, 8, 16, 32, 64)
    for knob in k.values():
        assert knob.value in knob.choices
        assert list(knob.choices) == sorted(set(knob.choices))
        if "warps" in knob.name.lower() or "stages" in knob.name.lower():
            continue
        others = [c for c in knob.choices if c != knob.value]
        assert all(c & (c - 1) == 0 and 1 <= c <= 8192 for c in others), knob
        assert all(knob.value // 4 <= c <= knob.value * 4 for c in others), knob


def test_all_seed_choices_are_powers_of_two_within_bounds() -> None:
    for path in sorted(KERNELS.glob("*/seed.py")):
        for knob in find_knobs(path.read_text()):
            assert knob.value in knob.choices, (path, knob)
            if knob.name.endswith("STAGES"):
                assert set(knob.choices) <= {1, 2, 3, 4, 5}, knob
                continue
            assert all(c & (c - 1) == 0 for c in knob.choices), (path, knob)
            hi = 64 if any(w in knob.name for w in ("GROUP", "SPLIT", "CHUNK")) else 8192
            lo = 16 if knob.name in ("BLOCK_M", "BLOCK_N", "BLOCK_K") else 1
            assert all(lo <= c <= hi for c in knob.choices), (path, knob)


def test_apply_changes_only_the_literals() -> None:
    out = apply(SYNTHETIC, {"BLOCK": 1024, "launch:_k:num_warps": 16, "launch:kern:BLOCK_SIZE": 4, "TILE_N": 128})
    expected = (SYNTHETIC.replace("BLOCK = 256", "BLOCK = 1024").replace("num_warps=2", "num_warps=16")
                .replace("BLOCK_SIZE=16", "BLOCK_SIZE=4").replace("TILE_N: int = 64", "TILE_N: int = 128"))
    assert out == expected
    ast.parse(out)
    assert knobs(out)["launch:_k:num_warps"].value == 16
    with pytest.raises(KeyError):
        apply(SYNTHETIC, {"EPS": 16})
    src = seed("matmul")
    out = apply(src, {"BLOCK_K": 64, "NUM_STAGES": 4})
    assert out == src.replace("BLOCK_K = 32\n", "BLOCK_K = 64\n").replace("NUM_STAGES = 3\n", "NUM_STAGES = 4\n")
    assert apply(src, {}) == src


def test_propose_never_returns_a_tried_source() -> None:
    src = seed("matmul")
    tuner = Tuner(src, random.Random(3))
    tried = {source_digest(src)}
    single = double = 0
    for _ in range(40):
        move = tuner.propose(src, tried)
        assert move is not None
        new, note = move
        digest = source_digest(new)
        assert digest not in tried
        tried.add(digest)
        changed = [(a.name, a.value, b.value) for a, b in zip(find_knobs(src), find_knobs(new), strict=True)
                   if a.value != b.value]
        assert sorted(note.split(", ")) == sorted(f"{n} {a}->{b}" for n, a, b in changed)
        single += len(changed) == 1
        double += len(changed) == 2
        assert len(changed) in (1, 2)
    assert single and double


def test_propose_exhausts_a_one_knob_source() -> None:
    src = "NUM_STAGES = 3\n\n\nclass ModelNew:\n    pass\n"
    tuner = Tuner(src, random.Random(0))
    tried: set[str] = set()
    seen = set()
    while (move := tuner.propose(src, tried)) is not None:
        tried.add(source_digest(move[0]))
        seen.add(knobs(move[0])["NUM_STAGES"].value)
    assert seen == {1, 2, 4, 5}


def test_propose_on_a_child_moves_from_the_childs_values() -> None:
    src = seed("gelu")
    child = apply(src, {"BLOCK_SIZE": 4096})
    new, note = Tuner(src, random.Random(0)).propose(child, set()) or ("", "")
    assert "BLOCK_SIZE 4096->" in note or "NUM_WARPS 4->" in note
    assert knobs(new)["BLOCK_SIZE"].value in (1024, 2048, 4096, 8192)


def test_no_knobs_means_no_proposal() -> None:
    src = "EPS = 1e-5\nBLOCK = 100\n\n\nclass ModelNew:\n    pass\n"
    assert find_knobs(src) == []
    assert Tuner(src).propose(src, set()) is None
    assert Tuner("").propose("def (:\n", set()) is None  # an unparsable parent is no error


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tuned_gelu_still_matches_the_reference(tmp_path: Path) -> None:
    src = seed("gelu")
    tuner = Tuner(src, random.Random(7))
    tried = {source_digest(src)}
    torch.manual_seed(0)
    x = torch.randn(3, 1025)  # 3075 elements: a masked last block for every block size tried
    expected = torch.nn.functional.gelu(x, approximate="tanh")
    blocks = set()
    for i in range(3):
        move = tuner.propose(src, tried)
        assert move is not None
        new, _ = move
        tried.add(source_digest(new))
        blocks.add(knobs(new)["BLOCK_SIZE"].value)
        path = tmp_path / f"tuned_gelu_{i}.py"
        path.write_text(new)
        mod = _load(path, f"tuned_gelu_{i}")
        with torch.no_grad():
            out = mod.ModelNew()(x)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert blocks - {1024}, "the seeded draws should move the block size at least once"
