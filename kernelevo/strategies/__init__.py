"""Search strategies, by name. Adding one is a new file in this package and one line here
(README: "Writing a strategy")."""

from __future__ import annotations

from typing import Any

from kernelevo.settings import SearchSettings, SettingsError, apply_table
from kernelevo.strategies.adaptive import Adaptive
from kernelevo.strategies.base import Added, Ask, Context, Judged, Strategy
from kernelevo.strategies.islands import Islands
from kernelevo.strategies.map_elites import MapElites
from kernelevo.strategies.pareto import Pareto
from kernelevo.strategies.plan import Plan
from kernelevo.strategies.sample import Sample

REGISTRY: dict[str, type] = {
    Adaptive.name: Adaptive,
    Islands.name: Islands,
    MapElites.name: MapElites,
    Pareto.name: Pareto,
    Plan.name: Plan,
    Sample.name: Sample,
}
ALIASES = {"archive": "map-elites"}  # the name runs made before strategies were plug-ins used

__all__ = ["ALIASES", "REGISTRY", "Added", "Ask", "Context", "Judged", "Strategy", "make", "names", "options"]


def names() -> list[str]:
    return sorted(REGISTRY)


def options(name: str, tables: dict[str, dict[str, Any]]) -> Any:
    """The strategy's own settings: its ``Options`` dataclass with the ``[strategy.<name>]`` table
    applied (a SettingsError names an unknown key or a wrong type); None for a strategy without."""
    name = ALIASES.get(name, name)
    cls = REGISTRY[name]
    opts = getattr(cls, "Options", None)
    if opts is None:
        if tables.get(name):
            raise SettingsError(f"[strategy.{name}]: the {name} strategy has no settings")
        return None
    return apply_table(opts(), tables.get(name, {}), f"strategy.{name}")


def make(name: str, settings: SearchSettings, n_sizes: int, state: dict[str, Any] | None = None,
         tables: dict[str, dict[str, Any]] | None = None, **loop: Any) -> Strategy:
    """The strategy called ``name`` with its ``[strategy.<name>]`` settings, restored from ``state``
    when a run resumes. ``loop`` holds what the loop decides (``tune_share``)."""
    cls = REGISTRY[ALIASES.get(name, name)]
    opts = options(name, tables or {})
    strategy = cls(settings, n_sizes, **loop) if opts is None else cls(settings, n_sizes, opts, **loop)
    if state:
        strategy.load(state)
    return strategy
