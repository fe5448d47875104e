"""Landlock, the kernel's own sandbox (unprivileged, inherited by everything the process starts):
a candidate's worker may write only its scratch folder and the compile caches and, on kernels
with Landlock ABI 4 or later, open no TCP connection. Applied once, irreversibly, in the worker
before the candidate is imported; where it is unavailable the worker says so and carries on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2


def confine(writable: Iterable[str | Path]) -> str | None:
    """Confine this process (and what it starts) to writing ``writable`` and, where the kernel
    supports it, to no TCP connections. Returns None, or one line saying what is unprotected."""
    try:
        import landlock as ll
    except ImportError:
        return "Landlock unavailable (the landlock package is not installed): files and network are unconfined"
    try:
        abi = ll.landlock_abi_version()
    except Exception as e:  # noqa: BLE001 - an old kernel or a seccomp filter: say so, carry on
        return f"Landlock unavailable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    try:
        # Every access the kernel knows is handled; reading and executing are granted everywhere,
        # everything else only beneath the writable folders.
        rules = ll.FSAccess.all()
        read = ll.FSAccess.READ_FILE | ll.FSAccess.READ_DIR | ll.FSAccess.EXECUTE
        rs = ll.Ruleset(restrict_rules=rules)
        rs.allow("/", rules=read & rules)
        for path in writable:
            if Path(path).exists():
                rs.allow(str(path), rules=rules)
        rs.apply()
    except Exception as e:  # noqa: BLE001
        return f"Landlock could not be applied ({type(e).__name__}: {e}): files and network are unconfined"
    if abi < 4:
        return f"Landlock ABI {abi} has no network rules: TCP connections are unconfined"
    return _deny_tcp()


def _deny_tcp() -> str | None:
    """A second Landlock layer that handles TCP bind and connect and allows neither. The landlock
    package knows filesystem rules only; this is its network half, by the same syscalls."""
    import ctypes

    class _NetAttr(ctypes.Structure):
        _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64)]

    libc = ctypes.CDLL(None, use_errno=True)
    create, restrict = 444, 446  # landlock_create_ruleset, landlock_restrict_self (same on every arch)
    attr = _NetAttr(0, _NET_BIND_TCP | _NET_CONNECT_TCP)
    fd = libc.syscall(create, ctypes.byref(attr), ctypes.sizeof(attr), 0)
    if fd < 0:
        return f"Landlock network rules failed (errno {ctypes.get_errno()}): TCP connections are unconfined"
    try:
        if libc.syscall(restrict, fd, 0) != 0:
            return f"Landlock network rules failed (errno {ctypes.get_errno()}): TCP connections are unconfined"
    finally:
        os.close(fd)
    return None


def writable_caches(scratch: Path) -> list[Path]:
    """Folders a candidate's process may write: its scratch folder and the compile caches."""
    home = Path(os.environ.get("HOME", "/root"))
    cache = Path(os.environ.get("XDG_CACHE_HOME", home / ".cache"))
    paths = [scratch, Path("/dev"), home / ".triton", cache, home / ".cupy", home / ".nv"]
    for var in ("TRITON_CACHE_DIR", "TRITON_HOME", "CUPY_CACHE_DIR", "TORCH_EXTENSIONS_DIR"):
        if os.environ.get(var):
            paths.append(Path(os.environ[var]))
    for p in paths[2:]:
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass
    return paths


