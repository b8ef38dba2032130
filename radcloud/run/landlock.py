"""Landlock: confine a plugin's writes (and TCP) without namespaces.

The sandbox's fallback, when bubblewrap cannot create its namespaces, used to
rely on file permissions alone: uid 65534 can still write every
world-writable place (``/var/tmp``, ``/tmp``), and a parent that cannot drop
privileges runs the plugin as root. Landlock (Linux >= 5.13) lets any
process, root or not, give up rights for itself and its children, so the
fallback restricts the plugin to:

* writes (create, write, truncate, remove, rename in, link, mknod) only
  beneath its writable dirs, ``/dev/shm`` (private to a container, as under
  bubblewrap) and ``/dev/null``-like devices; reads and execs stay open, as
  bubblewrap's read-only root leaves them;
* no TCP bind or connect, unless the descriptor declares network (kernel ABI
  4, Linux 6.7);
* no signals to, and no abstract unix sockets of, processes outside it, e.g.
  the runner (ABI 6, Linux 6.12).

Each feature is used when the kernel has it; :func:`describe` says which.

Why not the ``landlock`` package on PyPI: it is an alpha (1.0.0.dev5) that
covers file-system rules only, and the network and signal scopes matter here.
The kernel interface is three system calls and two structs
(Documentation/userspace-api/landlock.rst); they are all this module wraps.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import os
import platform

_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}  # create_ruleset, add_rule, restrict_self
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# File-system rights (landlock.h), with the ABI that brought each.
WRITE_FILE, REMOVE_DIR, REMOVE_FILE = 1 << 1, 1 << 4, 1 << 5
MAKE_CHAR, MAKE_DIR, MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = (1 << n for n in range(6, 13))
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15  # ABI 2, 3, 5
_FILE_RIGHTS = WRITE_FILE | TRUNCATE | IOCTL_DEV  # the only handled rights a non-directory can hold
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6

WRITABLE_DEVICES = ("/dev/null", "/dev/zero", "/dev/full")
SHARED_MEMORY = "/dev/shm"


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _syscall(number: int, *args: object) -> int:
    result = _libc().syscall(ctypes.c_long(number), *args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


@functools.cache
def abi() -> int:
    """The kernel's Landlock ABI version; 0 when there is none (old kernel,
    Landlock not enabled, an unknown architecture, a seccomp filter)."""
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        return 0
    try:
        return _syscall(numbers[0], None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except OSError:
        return 0


def _write_rights(version: int) -> int:
    rights = (WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_CHAR | MAKE_DIR | MAKE_REG | MAKE_SOCK
              | MAKE_FIFO | MAKE_BLOCK | MAKE_SYM)
    for bit, since in ((REFER, 2), (TRUNCATE, 3), (IOCTL_DEV, 5)):
        if version >= since:
            rights |= bit
    return rights


@dataclasses.dataclass(frozen=True)
class Ruleset:
    """A ruleset built in the parent; :meth:`restrict` applies it in the child."""

    fd: int
    version: int
    network_blocked: bool
    scoped: bool

    def restrict(self) -> None:
        """Enforce on the calling process and what it execs (between fork and exec)."""
        if _libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(NO_NEW_PRIVS): {os.strerror(err)}")
        _syscall(_SYSCALLS[platform.machine()][2], ctypes.c_int(self.fd), ctypes.c_uint32(0))

    def close(self) -> None:
        os.close(self.fd)

    def describe(self) -> str:
        parts = ["writes only in its output and scratch dirs"]
        if self.network_blocked:
            parts.append("no TCP")
        if self.scoped:
            parts.append("no signals outside it")
        return f"Landlock ABI {self.version}: " + ", ".join(parts)


def build(writable: list[str], *, network: bool) -> Ruleset | None:
    """A ruleset allowing writes only beneath ``writable`` (plus /dev/shm and
    the null devices) and, unless ``network``, no TCP. ``None`` when the kernel
    has no Landlock; an ``OSError`` when it has one but a rule cannot be added
    (a writable dir that does not exist)."""
    version = abi()
    if version < 1:
        return None
    fs = _write_rights(version)
    net = (NET_BIND_TCP | NET_CONNECT_TCP) if (version >= 4 and not network) else 0
    scoped = (SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if version >= 6 else 0
    attr = _RulesetAttr(fs, net, scoped)
    create, add_rule, _restrict = _SYSCALLS[platform.machine()]
    fd = _syscall(create, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    try:
        extra = [p for p in (SHARED_MEMORY, *WRITABLE_DEVICES) if os.path.exists(p)]
        for path in [*writable, *extra]:
            target = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                allowed = fs if os.path.isdir(path) else fs & _FILE_RIGHTS
                rule = _PathBeneathAttr(allowed, target)
                _syscall(add_rule, ctypes.c_int(fd), ctypes.c_int(_RULE_PATH_BENEATH),
                         ctypes.byref(rule), ctypes.c_uint32(0))
            finally:
                os.close(target)
    except BaseException:
        os.close(fd)
        raise
    return Ruleset(fd, version, bool(net), bool(scoped))
