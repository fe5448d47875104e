"""One settings object for the whole tool, loadable from TOML; the environment is read here only."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomllib

# Environment variables kernelevo itself reads (Triton, PyTorch and litellm read their own).
ENV_CONFIG = "KERNELEVO_CONFIG"  # path of a TOML settings file
ENV_DEBUG = "KERNELEVO_DEBUG"  # "1": print tracebacks for bad input
ENV_TRITON_INTERPRET = "TRITON_INTERPRET"  # Triton's own: "1" runs kernels on the CPU in its interpreter
ENV_API_KEY = "KERNELEVO_API_KEY"  # key sent to an --api-base server when the provider's own variable is unset


class SettingsError(ValueError):
    """A settings file that cannot be used; the message is one line."""


@dataclass(frozen=True)
class EvalSettings:
    """How candidates are judged and timed."""

    timeout_s: float = 60.0  # per candidate, import to last timing
    # Weights and draws: -1 draws a fresh seed per evaluation (recorded in it, so nothing memoised in
    # one evaluation answers the next); N makes every evaluation use N (reproducing a verdict).
    seed: int = -1
    allow_tf32: bool = False  # TF32 (and the reference with it) in fp32 problems
    # PyTorch compute a forward may do, as a share of the reference's work, before it returns garbage:
    # room for glue such as a normaliser's .sum().item(). Over it without --allow-torch-compute fails.
    torch_compute_share: float = 0.25
    allow_torch_compute: bool = False  # hybrids (a cuBLAS GEMM plus an own epilogue), labelled hybrid
    extra_size: bool = True  # one size outside the declared ones per evaluation
    extra_size_bytes: float = 3.0  # its memory at most this many times the largest declared size's
    timed_checks: int = 5  # timed calls checked per size on a GPU (all of them on a CPU)
    max_config_checks: int = 16  # autotune configs checked for correctness (each on one size)
    timing_bytes: int = 2 << 30  # fresh timing draws per size and side on a GPU, in bytes (caps the reps)
    # The interpreter is ~1000x slower than a GPU; a few reps are enough to rank tilings.
    cpu_warmup: int = 1
    cpu_reps: int = 3
    gpu_warmup: int = 10
    gpu_reps: int = 100
    gpu_max_time_s: float = 2.0  # per size and side; reps stop early past this
    # Candidate and reference alternate in this many blocks per size (A B A B ...); the speedup is
    # the median of the blocks' ratios, so clock and thermal drift between blocks cancel.
    timing_blocks: int = 5
    keep_jobs: bool = False  # keep each candidate's job folder (logs, inputs) for debugging
    compile_baseline: bool = False  # also time the reference under torch.compile; report speedup against both
    cuda_graph: bool = False  # time GPU candidates as CUDA-graph replays (kernels of a few µs)
    sol_slack: float = 0.9  # faster than this fraction of the speed of light is a measurement error or a hack


@dataclass(frozen=True)
class SearchSettings:
    """The loop: budgets, strategy, how many proposals are in flight."""

    budget: int = 50  # candidates evaluated in the run's database, resumed ones included
    max_cost_usd: float = 0.0  # 0: no dollar limit
    max_time_s: float = 0.0  # 0: no time limit (this invocation's wall time)
    strategy: str = "map-elites"  # a name from kernelevo.strategies (map-elites, sample, ...); "archive" = map-elites
    concurrency: int = 4  # proposals in flight; enough that the evaluator never waits on a model
    seed: int = 0  # the controller's random choices (parents, tiers, tuner moves)
    warmup: int = 8  # correct candidates observed before descriptor normalisation freezes
    bins: int = 3  # bins per continuous descriptor
    inspirations: int = 2  # elites of other cells shown in a prompt
    strong_share: float = 0.1  # fraction of proposals sent to the strong model
    stagnation: int = 8  # evaluations without a new best before the strong model is called
    fix_share: float = 0.25  # share of cheap proposals that repair a recent failure
    # A model's proposal this similar (tokens, constants aside) to a correct candidate is not judged:
    # a re-tuned copy costs an evaluation and teaches nothing (ShinkaEvolve's novelty rejection). 0: off.
    novelty: float = 0.98


@dataclass(frozen=True)
class ExecSettings:
    """Where evaluations run (``[execute]``)."""

    executor: str = "local"  # local: this machine's GPUs (or cores); ray: actors of a Ray cluster
    workers: int = 0  # evaluations at once; 0: one per visible GPU, or one per core (at most 8) on a CPU
    address: str = ""  # the Ray cluster ("auto", "ray://head:10001"); "": start a local one
    gpu_types: str = ""  # comma-separated Ray accelerator types: every candidate is judged on each
    max_retries: int = 3  # workers that may die under one candidate before it is recorded as a crash
    # GPUs: static checks and Triton/NVRTC compiles on CPUs ahead of the GPU (kernelevo.evaluate.warm);
    # on Ray, by compile actors on every node that holds workers
    compile_ahead: bool = True
    ready_timeout_s: float = 180.0  # Ray: a worker not placed and started by then is refused, in one line

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.gpu_types.split(",") if t.strip())


@dataclass(frozen=True)
class LLMSettings:
    """Models are litellm names (provider/model); api_base points them at any OpenAI-compatible server."""

    model: str = ""  # the cheap tier; "" means the offline tuner
    strong_model: str = ""  # "" means the cheap model plays both tiers
    models: list[str] = field(default_factory=list)  # more cheap-tier models: an ensemble drawn from
    strong_models: list[str] = field(default_factory=list)  # more strong-tier models
    chooser: str = "tiers"  # "tiers" (the strategy's tier, a model drawn from it) or "bandit" (UCB per dollar)
    api_base: str = ""
    temperature: float = 0.8
    max_tokens: int = 8192
    max_tokens_cap: int = 32768  # a reply cut off at the limit doubles that model's limit, up to this
    timeout_s: float = 300.0  # one request
    retries: int = 4  # transient errors (rate limit, 5xx, time-outs), with exponential backoff
    backoff_s: float = 2.0  # first wait; doubles each retry
    edit_threshold: int = 120  # parents longer than this many lines are edited by search/replace


@dataclass(frozen=True)
class Price:
    """Dollars per million tokens, for models litellm has no price for (local servers, new models)."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0


_TABLES = {"eval": EvalSettings, "search": SearchSettings, "llm": LLMSettings, "execute": ExecSettings}


@dataclass(frozen=True)
class Settings:
    eval: EvalSettings = field(default_factory=EvalSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    llm: LLMSettings = field(default_factory=LLMSettings)
    execute: ExecSettings = field(default_factory=ExecSettings)
    prices: dict[str, Price] = field(default_factory=dict)
    # [strategy.<name>] tables, as written: each strategy checks its own (kernelevo.strategies.options)
    strategy: dict[str, dict[str, Any]] = field(default_factory=dict)
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
        except IsADirectoryError:
            raise SettingsError(f"{p}: is a directory, not a settings file") from None
        except tomllib.TOMLDecodeError as e:
            raise SettingsError(f"{p}: not valid TOML ({e})") from None
        return base.updated(data, str(p))

    def updated(self, data: dict[str, Any], origin: str = "settings") -> Settings:
        """A copy with the tables of ``data`` (``[eval]``, ``[search]``, ``[llm]``, ``[execute]``, ``[prices]``)
        applied."""
        unknown = set(data) - {*_TABLES, "prices", "strategy", "debug"}
        if unknown:
            raise SettingsError(f"{origin}: unknown setting(s) {', '.join(sorted(unknown))}")
        changes: dict[str, Any] = {}
        for name, cls in _TABLES.items():
            if name in data:
                changes[name] = _apply(getattr(self, name), cls, data[name], name, origin)
        if "prices" in data:
            table = data["prices"]
            if not isinstance(table, dict):
                raise SettingsError(f"{origin}: [prices] must be a table of models")
            prices = dict(self.prices)
            for model, entry in table.items():
                prices[model] = _apply(Price(), Price, entry, f'prices."{model}"', origin)
            changes["prices"] = prices
        if "strategy" in data:
            table = data["strategy"]
            if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
                raise SettingsError(f"{origin}: [strategy.<name>] must be tables of a strategy's settings")
            changes["strategy"] = {**self.strategy, **{k: {**self.strategy.get(k, {}), **v} for k, v in table.items()}}
        if "debug" in data:
            changes["debug"] = bool(data["debug"])
        return replace(self, **changes)

    def with_options(self, table: str, **options: Any) -> Settings:
        """A copy with command-line options applied to one table; ``None`` means "not given"."""
        given = {k: v for k, v in options.items() if v is not None}
        return self.updated({table: given}, "command line") if given else self


def apply_table(current: Any, table: Any, name: str, origin: str = "settings") -> Any:
    """A copy of the frozen dataclass ``current`` with a TOML table's values, type-checked."""
    return _apply(current, type(current), table, name, origin)


def _apply(current: Any, cls: type, table: Any, name: str, origin: str) -> Any:
    if not isinstance(table, dict):
        raise SettingsError(f"{origin}: [{name}] must be a table")
    known = {f.name for f in fields(cls)}
    changes: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise SettingsError(f"{origin}: unknown setting {name}.{key}")
        expected = type(getattr(current, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not expected:
            raise SettingsError(f"{origin}: {name}.{key} must be {expected.__name__}, got {type(value).__name__}")
        changes[key] = value
    return replace(current, **changes)


def api_key_from_env() -> str | None:
    return os.environ.get(ENV_API_KEY) or None


def triton_interpreted() -> bool:
    """Whether Triton kernels in this process run in Triton's CPU interpreter."""
    return os.environ.get(ENV_TRITON_INTERPRET) == "1"


def use_triton_interpreter() -> None:
    """Run Triton kernels on the CPU from now on. Only works before Triton is imported: its own
    library functions (``tl.sum``'s combine function, ...) are made interpreted or compiled then."""
    os.environ.setdefault(ENV_TRITON_INTERPRET, "1")
