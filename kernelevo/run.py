"""Wiring one optimisation run: its database, model client, evaluator, proposer and search.

Everything that can refuse the run (a database of another problem, a bad key, an unknown
model) does so here, with one line, before the evaluator starts or any candidate is judged.
"""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path

from kernelevo import __version__
from kernelevo.execute.base import Executor
from kernelevo.problem import Problem
from kernelevo.settings import LLMSettings, Settings
from kernelevo.store import CallRecord, Store


class RunError(ValueError):
    """A run that cannot start; the message is one line."""


def _check_strategy(store: Store, name: str) -> None:
    """A run keeps its strategy: another one could not read its saved state."""
    from kernelevo import strategies

    saved = store.state("strategy")
    name = strategies.ALIASES.get(name, name)
    if saved and saved["name"] != name:
        raise RunError(f"{store.path}: this run searches with strategy {saved['name']}, not {name}; "
                       f"use --strategy {saved['name']} or another --db")


def _check_meta(store: Store, problem: Problem, device: str) -> None:
    """A database belongs to one problem (same file contents, same --set) on one device kind."""
    want = {"problem": problem.name, "problem_digest": problem.digest, "overrides": problem.overrides,
            "device": device}
    meta = store.meta()
    if "problem_digest" not in meta:
        from dataclasses import asdict

        from kernelevo.profile.gpu import software_fingerprint

        # gpu_key (what the timings are valid for) comes from the first worker: see Run
        store.set_meta({**want, "problem_path": str(problem.path), "kernelevo": __version__,
                        "versions": asdict(software_fingerprint()), "created": time.time()})
        return
    for key, value in want.items():
        if meta.get(key) != value:
            what = "problem file" if key in ("problem", "problem_digest") else key
            raise RunError(f"{store.path}: this run was made for another {what} ({meta.get(key)!r}, now {value!r}); "
                           "use another --db")


def _chooser(ls: LLMSettings):  # -> ModelChooser | None
    """The run's model chooser: every configured model, in its tier."""
    if not ls.model:
        return None
    from kernelevo.propose.models import ModelChooser

    return ModelChooser([ls.model, *ls.models], [ls.strong_model, *ls.strong_models] if ls.strong_model
                        else list(ls.strong_models), ls.chooser)


class Run:
    """One problem's search. ``executor``: workers shared with other runs (a suite), left open
    when this run closes; without one the run makes its own from the settings."""

    def __init__(self, problem: Problem, device: str, settings: Settings, store: Store,
                 seed_source: str | None, seed_name: str, executor: Executor | None = None):
        self.problem, self.device, self.settings, self.store = problem, device, settings, store
        self.seed_source, self.seed_name = seed_source, seed_name
        self.warnings: list[str] = []
        self.llm = None
        ls = settings.llm
        if ls.model:
            from kernelevo.propose.llm import LLMClient, LLMError

            self.llm = LLMClient(ls, settings.prices)
            for model in dict.fromkeys(m for m in (ls.model, ls.strong_model, *ls.models, *ls.strong_models) if m):
                try:
                    reply = self.llm.preflight(model)
                except LLMError as e:
                    raise RunError(str(e)) from None
                if reply is not None:
                    store.add_call(CallRecord(model, "preflight", "preflight", reply.tokens_in, reply.tokens_out,
                                              reply.cost_usd, reply.priced, reply.latency_s, reply.attempts))
                    if not reply.priced:
                        self.warnings.append(f"no price is known for {model}: its calls count as $0 "
                                             f'(set [prices."{model}"] in the config)')
        from kernelevo import execute

        self._own_executor = executor is None
        if executor is None:
            try:
                executor = execute.make(settings, device)
            except ValueError as e:
                raise RunError(str(e)) from None
        self.executor: Executor = executor
        self.spec = execute.ProblemSpec.of(problem, device)
        try:
            self.info = executor.info(self.spec)  # builds the reference on the first worker
        except BaseException:
            if self._own_executor:
                executor.close()
            raise
        self.warnings += list(self.info.warnings)
        types = list(settings.execute.types)
        meta = store.meta()
        if "gpu_key" not in meta:
            store.set_meta({"gpu_key": self.info.gpu_key, "gpu_types": types})
        elif meta.get("gpu_types", []) != types:
            self.close()
            raise RunError(f"{store.path}: this run was judged on GPU types {meta.get('gpu_types') or 'of one machine'}"
                           f", not {types or 'of one machine'}; use the same --gpu-types or another --db")

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own_executor:
            self.executor.close()
        self.store.close()

    def search(self):  # -> Summary
        from kernelevo.propose.proposer import Proposer
        from kernelevo.propose.tuner import Tuner
        from kernelevo.report import Progress
        from kernelevo.search import Search

        s, ls = self.settings.search, self.settings.llm
        tuner = Tuner(self.seed_source or "", random.Random(s.seed + 1))
        proposer = Proposer(self.problem.source, self.device, self.llm, ls.model or None, ls.strong_model or None,
                            tuner, ls.edit_threshold, calibration=self.info.calibration,
                            max_tokens_cap=ls.max_tokens_cap, chooser=_chooser(ls))
        with Progress(problem=self.problem.name) as progress:
            search = Search(self.store, self.executor, proposer, s, len(self.problem.sizes), list(self.info.stats),
                            on_event=progress, ceilings=self.info.ceilings, strategy_tables=self.settings.strategy,
                            spec=self.spec)
            if self.seed_source is not None:
                search.add_seed(self.seed_source, self.seed_name)
            summary = search.run()
        if self.device == "cuda" and summary.best_id is not None:
            self._profile_finalist(summary.best_id)
        return dataclasses.replace(summary, speed_measured=self.device == "cuda")

    def _profile_finalist(self, cid: int) -> None:
        """Nsight Compute on the best candidate, once, after the search: explanation, not timing."""
        from kernelevo.profile.finalist import ncu_json, profile_finalist

        best = self.store.candidate(cid)
        if best is None or self.store.meta().get("finalist", {}).get("id") == cid:
            return
        size = self.problem.sizes[-1] if self.problem.sizes else {}
        self.store.set_meta({"finalist": {"id": cid, "size": size,
                                          "ncu": ncu_json(profile_finalist(
                                              self.problem, size, best.source,
                                              allow_tf32=self.settings.eval.allow_tf32))}})


def open_run(problem: Problem, device: str, settings: Settings, db: Path, seed_source: str | None,
             seed_name: str, executor: Executor | None = None) -> Run:
    store = Store(db, lock=True)
    try:
        _check_meta(store, problem, device)
        _check_strategy(store, settings.search.strategy)
        return Run(problem, device, settings, store, seed_source, seed_name, executor)
    except BaseException:
        store.close()
        raise
