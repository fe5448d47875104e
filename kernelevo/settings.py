"""One settings object for the whole tool, loadable from TOML; the environment is read here only."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomllib

# Environment variables kernelevo itself reads (Triton and PyTorch read their own).
ENV_CONFIG = "KERNELEVO_CONFIG"  # path of a TOML settings file
ENV_DEBUG = "KERNELEVO_DEBUG"  # "1": print tracebacks for bad input


class SettingsError(ValueError):
    """A settings file that cannot be used; the message is one line."""


@dataclass(frozen=True)
class EvalSettings:
    """How candidates are judged and timed."""

    timeout_s: float = 60.0  # per candidate, import to last timing
    seed: int = 0  # seeds weights, input draws and timing perturbations
    draws: int = 2  # plain random input draws per size (a third, rescaled draw is added)
    rescaled_draw: bool = True  # one extra draw with float inputs rescaled: defeats closed forms
    allow_tf32: bool = False  # TF32 (and the reference with it) in fp32 problems
    # The interpreter is ~1000x slower than a GPU; a few reps are enough to rank tilings.
    cpu_warmup: int = 1
    cpu_reps: int = 3
    gpu_warmup: int = 10
    gpu_reps: int = 100
    gpu_max_time_s: float = 2.0  # per size and side; reps stop early past this
    keep_jobs: bool = False  # keep each candidate's job folder (logs, inputs) for debugging


@dataclass(frozen=True)
class Settings:
    eval: EvalSettings = field(default_factory=EvalSettings)
    debug: bool = False

    @staticmethod
    def load(path: str | Path | None = None) -> Settings:
        """Settings from ``path``, else from ``$KERNELEVO_CONFIG``, else the defaults."""
        path = path or os.environ.get(ENV_CONFIG)
        base = Settings(debug=os.environ.get(ENV_DEBUG, "") not in ("", "0"))
        if not path:
            return base
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise SettingsError(f"{p}: no such settings file") from None
        except tomllib.TOMLDecodeError as e:
            raise SettingsError(f"{p}: not valid TOML ({e})") from None
        return base.updated(data, str(p))

    def updated(self, data: dict[str, Any], origin: str = "settings") -> Settings:
        """A copy with the ``[eval]`` table (and top-level keys) of ``data`` applied."""
        unknown = set(data) - {"eval", "debug"}
        if unknown:
            raise SettingsError(f"{origin}: unknown setting(s) {', '.join(sorted(unknown))}")
        ev = self.eval
        table = data.get("eval", {})
        if not isinstance(table, dict):
            raise SettingsError(f"{origin}: [eval] must be a table")
        known = {f.name: f for f in fields(EvalSettings)}
        changes: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                raise SettingsError(f"{origin}: unknown setting eval.{key}")
            expected = type(getattr(ev, key))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is not expected:
                raise SettingsError(
                    f"{origin}: eval.{key} must be {expected.__name__}, got {type(value).__name__}"
                )
            changes[key] = value
        debug = data.get("debug", self.debug)
        return replace(self, eval=replace(ev, **changes), debug=bool(debug))
