"""The loop: keep the evaluator busy, keep model calls in flight, stop on budgets, resume exactly.

The controller thread is the only one that touches the archive and the database. Model calls
and the evaluation in flight each run on a daemon thread; the controller waits on whichever
finishes first, records it (one transaction per event), and tops the pipeline up.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Any

from kernelevo import strategies
from kernelevo.archive import behaviour_descriptors, code_descriptors
from kernelevo.candidate import Candidate, detect_language, source_digest
from kernelevo.evaluate.verdict import Evaluation, Verdict, size_speedup
from kernelevo.execute.base import Executor, Judgement, ProblemSpec
from kernelevo.propose.prompt import Shown
from kernelevo.propose.proposer import Plan, Proposal, Proposer
from kernelevo.propose.tiers import Choice
from kernelevo.settings import SearchSettings
from kernelevo.store import CallRecord, Store, StoredCandidate
from kernelevo.strategies.novelty import too_close

STOP_GRACE_S = 30.0  # how long a stopping run waits for model calls already paid for
MAX_FAILED_CALLS = 8  # consecutive failed model calls (after retries) before the run gives up


@dataclass(frozen=True)
class Event:
    """What the display is told after each recorded candidate."""

    candidate: StoredCandidate
    evaluated: int
    budget: int
    best: float | None
    cost_usd: float
    cells: int
    verdicts: dict[str, int]


@dataclass(frozen=True)
class Summary:
    evaluated: int  # candidates judged in the database, earlier invocations included
    budget: int
    stop_reason: str
    best_id: int | None
    best_speedup: float | None
    cost_usd: float
    cells: int
    verdicts: dict[str, int]
    elapsed_s: float
    evaluator_idle: float  # fraction of this invocation's worker time (wall time x workers) not judging
    controller_ms: float  # controller CPU time per proposal (planning, prompts, recording, archive)
    proposals: int  # proposals made in this invocation
    models_failed: bool = False  # the run stopped because its models could not be called
    db: str = ""  # the run database, for the commands the summary prints
    speed_measured: bool = True  # False on a CPU: best_speedup ranks nothing there
    workers: int = 1  # evaluations that ran at once
    lost_workers: int = 0  # workers that died under an evaluation (each re-queued, not lost)


def _spawn(fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """Run ``fn`` on a daemon thread. Not a ThreadPoolExecutor: its exit hook joins every worker,
    so a model call stuck for minutes would hold up Ctrl-C and the end of a stopped run."""
    fut: Future[Any] = Future()

    def target() -> None:
        if fut.set_running_or_notify_cancel():
            try:
                fut.set_result(fn(*args))
            except BaseException as e:  # handed to the controller, which records it
                fut.set_exception(e)

    threading.Thread(target=target, daemon=True, name=f"kernelevo-{getattr(fn, '__name__', 'task')}").start()
    return fut


class _Inline:
    """A plain ``evaluate(candidate)`` function as a one-worker executor (tests, the tuner)."""

    slots = 1
    run_notes: tuple[str, ...] = ()

    def __init__(self, fn: Callable[[Candidate], Evaluation]):
        self.fn = fn

    def submit(self, spec: ProblemSpec | None, candidate: Candidate) -> Future[Judgement]:
        def judge() -> Judgement:
            ev = self.fn(candidate)
            return Judgement(ev, (("", ev),), ("local",), ("",), 1)
        return _spawn(judge)


def _strategy_state(store: Store) -> dict[str, Any] | None:
    """The strategy's saved state; a run made before strategies were plug-ins kept the archive's
    and the tiers' state under their own keys."""
    saved = store.state("strategy")
    if saved:
        return saved["state"]
    if store.state("archive"):
        return {"archive": store.state("archive"), "tiers": store.state("tiers")}
    return None


def _shown(c: StoredCandidate) -> Shown:
    return Shown(c.id, c.source, c.evaluation, c.cell, c.note)


class Search:
    def __init__(
        self,
        store: Store,
        evaluate: Callable[[Candidate], Evaluation] | Executor,
        proposer: Proposer,
        settings: SearchSettings,
        n_sizes: int,
        stats: list[tuple[float, float]] | None = None,
        on_event: Callable[[Event], None] | None = None,
        ceilings: tuple[float, float] | None = None,
        strategy_tables: dict[str, dict[str, Any]] | None = None,
        spec: ProblemSpec | None = None,
    ):
        self.store = store
        self.executor: Any = evaluate if hasattr(evaluate, "submit") else _Inline(evaluate)  # type: ignore[arg-type]
        self.spec = spec  # the problem, as the executor's workers rebuild it
        self.proposer = proposer
        self.s = settings
        self.stats = stats
        self.ceilings = ceilings  # (bytes/s, FLOP/s) of this GPU's calibration: the roofline descriptor
        self.on_event = on_event or (lambda e: None)
        tune_share = 0.1 if proposer.tuner is not None and not proposer.offline else 0.0
        self.strategy = strategies.make(settings.strategy, settings, n_sizes, _strategy_state(store),
                                        strategy_tables, tune_share=tune_share)
        self.rng = random.Random(settings.seed)
        proposer.rng = self.rng
        if proposer.chooser is not None:
            proposer.chooser.load(store.state("models"))
        rng_state = store.state("rng")
        if rng_state:
            self.rng.setstate((rng_state[0], tuple(rng_state[1]), rng_state[2]))
        self._controller_s = 0.0
        self._proposals = 0

    # -- state ------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        state = {"strategy": {"name": self.strategy.name, "state": self.strategy.to_dict()}, "rng": self.rng.getstate()}
        if self.proposer.chooser is not None:
            state["models"] = self.proposer.chooser.to_dict()
        return state

    def add_seed(self, source: str, name: str) -> int | None:
        """The seed kernel is candidate #1 of a new run; a resumed run already has it."""
        if self.store.has_candidates():
            return None
        return self.store.add_candidate(Candidate(source, name, detect_language(source)), "seed",
                                        source_digest(source), note=name)

    # -- planning ---------------------------------------------------------------------------
    def _plan(self) -> Plan | None:
        seed = self.store.seed()
        failures = [c for c in self.store.recent_failures(6) if c.note != "unusable reply"]
        if self.proposer.offline:  # the tuner walks the strategy's elites and the seed
            return self._plan_tuner(seed)
        ctx = strategies.Context(self.store.count_done(), seed.id if seed else None, tuple(c.id for c in failures),
                                 can_tune=self.proposer.tuner is not None, offline=self.proposer.offline)
        ask = self.strategy.sample(self.rng, ctx)
        parent = self.store.candidate(ask.parent) if ask.parent is not None else None
        inspirations = [c for i in ask.inspirations if (c := self.store.candidate(i)) is not None]
        shown_failures = [c for i in ask.failures if (c := self.store.candidate(i)) is not None]
        choice = Choice(ask.tier, ask.kind)
        plan = self.proposer.plan(choice, _shown(parent) if parent else None, [_shown(c) for c in inspirations],
                                  [_shown(c) for c in shown_failures],
                                  tried=self.store.digests() if choice.tier == "tuner" else None, guidance=ask.note)
        if plan is None and choice.tier == "tuner":  # this elite is tuned out; ask a model instead
            plan = self.proposer.plan(Choice("cheap", "improve"), _shown(parent) if parent else None,
                                      [_shown(c) for c in inspirations])
        return plan

    def _plan_tuner(self, seed: StoredCandidate | None) -> Plan | None:
        tried = self.store.digests()
        parents = [c for i in self.strategy.tuner_parents(self.rng) if (c := self.store.candidate(i))]
        if seed is not None:
            parents.append(seed)
        for p in parents:
            plan = self.proposer.plan(Choice("tuner", "tune"), _shown(p), tried=tried)
            if plan is not None:
                return plan
        return None

    # -- recording --------------------------------------------------------------------------
    def _record_proposal(self, prop: Proposal) -> StoredCandidate | None:
        """The call, and the candidate it produced: ``pending``, or already judged when the reply
        was unusable or a duplicate. None when the call produced no candidate."""
        call_id = self.store.add_call(prop.call) if prop.call else None
        if prop.text is not None:  # a plan, for a strategy that plans (Autocomp): no candidate
            planned = getattr(self.strategy, "planned", None)
            if planned is not None and prop.text:
                planned(prop.plan.parent.id if prop.plan.parent else None, prop.text,
                        prop.call.cost_usd if prop.call else 0.0)
                self.store.save_state(self._state())
            return None
        if prop.source is None:
            return None
        parent_id = prop.plan.parent.id if prop.plan.parent else None
        cand = Candidate(prop.source, "proposal", detect_language(prop.source), parent_id,
                         prop.plan.model, prop.plan.choice.kind)
        digest = source_digest(prop.source)
        note, judged = prop.plan.note, prop.failure
        if judged is not None:
            note = "syntax error" if prop.fixable else "unusable reply"
        elif (twin := self.store.find_digest(digest)) is not None:
            judged = Evaluation("proposal", Verdict.REJECTED, f"identical to candidate #{twin}, which was already "
                                "evaluated; change something", device="")
        elif prop.plan.model is not None and (close := too_close(prop.source, self.store.correct_sources(),
                                                                 self.s.novelty)) is not None:
            judged = Evaluation("proposal", Verdict.REJECTED, close.reason(), device="")
            note = "not novel"
        origin = "tuner" if prop.plan.model is None else "llm"
        cost = prop.call.cost_usd if prop.call else 0.0

        def told(cid: int) -> dict[str, Any]:  # a failure judged before the evaluator: the strategy learns it too
            assert judged is not None
            if self.proposer.chooser is not None:
                self.proposer.chooser.reward(cand.model, 0.0, cost)
            self.strategy.add(strategies.Judged(cid, parent_id, prop.source or "", cand.language, judged,
                                                cand.model, cand.prompt_kind, cost, self.store.count_done(),
                                                None, (), None, None))  # already counted: done in this transaction
            return self._state()
        return self.store.candidate(self.store.add_candidate(cand, origin, digest, call_id, note, judged,
                                                             told if judged is not None else None))

    def _record_evaluation(self, cand: StoredCandidate, ev: Evaluation,
                           per_type: tuple[tuple[str, str, str, Evaluation], ...] = ()) -> None:
        fitness, speedups = ev.speedup, tuple(size_speedup(s) or 0.0 for s in ev.sizes)
        if ev.ok and fitness is None and ev.timing == "cpu-interpreter":
            # No speed on a CPU: every correct candidate ranks the same (the first in a cell keeps it);
            # the archive still spreads the search over kinds of kernels.
            fitness, speedups = 1.0, tuple(1.0 for _ in ev.sizes)
        correct = bool(ev.ok and fitness and fitness > 0)
        self._reward(cand, fitness if correct else None, ev)
        added = self.strategy.add(strategies.Judged(
            cand.id, cand.parent_id, cand.source, cand.language, ev, cand.model, cand.prompt_kind,
            self.store.candidate_cost(cand.id), self.store.count_done() + 1, fitness if correct else None,
            speedups if correct else (), code_descriptors(cand.source, cand.language) if correct else None,
            behaviour_descriptors(ev.sizes, self.stats, self.ceilings, ev.hybrid) if correct else None))
        self.store.record_evaluation(cand.id, ev, added.cell, self._state(), per_type)

    def _reward(self, cand: StoredCandidate, fitness: float | None, ev: Evaluation) -> None:
        """Tell the model chooser what a model's candidate brought: its speedup over its parent
        (on a CPU, where no speed is measured, 1 for a correct candidate), per dollar of its call."""
        chooser = self.proposer.chooser
        if chooser is None or cand.model is None:
            return
        gain = 0.0
        if fitness is not None:
            parent = self.store.candidate(cand.parent_id) if cand.parent_id is not None else None
            base = parent.speedup if parent is not None and parent.verdict == "correct" else None
            gain = 1.0 if ev.timing == "cpu-interpreter" or not base else max(0.0, fitness / base - 1.0)
        chooser.reward(cand.model, gain, self.store.candidate_cost(cand.id))

    def _event(self, cid: int) -> None:
        best = self.strategy.best
        c = self.store.candidate(cid)
        assert c is not None
        self.on_event(Event(c, self.store.count_done(), self.s.budget, best[1] if best else None,
                            self.store.cost_usd(), self.strategy.coverage, self.store.verdict_counts()))

    # -- the loop -----------------------------------------------------------------------------
    def _stop_reason(self, start: float) -> str | None:
        if self.store.count_done() >= self.s.budget:
            return f"budget of {self.s.budget} evaluations reached"
        if self.s.max_cost_usd > 0 and self.store.cost_usd() >= self.s.max_cost_usd:
            return f"cost limit ${self.s.max_cost_usd:g} reached"
        if self.s.max_time_s > 0 and time.monotonic() - start >= self.s.max_time_s:
            return f"time limit {self.s.max_time_s:g} s reached"
        return None

    def run(self) -> Summary:
        start = time.monotonic()
        pending: deque[StoredCandidate] = deque(self.store.candidates("pending"))
        calls: dict[Future[Proposal], Plan] = {}
        evaluating: dict[Future[Judgement], tuple[StoredCandidate, float]] = {}
        slots = max(1, int(self.executor.slots))  # candidates in flight (compiling ahead included)
        workers = max(1, int(getattr(self.executor, "workers", slots)))
        busy_before = getattr(self.executor, "busy_s", None)
        busy_s = 0.0
        stop: str | None = None
        models_failed = False
        exhausted = False
        failed_calls = 0
        while True:
            t0 = time.thread_time()
            stop = stop or self._stop_reason(start)
            while len(evaluating) < slots and pending and stop is None:
                cand = pending.popleft()
                evaluating[self.executor.submit(self.spec, cand.as_candidate())] = (cand, time.monotonic())
            in_pipeline = len(calls) + len(pending) + len(evaluating)
            # Enough model calls in flight to keep every worker fed, however few the settings ask for.
            concurrency = max(self.s.concurrency, slots)
            while (stop is None and not exhausted and len(calls) < concurrency
                   and len(pending) < max(slots, concurrency)
                   and self.store.count_done() + in_pipeline < self.s.budget):
                plan = self._plan()
                self._proposals += 1
                if plan is None:
                    exhausted = True
                    break
                if plan.model is None:  # a tuner move: instant, no thread
                    c = self._record_proposal(self.proposer.execute(plan))
                    if c is not None and c.status == "pending":
                        pending.append(c)
                else:
                    calls[_spawn(self.proposer.execute, plan)] = plan
                in_pipeline += 1
            self._controller_s += time.thread_time() - t0
            if len(evaluating) < slots and pending and stop is None:
                continue
            if not evaluating and not calls:
                if stop is None:
                    stop = ("the tuner tried every neighbour of every elite" if self.proposer.offline
                            else "no more proposals could be made")
                break
            waitables: set[Future[Any]] = set(calls) | set(evaluating)
            done, _ = wait(waitables, timeout=1.0, return_when=FIRST_COMPLETED)
            t0 = time.thread_time()
            for fut in [f for f in calls if f in done]:
                del calls[fut]
                prop = fut.result()
                if prop.fatal:
                    stop = stop or f"model error: {prop.fatal}"
                    models_failed = True
                failed_calls = failed_calls + 1 if prop.call and prop.call.error else 0
                if failed_calls >= MAX_FAILED_CALLS and stop is None:
                    stop = f"{failed_calls} model calls in a row failed; last: {prop.call.error}"
                    models_failed = True
                c = self._record_proposal(prop)
                if c is not None and c.status == "pending":
                    pending.append(c)
                elif c is not None:
                    self._event(c.id)
            for fut in [f for f in evaluating if f in done]:
                cand, t_start = evaluating.pop(fut)
                busy_s += time.monotonic() - t_start
                per_type: tuple[tuple[str, str, str, Evaluation], ...] = ()
                try:
                    j = fut.result()
                    ev = j.evaluation
                    if len(j.per_type) > 1:
                        per_type = tuple((t, w, k, e) for (t, e), w, k in zip(j.per_type, j.workers, j.gpu_keys,
                                                                               strict=True))
                except Exception as e:  # the evaluator itself failed: record, never lose the run
                    ev = Evaluation(cand.as_candidate().name, Verdict.CRASH, f"evaluator error: {e}", "")
                self._record_evaluation(cand, ev, per_type)
                self._event(cand.id)
            self._controller_s += time.thread_time() - t0
            if stop is not None and not evaluating:
                self._drain(calls)
                break
        elapsed = time.monotonic() - start
        if busy_before is not None:  # the workers' own clock: queueing and compiling ahead are not judging
            busy_s = self.executor.busy_s - busy_before
        best = self.strategy.best
        return Summary(
            self.store.count_done(), self.s.budget, stop or "done", best[0] if best else None,
            best[1] if best else None, self.store.cost_usd(), self.strategy.coverage, self.store.verdict_counts(),
            round(elapsed, 3), round(max(0.0, 1 - busy_s / (elapsed * workers)), 4) if elapsed > 0 else 0.0,
            round(1000 * self._controller_s / max(1, self._proposals), 3), self._proposals, models_failed,
            workers=workers, lost_workers=int(getattr(self.executor, "lost", 0)),
        )

    def _drain(self, calls: dict[Future[Proposal], Plan]) -> None:
        """Model calls already made are paid for: record them (their candidates stay pending for a
        resumed run) rather than drop their cost. Calls still out after the grace period are
        recorded with the prompt's tokens and cost, the least they will be billed."""
        if not calls:
            return
        done, not_done = wait(calls, timeout=STOP_GRACE_S)
        for fut in done:
            self._record_proposal(fut.result())
        llm = self.proposer.llm
        for fut in not_done:
            fut.cancel()
            plan = calls[fut]
            if llm is None or plan.model is None:
                continue
            tokens = llm.count_tokens(plan.model, plan.messages)
            cost, priced = llm.cost(plan.model, tokens, 0)
            self.store.add_call(CallRecord(plan.model, plan.choice.tier, plan.choice.kind, tokens, 0, cost, priced,
                                           STOP_GRACE_S, 1, "abandoned when the run stopped: prompt tokens only"))
