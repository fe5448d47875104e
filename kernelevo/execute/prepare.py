"""The stage before the GPU: static checks and compiling ahead, on the driver's CPU.

A candidate the static checks refuse is recorded without taking a GPU; every other one is
compiled (kernelevo.evaluate.warm) by a confined worker that launches nothing, while the GPUs
judge earlier candidates, so a timed worker's first launch finds its kernels in Triton's cache.
A Ray node keeps its own caches: there a compile actor per node runs a :class:`PrepareSlot`
(kernelevo.execute.cluster.RayPrepareSlot).
"""

from __future__ import annotations

from typing import Any

from kernelevo.candidate import Candidate
from kernelevo.evaluate.verdict import Evaluation
from kernelevo.execute.base import ProblemSpec
from kernelevo.settings import EvalSettings


def static_refusal(candidate: Candidate) -> Evaluation | None:
    """The static checks' verdict, when they refuse the candidate."""
    from kernelevo.evaluate.static import check_source

    st = check_source(candidate.source)
    if st.verdict is None:
        return None
    return Evaluation(candidate.name, st.verdict, st.reason, "")


def merge_warmed(parts: list[Any]) -> Any:
    """One ``Warmed`` for a candidate compiled on several nodes: the launches are the same on each;
    what one node could not warm is kept; the time is the slowest node's."""
    from kernelevo.evaluate.warm import Warmed

    if len(parts) == 1:
        return parts[0]
    return Warmed(parts[0].kernels, tuple(dict.fromkeys(s for p in parts for s in p.skipped)),
                  max(p.seconds for p in parts))


class PrepareSlot:
    """One compile-ahead worker: a zygote of its own, rebuilt when the problem changes (a suite)."""

    def __init__(self, settings: EvalSettings, name: str = "prepare-0"):
        self.settings, self.name = settings, name
        self._key: Any = None
        self._warmer: Any = None  # kernelevo.evaluate.warm.Warmer
        self._scratch: Any = None
        self.warmed: list[Any] = []  # Warmed, per candidate (the benchmarks and tests read them)

    def check(self, candidate: Candidate) -> Evaluation | None:
        return static_refusal(candidate)

    def warm(self, spec: ProblemSpec, candidate: Candidate) -> Any:
        if self._key != spec.key:
            import tempfile
            from pathlib import Path

            from kernelevo.evaluate.warm import Warmer

            self.close()
            self._scratch = Path(tempfile.mkdtemp(prefix="kernelevo-prepare-"))
            self._warmer = Warmer(spec.load(self._scratch), spec.device, self.settings.allow_tf32)
            self._key = spec.key
        w = self._warmer.warm(candidate.source)
        self.warmed.append(w)
        return w

    def close(self) -> None:
        if self._warmer is not None:
            self._warmer.close()
            self._warmer, self._key = None, None
        if self._scratch is not None:
            import shutil

            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
