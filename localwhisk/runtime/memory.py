"""Memory limits per container, the way OpenWhisk's Docker containers get them.

OpenWhisk starts every action container with ``docker run --memory <limit>m
--memory-swap <limit>m`` (DockerContainerFactory): a memory cgroup holds the
whole container -- every process the action forks -- to its ``limits.memory``;
past it the kernel's OOM killer kills a process in it, and when the action
itself dies the invoker reports the activation as an action developer error,
"The action exhausted its memory and was aborted." (Messages.memoryExhausted).
There is no address-space cap: numpy, OpenBLAS or a JIT may reserve far more
than they ever touch.

localwhisk does the same with one memory cgroup per container, chosen once at
start (:func:`detect`):

* ``cgroup2``: a child of our own cgroup on the unified hierarchy when its
  memory controller is delegated to us: ``memory.max``, ``memory.swap.max``,
  ``memory.events`` (``oom_kill``), ``memory.peak``, ``cgroup.kill``;
* ``cgroup1``: a child of our own cgroup on the v1 ``memory`` hierarchy:
  ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes``, no swap),
  ``memory.oom_control`` (``oom_kill``), ``memory.max_usage_in_bytes``;
* ``watch`` (neither is writable, e.g. an unprivileged container): memwatch.py
  polls the resident memory of each container's process tree and kills the
  whole tree past the limit, counting it as an OOM kill.

Each container's command is started by ``/bin/sh`` joining the cgroup and then
exec'ing it, so bubblewrap and everything the action starts are inside it from
the first byte.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_BASES = itertools.count(1)  # several runtimes in one process get a cgroup each
KINDS = ("auto", "cgroup2", "cgroup1", "watch")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _write(path: Path, value: str) -> None:
    with open(path, "w") as fh:  # one write() per value, as the cgroup files want
        fh.write(value)


def _field(text: str | None, name: str) -> int | None:
    """``name N`` from a flat-keyed file (memory.events, memory.oom_control)."""
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if key == name and value.strip().isdigit():
            return int(value)
    return None


def _int(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


class Box:
    """One container's memory cgroup (or its watched process tree)."""

    kind = "none"

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.limit_bytes: int | None = None
        self.pid: int | None = None

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` started inside this box (unchanged when there is no cgroup to join)."""
        return argv

    def started(self, pid: int) -> None:
        self.pid = pid

    def set_limit(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes

    def oom_kills(self) -> int:
        return 0

    def peak(self) -> int | None:
        return None

    def reset_peak(self) -> None:
        pass

    def kill_all(self) -> None:
        pass

    def remove(self) -> None:
        pass


class _CgroupBox(Box):
    """What v1 and v2 share: a directory, a procs file, killing and removing."""

    def wrap(self, argv: list[str]) -> list[str]:
        # The shell joins the cgroup, then execs the command in its own pid: everything
        # it starts is inside from the first byte. Not a preexec_fn: that forces
        # subprocess to fork() instead of vfork() and costs ~7 ms per start here.
        # If the cgroup cannot be joined, the container does not start at all.
        # (PWD/OLDPWD/SHLVL: what the shell itself would add to the action's environment)
        return ["/bin/sh", "-c", 'echo $$ > "$0" && unset PWD OLDPWD SHLVL && exec "$@"',
                str(self.path / "cgroup.procs"), *argv]

    def pids(self) -> list[int]:
        return [int(p) for p in (_read(self.path / "cgroup.procs") or "").split() if p.isdigit()]

    def kill_all(self) -> None:
        # Processes a plugin started in their own session are not in the launcher's
        # process group, but they are in its cgroup: kill by membership.
        for _ in range(50):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        self.kill_all()
        for _ in range(100):  # the kernel frees the cgroup once its last task is reaped
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)
        log.warning("could not remove cgroup %s", self.path)


class CgroupV2Box(_CgroupBox):
    kind = "cgroup2"

    def set_limit(self, limit_bytes: int) -> None:
        _write(self.path / "memory.max", str(limit_bytes))
        if (self.path / "memory.swap.max").exists():
            _write(self.path / "memory.swap.max", "0")  # --memory-swap = --memory: no swap
        self.limit_bytes = limit_bytes

    def oom_kills(self) -> int:
        return _field(_read(self.path / "memory.events"), "oom_kill") or 0

    def peak(self) -> int | None:
        return _int(_read(self.path / "memory.peak"))  # kernel >= 5.19; since creation

    def kill_all(self) -> None:
        if (self.path / "cgroup.kill").exists():
            try:
                _write(self.path / "cgroup.kill", "1")
            except OSError:
                pass
        super().kill_all()


class CgroupV1Box(_CgroupBox):
    kind = "cgroup1"

    def set_limit(self, limit_bytes: int) -> None:
        limit, memsw = self.path / "memory.limit_in_bytes", self.path / "memory.memsw.limit_in_bytes"
        # limit <= memsw (memory + swap) must hold at every moment: when growing, raise
        # memsw first; otherwise (the first time, from unlimited) the limit first.
        order = [limit, memsw] if memsw.exists() else [limit]
        if self.limit_bytes is not None and limit_bytes > self.limit_bytes:
            order.reverse()
        for path in order:
            _write(path, str(limit_bytes))  # memsw = limit: no swap, as --memory-swap
        self.limit_bytes = limit_bytes

    def oom_kills(self) -> int:
        text = _read(self.path / "memory.oom_control")
        kills = _field(text, "oom_kill")  # kernel >= 4.13
        if kills is None:  # older kernels: hitting the limit is the best sign there is
            kills = _int(_read(self.path / "memory.failcnt")) or 0
        return kills

    def peak(self) -> int | None:
        return _int(_read(self.path / "memory.max_usage_in_bytes"))

    def reset_peak(self) -> None:
        try:
            _write(self.path / "memory.max_usage_in_bytes", "0")
        except OSError:
            pass


class Limiter:
    """Makes one :class:`Box` per container; ``kind`` says which mechanism."""

    def __init__(self, kind: str, base: Path | None = None, box: type[Box] = Box,
                 reason: str = "", watcher: Any = None, mount_point: str | None = None) -> None:
        self.kind, self.base, self._box, self.reason, self.watcher = kind, base, box, reason, watcher
        self.mount_point = mount_point  # where a sandbox shows the container its own cgroup

    def box(self, cid: str) -> Box:
        if self.watcher is not None:
            from localwhisk.runtime.memwatch import WatchedBox

            return WatchedBox(self.watcher)
        if self.base is None:
            return Box()
        path = self.base / cid
        path.mkdir(exist_ok=True)
        return self._box(path)

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self.base is not None:
            for child in sorted(self.base.glob("c*")):
                if child.is_dir():
                    self._box(child).remove()
            try:
                self.base.rmdir()
            except OSError:
                pass


def own_cgroups(proc_self_cgroup: str, mountinfo: str) -> dict[str, tuple[Path, str]]:
    """``{"cgroup2": (dir, mount point), "cgroup1": ...}``: our own memory cgroups.

    ``proc_self_cgroup`` is /proc/self/cgroup's text (``0::/path`` for v2,
    ``N:memory:/path`` for v1), ``mountinfo`` /proc/self/mountinfo's.
    """
    mounts: dict[str, tuple[str, str]] = {}
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        parts, rparts = left.split(), right.split()
        if not sep or len(parts) < 5 or len(rparts) < 3:
            continue
        fstype, options = rparts[0], rparts[2].split(",")
        # the last mount on a point is the visible one (a sandbox binds over it)
        if fstype == "cgroup2":
            mounts["cgroup2"] = (parts[3], parts[4])
        elif fstype == "cgroup" and "memory" in options:
            mounts["cgroup1"] = (parts[3], parts[4])
    found: dict[str, tuple[Path, str]] = {}
    for line in proc_self_cgroup.splitlines():
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        kind = "cgroup2" if hier == "0" and controllers == "" else (
            "cgroup1" if "memory" in controllers.split(",") else None)
        if kind is None or kind not in mounts:
            continue
        root, point = mounts[kind]
        rel = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
        found[kind] = (Path(point) / ("" if rel == "." else rel), point)
    return found


def detect(kind: str = "auto", *, proc: Path = Path("/proc"), name: str | None = None) -> Limiter:
    """The best mechanism that works here (or exactly ``kind``; ValueError if it does not).

    A cgroup works when a child of our own cgroup can be created and given a
    memory limit. ``name``: the base child's name (default ``localwhisk-<pid>-<n>``).
    """
    if kind not in KINDS:
        raise ValueError(f"memory limiter {kind!r} is not one of {', '.join(KINDS)}")
    name = name or f"localwhisk-{os.getpid()}-{next(_BASES)}"
    own = own_cgroups(_read(proc / "self" / "cgroup") or "", _read(proc / "self" / "mountinfo") or "")
    reasons = []
    for candidate, box in (("cgroup2", CgroupV2Box), ("cgroup1", CgroupV1Box)):
        if kind not in ("auto", candidate):
            continue
        if candidate not in own:
            reasons.append(f"{candidate}: no memory hierarchy mounted for this process")
            continue
        own_dir, point = own[candidate]
        try:
            base = _make_base(own_dir, name, candidate)
            # the probe: can we write a limit? (unlimited: the containers below carry theirs)
            _write(base / ("memory.max" if candidate == "cgroup2" else "memory.limit_in_bytes"),
                   "max" if candidate == "cgroup2" else "-1")
        except OSError as ex:
            reasons.append(f"{candidate}: {own_dir} not usable ({ex.strerror or ex})")
            continue
        return Limiter(candidate, base, box, mount_point=point)
    if kind not in ("auto", "watch"):
        raise ValueError(f"memory limiter {kind} does not work here: {'; '.join(reasons)}")
    from localwhisk.runtime.memwatch import Watcher  # memwatch imports this module

    reason = "; ".join(reasons) or "requested"
    return Limiter("watch", reason=reason, watcher=Watcher(proc))


def _make_base(own: Path, name: str, kind: str) -> Path:
    _remove_stale(own)
    if kind == "cgroup2":
        if "memory" not in (_read(own / "cgroup.controllers") or "").split():
            raise OSError(0, "the memory controller is not delegated to this cgroup")
        if "memory" not in (_read(own / "cgroup.subtree_control") or "").split():
            _write(own / "cgroup.subtree_control", "+memory")
    base = own / name
    base.mkdir(exist_ok=True)
    if kind == "cgroup2":
        _write(base / "cgroup.subtree_control", "+memory")
    return base


def _remove_stale(own: Path) -> None:
    """Cgroups left by a localwhisk that was killed (its pid is gone), and what still runs in them.

    A launcher of a killed localwhisk can outlive it (a python kind is not under
    bubblewrap's --die-with-parent); its cgroup says whose it is, so it is killed.
    """
    for base in own.glob("localwhisk-*"):
        match = re.fullmatch(r"localwhisk-(\d+)(-\d+)?", base.name)
        if not match or Path(f"/proc/{match.group(1)}").exists():
            continue
        for child in base.iterdir():
            if child.is_dir():
                _CgroupBox(child).remove()
        try:
            base.rmdir()
        except OSError:
            pass
