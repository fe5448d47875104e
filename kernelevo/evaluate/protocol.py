"""Typed messages between the controller and an evaluation worker, over one socket.

The controller streams a worker its work one step at a time and waits for each answer, so
at any moment the worker's process holds only the current step's inputs: nothing of a
later draw exists there before the call that uses it, and no input or weight is ever in a
file the candidate could open. Each frame is ``length | HMAC-SHA256 | torch.save payload``;
the key is generated per worker and both sides load payloads with ``weights_only=True``
(tensors, numbers, strings and containers; no objects).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import socket
import struct
from dataclasses import dataclass, field, fields
from typing import Any

import torch

_HEADER = struct.Struct("!Q32s")
MAX_FRAME = 1 << 40


class ChannelError(RuntimeError):
    """The other side went away, or sent a frame that fails its signature."""


# -- controller -> worker ----------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """First message: how the worker runs. ``role`` is "candidate" or "reference"."""

    role: str
    device: str
    allow_tf32: bool
    timing: dict[str, Any]
    problem_path: str = ""  # the reference worker loads the problem; a candidate worker never does
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Construct:
    """Build the model for one size: ``ModelNew(*init_inputs)`` (or ``Model`` for the reference).
    ``budget`` is how much PyTorch compute a forward of this size may do (work units)."""

    size: int
    label: str
    init_inputs: tuple[Any, ...]
    budget: float = 0.0
    problem_size: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Load:
    state_dict: dict[str, torch.Tensor]


@dataclass(frozen=True)
class Call:
    """One forward on ``inputs``. Its output is kept by the worker until released; ``pin``
    forces every autotuned kernel onto config number ``pin`` (correctness of each config)."""

    id: int
    inputs: tuple[Any, ...]
    pin: int | None = None


@dataclass(frozen=True)
class Recheck:
    """Send the current values of the kept outputs of these calls (a reused buffer shows here),
    and for timed calls the digest of their inputs as they are now (a timed call that wrote to
    its inputs shows here)."""

    ids: tuple[int, ...]


@dataclass(frozen=True)
class Release:
    ids: tuple[int, ...]


@dataclass(frozen=True)
class GetState:
    """Send the model's state_dict as it is now."""


@dataclass(frozen=True)
class Time:
    """A timing block: ``warmup`` untimed calls then timed ones, one input draw each, given
    in order; every call's output is kept under ``first_id + i``. For a stateful problem
    ``restore`` is loaded before each call."""

    first_id: int
    draws: tuple[tuple[Any, ...], ...]
    warmup: int
    restore: dict[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class Warm:
    """Compile, don't judge: build and call ``ModelNew`` on meta tensors of each size's shapes
    with Triton launches compiling instead of running (kernelevo.evaluate.warm)."""

    sizes: tuple[tuple[tuple[Any, ...], tuple[Any, ...]], ...]


@dataclass(frozen=True)
class Bye:
    pass


# -- worker -> controller ----------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """The candidate was imported (or the reference loaded): its own kernels' names, the most
    configs any of its autotuned kernels has, and what confinement could not be had here."""

    kernels: tuple[str, ...] = ()
    configs: int = 1
    note: str = ""


@dataclass(frozen=True)
class WarmedUp:
    """The launches a Warm compiled, and the sizes it could not run."""

    kernels: tuple[str, ...]
    skipped: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class Done:
    """A step without a result of its own went through."""


@dataclass(frozen=True)
class Failed:
    """The step ended the job: a verdict for the controller to pass on."""

    verdict: str
    reason: str
    tb: str | None = None
    call: int | None = None  # the call it happened in, when it happened in one
    torch_work: float = 0.0
    torch_ops: tuple[str, ...] = ()


@dataclass(frozen=True)
class Output:
    """What one call returned (copied to the CPU right after it) and what the worker saw."""

    id: int
    outputs: tuple[torch.Tensor, ...]
    launches: int
    input_digest: str
    torch_work: float  # PyTorch compute this call did, in work units
    torch_ops: tuple[str, ...]  # which aten ops did it
    poisoned: bool  # some of that compute was over the budget and returned garbage
    dtypes: tuple[str, ...] = ()  # floating dtypes of tensors its own kernels received
    foreign: tuple[str, ...] = ()  # GPU kernels it ran that it did not write (profiler)
    foreign_share: float = 0.0  # their share of the call's GPU time
    configs: tuple[str, ...] = ()  # the autotune configs a pinned call ran


@dataclass(frozen=True)
class Outputs:
    outputs: dict[int, tuple[torch.Tensor, ...]]
    input_digests: dict[int, str] = field(default_factory=dict)  # timed calls whose inputs were kept


@dataclass(frozen=True)
class State:
    state_dict: dict[str, torch.Tensor]


@dataclass(frozen=True)
class Timed:
    """Per timed call: milliseconds. ``extra`` holds device facts (NVML, kernel metadata)."""

    ms: tuple[float, ...]
    launches: int
    graph: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    torch_work: float = 0.0
    poisoned: bool = False
    torch_ops: tuple[str, ...] = ()
    foreign: tuple[str, ...] = ()  # GPU kernels the timed calls ran that neither it nor PyTorch wrote
    foreign_share: float = 0.0
    kernel_ms: tuple[float, ...] = ()  # per timed call on a GPU: its kernels' summed time, every stream


MESSAGES: dict[str, type] = {
    cls.__name__: cls
    for cls in (Setup, Construct, Load, Call, Recheck, Release, GetState, Time, Warm, Bye, WarmedUp,
                Ready, Done, Failed, Output, Outputs, State, Timed)
}


def encode(msg: Any) -> bytes:
    body = {"kind": type(msg).__name__, **{f.name: getattr(msg, f.name) for f in fields(msg)}}
    buf = io.BytesIO()
    torch.save(body, buf)
    return buf.getvalue()


def decode(data: bytes) -> Any:
    body = torch.load(io.BytesIO(data), weights_only=True)
    if not isinstance(body, dict) or body.get("kind") not in MESSAGES:
        raise ChannelError("a message of no known kind")
    cls = MESSAGES[body.pop("kind")]
    known = {f.name for f in fields(cls)}
    kw = {}
    for k, v in body.items():
        if k not in known:
            raise ChannelError(f"{cls.__name__} has no field {k!r}")
        # torch.save keeps tuples as tuples, except inside lists; fields typed as tuples stay tuples
        kw[k] = tuple(v) if isinstance(v, list) and k in _TUPLE_FIELDS else v
    return cls(**kw)


_TUPLE_FIELDS = {"init_inputs", "inputs", "ids", "draws", "outputs", "torch_ops", "kernels", "dtypes", "foreign",
                 "ms", "configs"}


class Channel:
    """Signed frames over a connected stream socket."""

    def __init__(self, sock: socket.socket, key: bytes):
        self.sock = sock
        self.key = key

    def send(self, msg: Any) -> None:
        data = encode(msg)
        mac = hmac.new(self.key, data, hashlib.sha256).digest()
        try:
            self.sock.sendall(_HEADER.pack(len(data), mac) + data)
        except OSError as e:
            raise ChannelError(f"the other side is gone ({e.strerror or e})") from e

    def recv(self, timeout: float | None = None) -> Any:
        """The next message. ``timeout`` (seconds) raises ``TimeoutError`` when nothing whole came."""
        self.sock.settimeout(None if timeout is None else max(timeout, 1e-3))
        n, mac = _HEADER.unpack(self._exactly(_HEADER.size))
        if n > MAX_FRAME:
            raise ChannelError("a frame too large to be one of ours")
        data = self._exactly(n)
        if not hmac.compare_digest(mac, hmac.new(self.key, data, hashlib.sha256).digest()):
            raise ChannelError("a message that fails its signature (tampered with)")
        try:
            return decode(data)
        except ChannelError:
            raise
        except Exception as e:
            raise ChannelError(f"an unreadable message ({type(e).__name__})") from e

    def _exactly(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            try:
                chunk = self.sock.recv(min(n - got, 1 << 22))
            except TimeoutError:
                raise
            except OSError as e:
                raise ChannelError(f"the other side is gone ({e.strerror or e})") from e
            if not chunk:
                raise ChannelError("the other side closed the connection")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
