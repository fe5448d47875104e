"""The evaluator stage: static checks, an isolated worker per candidate, verdicts and timings."""

from kernelevo.evaluate.verdict import Evaluation, SizeResult, Verdict

__all__ = ["Evaluation", "Evaluator", "SizeResult", "Verdict"]


def __getattr__(name: str):  # the worker imports this package; keep its start-up light
    if name == "Evaluator":
        from kernelevo.evaluate.evaluator import Evaluator

        return Evaluator
    raise AttributeError(name)
