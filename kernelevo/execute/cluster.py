"""Evaluation workers as Ray actors, each holding one GPU (or, with ``--device cpu``, one core).

The controller and the model calls stay on the driver; only candidates and evaluations cross
the network. With ``gpu_types`` every candidate is judged on each listed type (Ray's
``accelerator_type`` resources: "H100", "A100", ...), and the run keeps each type's result.
A killed actor or a lost node surfaces as ``RayActorError``: the dispatcher restarts the slot
(Ray places the new actor wherever the resources are) and re-queues the candidate.

Actors start side by side (startup waits for the slowest actor, not for the sum of them), and one
Ray cannot place within ``execute.ready_timeout_s`` is refused in one line rather than waited on.
With GPUs and ``execute.compile_ahead``, each node that holds workers also gets compile actors
(one CPU each, pinned to the node): Triton's and CuPy's caches are per node, so a candidate is
compiled on every such node before a GPU worker there times it.

Ray is an optional extra (``pip install 'kernelevo[ray]'``); kernelevo must be installed on
every node, since actors import it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from kernelevo.candidate import Candidate
from kernelevo.execute.base import HostInfo, HostResult, ProblemSpec, WorkerLost
from kernelevo.execute.dispatch import Dispatcher
from kernelevo.execute.host import Host
from kernelevo.execute.prepare import PrepareSlot, merge_warmed, static_refusal
from kernelevo.settings import ENV_TRITON_INTERPRET, EvalSettings, triton_interpreted

log = logging.getLogger("kernelevo.execute")

READY_TIMEOUT_S = 180.0  # an actor's placement and imports; longer means no node has the resources
MAX_CPU_ACTORS = 8
MAX_COMPILE_ACTORS = 4  # per node: ptxas is single-threaded, and four keep ahead of eight GPUs


class ClusterError(RuntimeError):
    """A cluster that cannot give this run its workers; the message is one line."""


class RayHost:
    """The actor: a :class:`Host` and where it runs."""

    def __init__(self, settings: EvalSettings, name: str):
        import ray

        node = ray.get_runtime_context().get_node_id()[:8]
        self.name = f"ray:{name}:{node}:{os.getpid()}"
        self.host = Host(settings, self.name)

    def ready(self) -> tuple[str, int, str]:
        import ray

        return self.name, os.getpid(), ray.get_runtime_context().get_node_id()

    def info(self, spec: ProblemSpec) -> HostInfo:
        return self.host.info(spec)

    def evaluate(self, spec: ProblemSpec, candidate: Candidate) -> HostResult:
        return self.host.evaluate(spec, candidate)

    def shutdown(self) -> None:
        self.host.close()


class RaySlot:
    """A worker actor. ``launch`` asks Ray for it; ``wait_ready`` waits for its placement and imports,
    so that many slots start side by side."""

    def __init__(self, settings: EvalSettings, name: str, options: dict[str, Any],
                 ready_timeout_s: float = READY_TIMEOUT_S, *, start: bool = True):
        self.settings, self.base, self.options = settings, name, options
        self.ready_timeout_s = ready_timeout_s
        self.name = name
        self.pid: int | None = None
        self.node = ""  # the Ray node id it runs on
        self.actor: Any = None
        self._ready: Any = None
        if start:
            self.launch()
            self.wait_ready()

    def launch(self) -> None:
        import ray

        cls = ray.remote(RayHost)
        self.actor = cls.options(**self.options, max_restarts=0, max_concurrency=1).remote(self.settings, self.base)
        self._ready = self.actor.ready.remote()

    def wait_ready(self, timeout_s: float | None = None) -> None:
        import ray

        timeout = self.ready_timeout_s if timeout_s is None else timeout_s
        try:
            self.name, self.pid, self.node = ray.get(self._ready, timeout=max(0.0, timeout))
        except Exception as e:
            ray.kill(self.actor, no_restart=True)
            why = "Ray could not place it" if type(e).__name__ == "GetTimeoutError" else type(e).__name__
            raise WorkerLost(f"no Ray worker for {self.base} within {self.ready_timeout_s:g} s ({why}; "
                             f"execute.ready_timeout_s)") from e

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
        self.launch()
        self.wait_ready()

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


def _start_all(slots: list[RaySlot], timeout_s: float) -> None:
    """Launch every slot, then wait for them under one deadline: startup costs one actor's time."""
    import time

    for slot in slots:
        slot.launch()
    deadline = time.monotonic() + timeout_s
    for slot in slots:
        slot.wait_ready(deadline - time.monotonic())


class RayPrepare:
    """The compile actor of one node: a :class:`PrepareSlot` whose caches are that node's."""

    def __init__(self, settings: EvalSettings, name: str):
        self.slot = PrepareSlot(settings, name)

    def ready(self) -> str:
        return self.slot.name

    def warm(self, spec: ProblemSpec, candidate: Candidate) -> Any:
        w = self.slot.warm(spec, candidate)
        self.slot.warmed.clear()  # the driver keeps them
        return w

    def shutdown(self) -> None:
        self.slot.close()


class RayPrepareSlot:
    """Static checks on the driver, then the candidate compiled on every node that holds workers,
    side by side. A node whose compile actor is lost is dropped with a warning: its GPUs then
    compile what they judge, as without compiling ahead."""

    def __init__(self, settings: EvalSettings, name: str, nodes: list[str], timeout_s: float = READY_TIMEOUT_S):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from kernelevo.evaluate.warm import WARM_TIMEOUT_S

        self.name = name
        self.warm_timeout_s = WARM_TIMEOUT_S + 30
        self.warmed: list[Any] = []
        cls = ray.remote(RayPrepare)
        actors = {node: cls.options(num_cpus=1, max_restarts=0, max_concurrency=1,
                                    scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                  .remote(settings, f"{name}@{node[:8]}") for node in nodes}
        readies = {node: a.ready.remote() for node, a in actors.items()}
        ray.wait(list(readies.values()), num_returns=len(readies), timeout=timeout_s)
        self.actors: dict[str, Any] = {}
        for node, a in actors.items():
            try:
                ray.get(readies[node], timeout=0)
                self.actors[node] = a
            except Exception as e:  # no free CPU there, or it failed to start: that node compiles when judging
                log.warning("no compile actor on node %s (%s): its workers compile what they judge",
                            node[:8], type(e).__name__)
                ray.kill(a, no_restart=True)

    def check(self, candidate: Candidate) -> Any:
        return static_refusal(candidate)

    def warm(self, spec: ProblemSpec, candidate: Candidate) -> Any:
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        pending = {node: a.warm.remote(spec, candidate) for node, a in self.actors.items()}
        got = []
        for node, ref in pending.items():
            try:
                got.append(ray.get(ref, timeout=self.warm_timeout_s))
            except (RayActorError, ActorUnavailableError) as e:
                log.warning("compile actor on node %s lost (%s): its workers compile what they judge",
                            node[:8], type(e).__name__)
                self.actors.pop(node, None)
        if not got:  # every node's actor is gone (each said so once): the workers compile
            return None
        w = merge_warmed(got)
        self.warmed.append(w)
        return w

    def close(self) -> None:
        import ray

        for a in self.actors.values():
            try:
                ray.get(a.shutdown.remote(), timeout=30)
            except Exception:  # already gone
                pass
            ray.kill(a, no_restart=True)
        self.actors = {}


def ray_executor(settings: EvalSettings, device: str, address: str = "", gpu_types: tuple[str, ...] = (),
                 workers: int = 0, max_retries: int = 3, compile_ahead: bool = True,
                 ready_timeout_s: float = READY_TIMEOUT_S) -> Dispatcher:
    """Actors across the cluster: for each GPU type (or for the whole cluster without types) one
    per GPU, or ``workers`` of them. Refuses, in one line, a type the cluster does not have and
    workers Ray cannot place within ``ready_timeout_s``."""
    ray = connect(address)
    groups: dict[str, list[RaySlot]] = {}
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
        groups[t] = [RaySlot(settings, f"{t or 'w'}-{i}", options, ready_timeout_s, start=False) for i in range(n)]
    slots = [s for group in groups.values() for s in group]
    try:
        _start_all(slots, ready_timeout_s)
    except WorkerLost as e:
        for s in slots:
            s.close()
        raise ClusterError(str(e)) from None
    prepare: list[Any] = []
    if device == "cuda" and compile_ahead:  # on a CPU nothing compiles: the interpreter runs the Python
        nodes = sorted({s.node for s in slots})
        per_node = max(1, min(MAX_COMPILE_ACTORS, min(len(g) for g in groups.values())))
        prepare = [RayPrepareSlot(settings, f"prepare-{i}", nodes, ready_timeout_s) for i in range(per_node)]
        prepare = [p for p in prepare if p.actors]
    return Dispatcher(dict(groups), max_retries, f"ray ({address or 'local cluster'})", prepare)
