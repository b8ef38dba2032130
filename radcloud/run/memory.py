"""The memory of the container this action runs in, read from its cgroup.

OpenWhisk bounds an action by its container's memory cgroup (``docker run
--memory``), and so does localwhisk; a plugin the shard runner starts is in
the same cgroup, so the action's ``memorySize`` bounds runner and plugin
together. When the kernel's OOM killer acts, it counts the kill in the
cgroup (``oom_kill`` in ``memory.events`` on cgroup v2, in
``memory.oom_control`` on v1). The shard runner compares that count before
and after a plugin run: a plugin that died of SIGKILL is reported as out of
memory only when the count moved.

Found as a Docker container (and localwhisk's sandbox) shows it: the cgroup
named in ``/proc/self/cgroup`` under the mount point of its hierarchy, or the
mount point itself when the container's own cgroup is mounted there.
Read-only; every value is ``None`` where it cannot be read (no cgroup, an
old kernel): callers then say they cannot tell.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

UNLIMITED = 1 << 62  # cgroup v1 shows "no limit" as a page-rounded 2**63 - 1


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


def _field(text: str | None, name: str) -> int | None:
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if key == name and value.strip().isdigit():
            return int(value)
    return None


@dataclasses.dataclass(frozen=True)
class ContainerMemory:
    """One memory cgroup: ``version`` 2 or 1, or 0 with ``path`` None (not found)."""

    path: Path | None
    version: int

    def _file(self, v2: str, v1: str) -> str | None:
        if self.path is None:
            return None
        return _read(self.path / (v2 if self.version == 2 else v1))

    def limit(self) -> int | None:
        """The memory limit in bytes, None when unlimited or unknown."""
        value = _int(self._file("memory.max", "memory.limit_in_bytes"))  # v2 "max" -> None
        return value if value is not None and value < UNLIMITED else None

    def usage(self) -> int | None:
        return _int(self._file("memory.current", "memory.usage_in_bytes"))

    def peak(self) -> int | None:
        """The highest usage the cgroup has seen (v2: since creation; v1: since its last reset)."""
        return _int(self._file("memory.peak", "memory.max_usage_in_bytes"))

    def oom_kills(self) -> int | None:
        """How many processes the OOM killer killed in this cgroup (None: cannot tell)."""
        if self.version == 2:
            return _field(self._file("memory.events", ""), "oom_kill")
        kills = _field(self._file("", "memory.oom_control"), "oom_kill")
        if kills is None and self.path is not None:  # kernels before 4.13: limit hits instead
            kills = _int(self._file("", "memory.failcnt"))
        return kills


NOT_FOUND = ContainerMemory(None, 0)


def find(proc: Path = Path("/proc")) -> ContainerMemory:
    """This process's memory cgroup; ``NOT_FOUND`` when there is none to read."""
    mounts: dict[int, tuple[str, str]] = {}
    for line in (_read(proc / "self" / "mountinfo") or "").splitlines():
        left, sep, right = line.partition(" - ")
        parts, rparts = left.split(), right.split()
        if not sep or len(parts) < 5 or len(rparts) < 3:
            continue
        if rparts[0] == "cgroup2":
            mounts[2] = (parts[3], parts[4])  # the last mount on a point is the visible one
        elif rparts[0] == "cgroup" and "memory" in rparts[2].split(","):
            mounts[1] = (parts[3], parts[4])
    for line in (_read(proc / "self" / "cgroup") or "").splitlines():
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        version = 2 if hier == "0" and not controllers else 1 if "memory" in controllers.split(",") else 0
        if version == 0 or version not in mounts:
            continue
        root, point = mounts[version]
        if version == 2 and 1 in mounts:
            continue  # hybrid layout: memory is on the v1 hierarchy
        rel = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
        for candidate in (Path(point) / rel, Path(point)):
            probe = "memory.max" if version == 2 else "memory.limit_in_bytes"
            if (candidate / probe).exists():
                return ContainerMemory(candidate.resolve(), version)
    return NOT_FOUND
