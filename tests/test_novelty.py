"""Novelty: the same program with other constants, comments or docstrings is not new; a change to
what the kernel computes or how it moves memory is."""

from __future__ import annotations

from kernelevo.strategies.novelty import similarity, too_close
from tests.conftest import CANDIDATES, ROOT

GOOD = (CANDIDATES / "softmax_good.py").read_text()
SEED = (ROOT / "kernels" / "softmax" / "seed.py").read_text()


def test_constants_comments_and_docstrings_do_not_make_a_program_new() -> None:
    import re

    retuned = re.sub(r"\b4\b", "8", re.sub(r"\b2\b", "16", SEED))  # integer literals, not names like exp2
    retuned = '"""A docstring of my own."""\n# and a comment\n' + retuned
    assert retuned != SEED and similarity(SEED, retuned) == 1.0
    close = too_close(retuned, [(7, SEED)], 0.98)
    assert close is not None and close.twin == 7 and "#7 (100%" in close.reason()


def test_another_kernel_is_new_and_the_threshold_switches_rejection() -> None:
    assert similarity(SEED, GOOD) < 0.9
    assert too_close(GOOD, [(1, SEED)], 0.98) is None
    assert too_close(SEED, [(1, SEED)], 0.0) is None  # off
    assert too_close("def broken(:\n", [(1, SEED)], 0.5) is None  # does not tokenize: the judge says why
