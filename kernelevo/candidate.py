"""A candidate kernel: source text and where it came from. Nothing here runs it."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Language = Literal["triton", "cuda"]

_CUDA_MARKERS = re.compile(r"\b(cupy|RawKernel|RawModule|load_inline)\b")


def source_digest(source: str) -> str:
    """sha256 hex digest of the source text (how a run recognises a candidate it has seen, and an
    export proves its files are the ones verified)."""
    return hashlib.sha256(source.encode()).hexdigest()


class CandidateError(ValueError):
    """A candidate file that cannot be read; the message is one line."""


def detect_language(source: str) -> Language:
    """CUDA when the module compiles CUDA C++ (CuPy or load_inline), else Triton."""
    return "cuda" if _CUDA_MARKERS.search(source) and "@triton.jit" not in source else "triton"


@dataclass(frozen=True)
class Candidate:
    """A module defining ``ModelNew``; ``name`` labels it in reports and tracebacks."""

    source: str
    name: str = "candidate"
    language: Language = "triton"
    parent_id: int | None = None
    model: str | None = None  # the language model that wrote it; None for a file or a tuner
    prompt_kind: str | None = None

    @staticmethod
    def from_file(path: str | Path) -> Candidate:
        p = Path(path)
        try:
            source = p.read_text()
        except FileNotFoundError:
            raise CandidateError(f"{p}: no such candidate file") from None
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
            raise CandidateError(f"{p}: cannot read ({type(e).__name__})") from None
        return Candidate(source=source, name=str(p), language=detect_language(source))

    @staticmethod
    def from_source(source: str, name: str = "candidate") -> Candidate:
        return Candidate(source=source, name=name, language=detect_language(source))
