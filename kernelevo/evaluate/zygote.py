"""The warm parent of every candidate worker: imports torch and Triton once, then forks a
fresh child per candidate, so nothing a candidate does survives into the next one and a
new worker costs a fork (~20 ms) instead of an interpreter start and imports (~2 s).

It never initialises CUDA (a forked CUDA context is unusable); each child does its own.
Protocol, one JSON object per line: stdin ``{"op": "fork", "job_dir": ..., "job_file": ..., "secret": hex}``;
stdout ``{"ready": true}`` once, ``{"pid": N}`` per fork, ``{"exit": N, "status": S}`` per
child that ends. It exits, killing its children, when stdin closes.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import traceback
from pathlib import Path


def _emit(obj: dict[str, object]) -> None:
    os.write(1, (json.dumps(obj) + "\n").encode())


def _child(job_dir: str, job_file: str, secret: bytes) -> None:
    code = 70
    try:
        os.setsid()  # its own process group: the controller kills the candidate and all it started
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        log = os.open(os.path.join(job_dir, "log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        from kernelevo.evaluate.worker import run_job

        code = run_job(Path(job_dir), Path(job_file), secret)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main() -> None:
    # Pay the imports once, here; the children inherit them.
    import numpy  # noqa: F401
    import torch  # noqa: F401
    import triton  # noqa: F401
    import triton.language  # noqa: F401

    import kernelevo.evaluate.worker  # noqa: F401  (captures the real clocks before any candidate)
    from kernelevo.reference import OpRecorder

    if os.environ.get("TRITON_INTERPRET") == "1":
        import triton.runtime.interpreter  # noqa: F401
    # The first dispatch-mode trace imports ~1 s of torch internals; pay it here. Two
    # elements stay below ATen's parallel grain, so no OpenMP pool exists when we fork.
    with OpRecorder():
        torch.relu(torch.ones(2))

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the controller decides when we stop
    children: set[int] = set()
    pending = b""
    _emit({"ready": True})
    try:
        while True:
            ready, _, _ = select.select([0], [], [], 0.02)
            while children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                children.discard(pid)
                _emit({"exit": pid, "status": status})
            if not ready:
                continue
            chunk = os.read(0, 65536)
            if not chunk:
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                req = json.loads(line)
                if req.get("op") != "fork":
                    continue
                pid = os.fork()
                if pid == 0:
                    _child(req["job_dir"], req["job_file"], bytes.fromhex(req["secret"]))
                children.add(pid)
                _emit({"pid": pid, "id": req.get("id")})
    finally:
        for pid in children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    main()
