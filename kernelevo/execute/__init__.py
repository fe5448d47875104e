"""Where evaluations run: this machine's GPUs (or cores), or a Ray cluster's.

``make`` builds the executor the settings ask for; a search only sees the
:class:`~kernelevo.execute.base.Executor` protocol.
"""

from __future__ import annotations

from kernelevo.execute.base import Executor, HostInfo, Judgement, ProblemSpec, WorkerLost
from kernelevo.settings import Settings

EXECUTORS = ("local", "ray")

__all__ = ["EXECUTORS", "Executor", "HostInfo", "Judgement", "ProblemSpec", "WorkerLost", "make"]


def make(settings: Settings, device: str) -> Executor:
    """The run's executor. Raises ValueError (one line) for settings this machine cannot honour."""
    x = settings.execute
    if x.executor not in EXECUTORS:
        raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, got {x.executor!r}")
    if x.workers < 0:
        raise ValueError(f"--workers must be 0 (automatic) or more, got {x.workers}")
    if not x.ready_timeout_s > 0:
        raise ValueError(f"execute.ready_timeout_s must be positive, got {x.ready_timeout_s}")
    if x.executor == "ray":
        from kernelevo.execute.cluster import ClusterError, ray_executor

        try:
            return ray_executor(settings.eval, device, x.address, x.types, x.workers, x.max_retries, x.compile_ahead,
                                x.ready_timeout_s)
        except ClusterError as e:
            raise ValueError(str(e)) from None
    if x.types:
        raise ValueError("--gpu-types needs --executor ray: a machine has one kind of GPU")
    from kernelevo.execute.local import local_executor

    return local_executor(settings.eval, device, x.workers, x.max_retries, x.compile_ahead)
