"""Turning a plan (tier, kind, parent) into a candidate: a model call or a tuner move.

``plan`` runs on the controller's thread and is cheap; ``execute`` may take a minute (a model
call) and runs on a worker thread; it never raises, so a bad reply or a dead server becomes a
recorded failure, not a lost thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kernelevo.evaluate.verdict import Evaluation, Verdict
from kernelevo.propose.llm import LLMClient, LLMError
from kernelevo.propose.parse import ParseError, parse_reply, strip_reasoning
from kernelevo.propose.prompt import Shown, build_messages, device_facts
from kernelevo.propose.tiers import Choice
from kernelevo.propose.tuner import Tuner
from kernelevo.store import CallRecord


@dataclass(frozen=True)
class Plan:
    choice: Choice
    model: str | None  # None for the tuner
    parent: Shown | None
    messages: list[dict[str, str]] = field(default_factory=list)
    source: str | None = None  # a tuner move is made while planning (it is instant)
    note: str | None = None


@dataclass(frozen=True)
class Proposal:
    plan: Plan
    source: str | None  # the candidate module, or the raw reply when it was unusable
    failure: Evaluation | None = None  # set when the reply could not become a candidate
    call: CallRecord | None = None  # None for the tuner
    fatal: str | None = None  # the run must stop (bad key, unknown model)
    fixable: bool = False  # a failure the model can fix from its own code (a syntax error)
    text: str | None = None  # a "plan" reply: the plan itself (no candidate)


def _failure(reason: str, verdict: Verdict, error: str | None = None) -> Evaluation:
    return Evaluation("reply", verdict, reason, device="", error=error)


class Proposer:
    """Plans and executes proposals for one run."""

    def __init__(
        self,
        problem_source: str,
        device: str,
        llm: LLMClient | None,
        cheap_model: str | None,
        strong_model: str | None,
        tuner: Tuner | None,
        edit_threshold: int = 120,
        calibration: Any = None,
        max_tokens_cap: int = 0,
        chooser: Any = None,  # a kernelevo.propose.models.ModelChooser; None: one model per tier
    ):
        self.problem_source = problem_source
        self.device = device
        self.llm = llm
        self.cheap_model = cheap_model
        self.strong_model = strong_model or cheap_model
        self.tuner = tuner
        self.chooser = chooser
        self.rng: Any = None  # the loop's random source, for the chooser (set by Search)
        self.edit_threshold = edit_threshold
        self.facts = device_facts(device, calibration)  # once: it asks the driver
        # Per model: the token limit for its next call, raised after a reply was cut off there.
        self.max_tokens: dict[str, int] = {}
        self.max_tokens_cap = max_tokens_cap

    @property
    def offline(self) -> bool:
        return self.llm is None

    def plan(
        self,
        choice: Choice,
        parent: Shown | None,
        inspirations: Sequence[Shown] = (),
        failures: Sequence[Shown] = (),
        tried: set[str] | None = None,
        guidance: str = "",
    ) -> Plan | None:
        """None when a tuner move was asked for and every neighbour of the parent was tried."""
        if choice.tier == "tuner":
            if self.tuner is None or parent is None:
                return None
            move = self.tuner.propose(parent.source, tried or set())
            if move is None:
                return None
            return Plan(choice, None, parent, source=move[0], note=move[1])
        if self.chooser is not None:
            import random

            model = self.chooser.pick(choice.tier, self.rng or random.Random(0))
        else:
            model = self.strong_model if choice.tier == "strong" else self.cheap_model
        use_edits = parent is not None and parent.source.count("\n") + 1 > self.edit_threshold
        messages = build_messages(choice.kind, self.problem_source, self.facts, parent, inspirations, failures,
                                  use_edits=use_edits, guidance=guidance)
        return Plan(choice, model, parent, messages)

    def execute(self, plan: Plan) -> Proposal:
        if plan.model is None:
            return Proposal(plan, plan.source)
        assert self.llm is not None
        limit = self.max_tokens.get(plan.model)
        try:
            reply = self.llm.complete(plan.model, plan.messages, max_tokens=limit)
        except LLMError as e:
            call = CallRecord(plan.model, plan.choice.tier, plan.choice.kind, 0, 0, 0.0, True, e.latency_s,
                              e.attempts, str(e))
            return Proposal(plan, None, call=call, fatal=str(e) if e.fatal else None)
        except Exception as e:  # a bug in a provider adapter must not kill the run's thread
            call = CallRecord(plan.model, plan.choice.tier, plan.choice.kind, 0, 0, 0.0, True, 0.0, 1,
                              f"{type(e).__name__}: {e}")
            return Proposal(plan, None, call=call)
        call = CallRecord(plan.model, plan.choice.tier, plan.choice.kind, reply.tokens_in, reply.tokens_out,
                          reply.cost_usd, reply.priced, reply.latency_s, reply.attempts)
        if reply.finish_reason == "length":  # a cut reply: never an earlier draft from inside it
            if self.max_tokens_cap > reply.max_tokens:
                self.max_tokens[plan.model] = min(2 * reply.max_tokens, self.max_tokens_cap)
            reason = (f"your reply was cut off at {reply.max_tokens} tokens, the limit; reply with the module only "
                      "(no long explanation)" + (", or with SEARCH/REPLACE edits" if plan.parent else ""))
            return Proposal(plan, reply.text, failure=_failure(reason, Verdict.REJECTED), call=call)
        if plan.choice.kind == "plan":  # prose for another model to implement, not a candidate
            return Proposal(plan, None, call=call, text=strip_reasoning(reply.text).strip())
        parent_source = plan.parent.source if plan.parent else None
        try:
            source = parse_reply(reply.text, parent_source)
        except ParseError as e:
            if e.source is not None:  # a module with a syntax error: a candidate worth a fix prompt
                return Proposal(plan, e.source, failure=_failure(str(e), Verdict.COMPILE_ERROR), call=call,
                                fixable=True)
            return Proposal(plan, reply.text, failure=_failure(str(e), Verdict.REJECTED), call=call)
        except Exception as e:  # noqa: BLE001 - e.g. CPython's spurious SystemError from ast.parse on a thread
            reason = f"the reply could not be read ({type(e).__name__}: {' '.join(str(e).split())[:160]})"
            return Proposal(plan, reply.text, failure=_failure(reason, Verdict.REJECTED), call=call)
        return Proposal(plan, source, call=call)

