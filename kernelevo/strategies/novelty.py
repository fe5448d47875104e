"""Novelty rejection, across strategies (after ShinkaEvolve): a model's proposal too close to a
kernel the run already has is not judged, and the next prompt is told why.

Closeness is token similarity of the two modules with comments, docstrings, whitespace and numeric
literals set aside (``tokenize`` then ``difflib``): a reply that changes only constants is the same
program — constants are the offline tuner's job, which walks them for free — and a reply that
renames or reflows is too. ShinkaEvolve uses code embeddings with an LLM novelty judge; a token
comparison needs no model and no download, and it is what a rejection reason can quote.
"""

from __future__ import annotations

import difflib
import io
import keyword
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
         tokenize.ENCODING, tokenize.ENDMARKER}


@lru_cache(maxsize=512)
def tokens(source: str) -> tuple[str, ...]:
    """The module's tokens as compared: numbers as ``0``, docstrings dropped, names kept (a new
    helper or a new ``tl.`` call is a real change); () when it does not tokenize."""
    out: list[str] = []
    prev = None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in _SKIP:
                if tok.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
                    prev = tok.type
                continue
            if tok.type == tokenize.STRING and prev in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, None):
                prev = tok.type
                continue  # a docstring or a bare string statement: prose, not program
            prev = tok.type
            if tok.type == tokenize.NUMBER:
                out.append("0")
            elif tok.type == tokenize.NAME and not keyword.iskeyword(tok.string):
                out.append(tok.string)
            else:
                out.append(tok.string)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return ()
    return tuple(out)


def similarity(a: str, b: str) -> float:
    """Share of tokens the two modules have in common, in order (difflib's ratio, 0..1)."""
    ta, tb = tokens(a), tokens(b)
    if not ta or not tb:
        return 0.0
    m = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
    return m.ratio() if m.real_quick_ratio() > 0 and m.quick_ratio() > 0 else 0.0


@dataclass(frozen=True)
class TooClose:
    twin: int
    similarity: float

    def reason(self) -> str:
        return (f"too close to candidate #{self.twin} ({self.similarity:.0%} of its tokens, constants aside): not "
                "judged. Change the algorithm (tiling, fusion, memory access, parallelisation), not constants "
                "or names: the tuner tries constants")


def too_close(source: str, elites: Iterable[tuple[int, str]], threshold: float) -> TooClose | None:
    """The first kernel of ``elites`` (id, source) at least ``threshold`` similar, or None. A
    threshold of 0 or more than 1 switches rejection off."""
    if not 0 < threshold <= 1:
        return None
    ta = tokens(source)
    for cid, other in elites:
        tb = tokens(other)
        if not ta or not tb:
            continue
        m = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
        if m.real_quick_ratio() >= threshold and m.quick_ratio() >= threshold and (r := m.ratio()) >= threshold:
            return TooClose(cid, r)
    return None
