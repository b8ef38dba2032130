"""The fallback memory limiter: resident memory of a container's process tree, polled.

Used where no memory cgroup is writable (see memory.py). A thread sums the RSS
of each watched container's process tree every :data:`WATCH_INTERVAL_S` and
SIGKILLs the whole tree past its limit, counting that as an OOM kill. Coarser
than the kernel: an allocation faster than one poll overshoots until the next,
and the whole container dies rather than its biggest process.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from localwhisk.runtime.memory import Box, _read

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.1


class WatchedBox(Box):
    """A process tree held to its limit by :class:`Watcher` (no cgroup)."""

    kind = "watch"

    def __init__(self, watcher: "Watcher") -> None:
        super().__init__(None)
        self.watcher = watcher
        self.kills = 0
        self.max_rss = 0

    def started(self, pid: int) -> None:
        self.pid = pid
        self.watcher.add(self)

    def oom_kills(self) -> int:
        return self.kills

    def peak(self) -> int | None:
        return self.max_rss or None

    def reset_peak(self) -> None:
        self.max_rss = 0

    def kill_all(self) -> None:
        self.watcher.kill_tree(self)

    def remove(self) -> None:
        self.watcher.discard(self)


class Watcher:
    """The fallback: polls RSS of each watched tree; kills a tree past its limit."""

    def __init__(self, proc: Path = Path("/proc"), interval_s: float = WATCH_INTERVAL_S,
                 page_size: int | None = None, kill: Callable[[int, int], None] = os.kill) -> None:
        self.proc, self.interval_s, self.kill = proc, interval_s, kill
        self.page_size = page_size or os.sysconf("SC_PAGE_SIZE")
        self._boxes: set[WatchedBox] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, box: WatchedBox) -> None:
        with self._lock:
            self._boxes.add(box)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="localwhisk-memwatch", daemon=True)
                self._thread.start()

    def discard(self, box: WatchedBox) -> None:
        with self._lock:
            self._boxes.discard(box)

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()

    def check(self) -> None:
        """One pass: measure every tree, kill those past their limit."""
        with self._lock:
            boxes = [b for b in self._boxes if b.pid is not None]
        if not boxes:
            return
        children = self._children()
        for box in boxes:
            tree = self._tree(box.pid, children)
            rss = sum(self._rss(pid) for pid in tree)
            box.max_rss = max(box.max_rss, rss)
            if box.limit_bytes and rss > box.limit_bytes:
                log.info("pid %s: tree uses %d MiB, limit %d MiB: killed", box.pid, rss >> 20,
                         box.limit_bytes >> 20)
                box.kills += 1
                self._kill(tree)

    def kill_tree(self, box: WatchedBox) -> None:
        if box.pid is not None:
            self._kill(self._tree(box.pid, self._children()))

    def _children(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for entry in self.proc.iterdir() if self.proc.is_dir() else ():
            if not entry.name.isdigit():
                continue
            stat = _read(entry / "stat")
            if not stat:
                continue
            # the command name may hold spaces and parentheses: fields follow the last ')'
            fields = stat.rsplit(")", 1)[-1].split()
            if len(fields) > 1 and fields[1].isdigit():
                out.setdefault(int(fields[1]), []).append(int(entry.name))
        return out

    @staticmethod
    def _tree(root: int, children: dict[int, list[int]]) -> list[int]:
        tree, todo = [], [root]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo += children.get(pid, [])
        return tree

    def _rss(self, pid: int) -> int:
        fields = (_read(self.proc / str(pid) / "statm") or "").split()
        return int(fields[1]) * self.page_size if len(fields) > 1 and fields[1].isdigit() else 0

    def _kill(self, pids: list[int]) -> None:
        for pid in pids:
            try:
                self.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
