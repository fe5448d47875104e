"""The controller's handle on the zygote: fork a worker connected by its own socket, learn when
it ends, kill it.

The zygote starts with a scrubbed environment (no API keys or other credentials), Dynamo
switched off, in its own session; each worker is in a session of its own, so killing its
process group also ends anything the candidate started.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from kernelevo.evaluate.protocol import Channel

# Environment a worker may see. Everything else (API keys, cloud credentials, tokens) stays out.
_ENV_ALLOW = re.compile(
    r"^(PATH|HOME|USER|LOGNAME|LANG|LC_\w+|TZ|PYTHONPATH|PYTHONHASHSEED|VIRTUAL_ENV|"
    r"CONDA_PREFIX|LD_LIBRARY_PATH|CUDA_\w+|NVIDIA_\w+|TRITON_\w+|CUPY_\w+|CC|CXX|XDG_CACHE_HOME|"
    r"OMP_NUM_THREADS|MKL_NUM_THREADS|TORCH_CUDA_ARCH_LIST|TORCHINDUCTOR_CACHE_DIR|TORCH_EXTENSIONS_DIR|PYTORCH_\w+)$"
)
_ENV_DENY = re.compile(r"KEY|TOKEN|SECRET|PASS|CREDENTIAL|AUTH|COOKIE|SESSION", re.IGNORECASE)

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class ZygoteError(RuntimeError):
    pass


def worker_env(device: str, allow_tf32: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if _ENV_ALLOW.match(k) and not _ENV_DENY.search(k)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["TORCH_COMPILE_DISABLE"] = "1"  # torch.compile however reached is plain (poisoned) PyTorch
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    if not allow_tf32:
        env["TRITON_F32_DEFAULT"] = "ieee"  # a plain tl.dot on fp32 is TF32 on GPUs otherwise
    return env


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by {name}"
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return f"ended with wait status {status}"


class Zygote:
    """One warm parent process; ``fork`` gives a fresh worker and a channel to it."""

    def __init__(self, device: str, allow_tf32: bool, start_timeout_s: float = 120.0):
        self._cond = threading.Condition()
        self._exits: dict[int, int] = {}
        self._forked: list[int] = []
        self._ready = False
        self.dead = False
        self._ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._send_lock = threading.Lock()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kernelevo.evaluate.zygote", str(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=worker_env(device, allow_tf32), start_new_session=True, pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        self._start_timeout_s = start_timeout_s
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def wait_ready(self) -> None:
        """Block until the zygote has its imports done (it starts them in the background)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._ready or self.dead, self._start_timeout_s)
        if not ok:
            self.close()
            raise ZygoteError(f"the evaluation worker did not start within {self._start_timeout_s:.0f} s")
        if not self._ready:
            raise ZygoteError("the evaluation worker failed to start (is kernelevo importable?)")

    def _read(self) -> None:
        pending = b""
        while True:
            try:
                chunk = self._ctl.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            pending += chunk
            while b"\n" in pending:
                raw, pending = pending.split(b"\n", 1)
                try:
                    msg = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                with self._cond:
                    if msg.get("ready"):
                        self._ready = True
                    elif "pid" in msg:
                        self._forked.append(int(msg["pid"]))
                    elif "exit" in msg:
                        self._exits[int(msg["exit"])] = int(msg["status"])
                    self._cond.notify_all()
        with self._cond:
            self.dead = True
            self._cond.notify_all()

    def fork(self, role: str, job_dir: Path, timeout_s: float = 30.0) -> tuple[int, Channel]:
        """A new worker in ``role`` ("candidate" or "reference") and a signed channel to it."""
        self.wait_ready()
        key = os.urandom(32)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        req = json.dumps({"op": "fork", "role": role, "job_dir": str(job_dir), "key": key.hex()}) + "\n"
        try:
            with self._send_lock:
                socket.send_fds(self._ctl, [req.encode()], [theirs.fileno()])
        except OSError as e:
            mine.close()
            self.dead = True
            raise ZygoteError("the evaluation worker is gone") from e
        finally:
            theirs.close()
        with self._cond:
            if not self._cond.wait_for(lambda: self._forked or self.dead, timeout_s) or not self._forked:
                mine.close()
                raise ZygoteError("the evaluation worker did not fork")
            return self._forked.pop(0), Channel(mine, key)

    def wait(self, pid: int, timeout_s: float) -> int | None:
        """The worker's wait status once it has ended, or None if it is still running."""
        with self._cond:
            self._cond.wait_for(lambda: pid in self._exits or self.dead, max(timeout_s, 0.0))
            if pid in self._exits:
                return self._exits.pop(pid)
        if self.dead and not _alive(pid):
            return -1  # orphaned when the zygote died; its status is lost
        return None

    def kill(self, pid: int) -> None:
        for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                target()
            except (ProcessLookupError, PermissionError):
                pass
        self.wait(pid, 2.0)

    def close(self) -> None:
        try:
            self._ctl.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._ctl.close()
        if self.proc.poll() is None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.dead = True


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
