"""Evaluation workers as Ray actors, each holding one GPU (or, with ``--device cpu``, one core).

The controller and the model calls stay on the driver; only candidates and evaluations cross
the network. With ``gpu_types`` every candidate is judged on each listed type (Ray's
``accelerator_type`` resources: "H100", "A100", ...), and the run keeps each type's result.
A killed actor or a lost node surfaces as ``RayActorError``: the dispatcher restarts the slot
(Ray places the new actor wherever the resources are) and re-queues the candidate.

Ray is an optional extra (``pip install 'kernelevo[ray]'``); kernelevo must be installed on
every node, since actors import it.
"""

from __future__ import annotations

import os
from typing import Any

from kernelevo.candidate import Candidate
from kernelevo.execute.base import HostInfo, HostResult, ProblemSpec, WorkerLost
from kernelevo.execute.dispatch import Dispatcher
from kernelevo.execute.host import Host
from kernelevo.settings import ENV_TRITON_INTERPRET, EvalSettings, triton_interpreted

READY_TIMEOUT_S = 180.0  # an actor's placement and imports; longer means no node has the resources
MAX_CPU_ACTORS = 8


class ClusterError(RuntimeError):
    """A cluster that cannot give this run its workers; the message is one line."""


class RayHost:
    """The actor: a :class:`Host` and where it runs."""

    def __init__(self, settings: EvalSettings, name: str):
        import ray

        node = ray.get_runtime_context().get_node_id()[:8]
        self.name = f"ray:{name}:{node}:{os.getpid()}"
        self.host = Host(settings, self.name)

    def ready(self) -> tuple[str, int]:
        return self.name, os.getpid()

    def info(self, spec: ProblemSpec) -> HostInfo:
        return self.host.info(spec)

    def evaluate(self, spec: ProblemSpec, candidate: Candidate) -> HostResult:
        return self.host.evaluate(spec, candidate)

    def shutdown(self) -> None:
        self.host.close()


class RaySlot:
    def __init__(self, settings: EvalSettings, name: str, options: dict[str, Any]):
        self.settings, self.base, self.options = settings, name, options
        self.name = name
        self.pid: int | None = None
        self.actor: Any = None
        self._start()

    def _start(self) -> None:
        import ray

        cls = ray.remote(RayHost)
        self.actor = cls.options(**self.options, max_restarts=0, max_concurrency=1).remote(self.settings, self.base)
        try:
            self.name, self.pid = ray.get(self.actor.ready.remote(), timeout=READY_TIMEOUT_S)
        except Exception as e:
            ray.kill(self.actor, no_restart=True)
            raise WorkerLost(f"no Ray worker for {self.base} within {READY_TIMEOUT_S:g} s ({type(e).__name__})") from e

    def _call(self, method: str, *args: Any) -> Any:
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

        try:
            return ray.get(getattr(self.actor, method).remote(*args))
        except (RayActorError, ActorUnavailableError) as e:
            raise WorkerLost(f"{self.name}: {type(e).__name__}") from e
        except RayTaskError as e:  # the host raised: report it as the evaluator's error
            raise RuntimeError(str(e.cause) if e.cause is not None else str(e)) from None

    def info(self, spec: ProblemSpec) -> HostInfo:
        return self._call("info", spec)

    def evaluate(self, spec: ProblemSpec, candidate: Candidate) -> HostResult:
        return self._call("evaluate", spec, candidate)

    def restart(self) -> None:
        import ray

        ray.kill(self.actor, no_restart=True)
        self._start()

    def close(self) -> None:
        import ray

        try:
            ray.get(self.actor.shutdown.remote(), timeout=30)
        except Exception:  # already gone
            pass
        ray.kill(self.actor, no_restart=True)


def connect(address: str) -> Any:
    """Join the cluster at ``address`` ("auto", "ray://host:10001", "host:6379"), or start a local
    one when empty. A driver already connected (tests, notebooks) keeps its connection."""
    try:
        import ray
    except ImportError:
        raise ClusterError("--executor ray needs Ray: pip install 'kernelevo[ray]'") from None
    if not ray.is_initialized():
        _reachable(address)
        env = {ENV_TRITON_INTERPRET: "1"} if triton_interpreted() else {}
        try:
            ray.init(address=address or None, runtime_env={"env_vars": env} if env else None,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ClusterError(f"cannot join the Ray cluster at {address or 'a new local cluster'}: "
                               f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return ray


def _reachable(address: str) -> None:
    """Ray retries an unreachable head for minutes; a head that refuses a connection is said now."""
    import socket

    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local" and the like: Ray resolves them itself
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ClusterError(f"cannot join the Ray cluster at {address}: {e.strerror or type(e).__name__}") from None


def _per_type(ray: Any, device: str, gpu_type: str) -> int:
    """Workers one type can hold: its GPUs (or, on a CPU run, the cores of its nodes)."""
    total = 0
    for node in ray.nodes():
        res = node.get("Resources", {}) if node.get("Alive") else {}
        if gpu_type and f"accelerator_type:{gpu_type}" not in res:
            continue
        total += int(res.get("GPU", 0) if device == "cuda" else res.get("CPU", 0))
    return total if device == "cuda" else min(total, MAX_CPU_ACTORS)


def ray_executor(settings: EvalSettings, device: str, address: str = "", gpu_types: tuple[str, ...] = (),
                 workers: int = 0, max_retries: int = 3) -> Dispatcher:
    """Actors across the cluster: for each GPU type (or for the whole cluster without types) one
    per GPU, or ``workers`` of them. Refuses, in one line, a type the cluster does not have."""
    ray = connect(address)
    groups: dict[str, list[Any]] = {}
    for t in gpu_types or ("",):
        n = _per_type(ray, device, t)
        if n == 0:
            what = f"GPU type {t}" if t else ("GPUs" if device == "cuda" else "CPUs")
            raise ClusterError(f"the Ray cluster has no {what} (its resources: "
                               f"{', '.join(sorted(ray.cluster_resources()))})")
        n = min(n, workers) if workers > 0 else n
        options: dict[str, Any] = {"num_gpus": 1} if device == "cuda" else {"num_cpus": 1}
        if t:
            options["resources"] = {f"accelerator_type:{t}": 0.001}  # Ray's own way of pinning a type
        try:
            groups[t] = [RaySlot(settings, f"{t or 'w'}-{i}", options) for i in range(n)]
        except WorkerLost as e:
            for slots in groups.values():
                for s in slots:
                    s.close()
            raise ClusterError(str(e)) from None
    return Dispatcher(groups, max_retries, f"ray ({address or 'local cluster'})")
