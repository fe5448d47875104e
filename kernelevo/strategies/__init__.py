"""Search strategies, by name. Adding one is a new file in this package and one line here
(README: "Writing a strategy")."""

from __future__ import annotations

from typing import Any

from kernelevo.settings import SearchSettings
from kernelevo.strategies.base import Added, Ask, Context, Judged, Strategy
from kernelevo.strategies.map_elites import MapElites
from kernelevo.strategies.sample import Sample

REGISTRY: dict[str, type] = {
    MapElites.name: MapElites,
    Sample.name: Sample,
}
ALIASES = {"archive": "map-elites"}  # the name runs made before strategies were plug-ins used

__all__ = ["ALIASES", "REGISTRY", "Added", "Ask", "Context", "Judged", "Strategy", "make", "names"]


def names() -> list[str]:
    return sorted(REGISTRY)


def make(name: str, settings: SearchSettings, n_sizes: int, state: dict[str, Any] | None = None,
         **options: Any) -> Strategy:
    """The strategy called ``name``, restored from ``state`` when a run resumes."""
    cls = REGISTRY[ALIASES.get(name, name)]
    strategy = cls(settings, n_sizes, **options)
    if state:
        strategy.load(state)
    return strategy
