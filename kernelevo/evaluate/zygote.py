"""The warm parent of every worker: imports torch and Triton once, installs the compute
poison, then forks a fresh child per job, so nothing a candidate does survives into the next
one and a new worker costs a fork (~20 ms) instead of an interpreter start and imports (~3 s).

It never initialises CUDA (a forked CUDA context is unusable); each child does its own.
Protocol on the control socket (fd in argv), one JSON object per line: requests
``{"op": "fork", "role": "candidate"|"reference", "job_dir": ..., "key": hex}`` carry the
job's socket as an ancillary file descriptor; replies are ``{"ready": true}`` once,
``{"pid": N}`` per fork and ``{"exit": N, "status": S}`` per child that ends. It exits,
killing its children, when the controller closes the socket.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import traceback
from pathlib import Path
from typing import Any


def _emit(ctl: socket.socket, obj: dict[str, object]) -> None:
    ctl.sendall((json.dumps(obj) + "\n").encode())


def _child(ctl: socket.socket, job_fd: int, req: dict[str, Any], pois: Any) -> None:
    code = 70
    try:
        ctl.close()  # the candidate must not be able to ask the zygote for anything
        os.setsid()  # its own process group: the controller kills the worker and all it started
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        job_dir = req["job_dir"]
        log = os.open(os.path.join(job_dir, "log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        from kernelevo.evaluate.worker import serve

        sock = socket.socket(fileno=job_fd)
        code = serve(sock, bytes.fromhex(req["key"]), Path(job_dir), req["role"], pois)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main() -> None:
    ctl = socket.socket(fileno=int(sys.argv[1]))
    # Pay the imports once, here; the children inherit them.
    import numpy  # noqa: F401
    import torch
    import triton  # noqa: F401
    import triton.language  # noqa: F401
    import triton.runtime.autotuner  # noqa: F401

    import kernelevo.evaluate.worker  # noqa: F401  (captures the real clocks before any candidate)
    import kernelevo.profile.gpu  # noqa: F401
    import kernelevo.profile.triton_meta  # noqa: F401
    from kernelevo.evaluate import poison
    from kernelevo.work import WorkRecorder

    if os.environ.get("TRITON_INTERPRET") == "1":
        import triton.runtime.interpreter  # noqa: F401
    # The first dispatch-mode trace imports ~1 s of torch internals; pay it here. Two
    # elements stay below ATen's parallel grain, so no OpenMP pool exists when we fork.
    with WorkRecorder():
        torch.relu(torch.ones(2)).sum()
    import torch.utils.flop_counter  # noqa: F401

    if os.environ.get("TRITON_INTERPRET") != "1":
        # Starting torch.profiler imports Inductor (and Dynamo, which replaces torch.manual_seed):
        # in a candidate's worker that would read as the candidate patching torch. Import them here.
        import torch._dynamo  # noqa: F401
        import torch._inductor  # noqa: F401

    pois = poison.install()  # every child starts poisoned; reference workers take it out

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the controller decides when we stop
    children: set[int] = set()
    pending = b""
    _emit(ctl, {"ready": True})
    try:
        while True:
            ready, _, _ = select.select([ctl], [], [], 0.02)
            while children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                children.discard(pid)
                _emit(ctl, {"exit": pid, "status": status})
            if not ready:
                continue
            chunk, fds, _, _ = socket.recv_fds(ctl, 65536, 4)
            if not chunk:
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                req = json.loads(line)
                if req.get("op") != "fork" or not fds:
                    continue
                job_fd = fds.pop(0)
                pid = os.fork()
                if pid == 0:
                    _child(ctl, job_fd, req, pois)
                os.close(job_fd)
                children.add(pid)
                _emit(ctl, {"pid": pid})
    finally:
        for pid in children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    main()
