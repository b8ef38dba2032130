"""Seccomp: no internet sockets for a plugin that did not declare network.

Under bubblewrap a plugin gets a network namespace of its own. The fallback
(:mod:`radcloud.run.sandbox`, inside an action's container, whose network
the runner itself needs for S3 and Redis) cannot do that, and Landlock covers
TCP only: UDP, DNS included, would still carry data out. So a seccomp filter
makes ``socket()`` fail with EACCES for the internet and packet families
(unix sockets stay), and ``io_uring_setup`` with EPERM (io_uring can open
sockets without the ``socket`` system call).

The filter is libseccomp's (through ``pyseccomp``, a ctypes binding with the
API of libseccomp's own Python module). Without libseccomp it is left out,
and the sandbox's description says so.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

FAMILIES = {"AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6, "AF_PACKET": 17}


def filter_or_reason() -> tuple[Any | None, str]:
    """``(filter, "")`` ready to ``load()`` in the child, or ``(None, why not)``."""
    try:
        import pyseccomp as seccomp
    except (ImportError, RuntimeError, OSError) as exc:  # RuntimeError: "Unable to find libseccomp"
        return None, f"no seccomp ({exc})"
    try:
        rules = seccomp.SyscallFilter(seccomp.ALLOW)
        for family in FAMILIES.values():
            rules.add_rule(seccomp.ERRNO(errno.EACCES), "socket", seccomp.Arg(0, seccomp.EQ, family))
        rules.add_rule(seccomp.ERRNO(errno.EPERM), "io_uring_setup")
    except (OSError, RuntimeError, ValueError) as exc:
        return None, f"no seccomp ({exc})"
    return rules, ""
