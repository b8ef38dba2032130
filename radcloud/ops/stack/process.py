"""Start, identify and stop the stack's server processes.

Each service runs in its own session (so one signal to its process group
reaches bwrap and the ``weed`` under it), with stdout/stderr appended to
its log. Its PID is recorded together with the kernel's start time of
that PID, so a recycled PID is never mistaken for ours: ``down`` signals
only processes whose record still matches.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from radcloud.ops.stack.state import write_private


@dataclasses.dataclass(frozen=True)
class ProcessRecord:
    service: str
    pid: int
    start_time: int
    argv: tuple[str, ...]

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(dataclasses.asdict(self)) + "\n")

    @classmethod
    def load(cls, path: Path) -> "ProcessRecord | None":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(data["service"], int(data["pid"]), int(data["start_time"]), tuple(data["argv"]))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None


def _stat_fields(path: str) -> list[str] | None:
    """The fields of a /proc ``stat`` file after the command name (state first), or None if gone."""
    try:
        raw = Path(path).read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2:].split()


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of ``pid``, or None if gone."""
    fields = _stat_fields(f"/proc/{pid}/stat")
    return (fields[0], int(fields[19])) if fields else None


def _reap(pid: int) -> None:
    # Only our own children can be reaped; anyone else's zombie is init's job.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def is_alive(record: ProcessRecord) -> bool:
    """True while the recorded service (or anything left of its process group) runs.

    A PID whose start time differs is someone else's recycled PID: not ours.
    When the leader has exited (bwrap dies at once on SIGTERM while the
    ``weed`` under it still shuts down), its group lives on, and the kernel
    does not recycle a PID still used as a process-group id.
    """
    stat = _stat(record.pid)
    if stat is not None and stat[0] not in ("Z", "X"):
        return stat[1] == record.start_time
    if stat is not None:
        if stat[1] == record.start_time and _threads_run(record.pid):
            return True
        _reap(record.pid)
    try:
        os.killpg(record.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # killpg also succeeds for a group that holds only a zombie leader that
    # is not our child (another process started the service and has not
    # reaped it): only a member that still runs keeps the service alive.
    return _group_runs(record.pid)


def _threads_run(pid: int) -> bool:
    """True while a thread of ``pid`` still runs though its leader is a zombie.

    A multi-threaded server killed with SIGKILL (Orthanc) shows its leader as a
    zombie while its other threads are still being torn down, and its sockets
    close only when the last one has exited: a start on the same ports then
    found them taken (a fault test, restarting Orthanc at once after a kill).
    """
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    for task in tasks:
        fields = _stat_fields(f"/proc/{pid}/task/{task}/stat")
        if fields and fields[0] not in ("Z", "X"):
            return True
    return False


def _group_runs(pgid: int) -> bool:
    """True if any process of group ``pgid`` is neither a zombie nor dead."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(f"/proc/{entry}/stat")
        if fields and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def spawn(service: str, argv: Sequence[str], *, log_path: Path, env: Mapping[str, str],
          cwd: Path) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {service}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=dict(env), cwd=cwd, start_new_session=True, close_fds=True,
        )
    stat = _stat(proc.pid)
    start_time = stat[1] if stat else 0
    return proc, ProcessRecord(service, proc.pid, start_time, tuple(argv))


def _signal(record: ProcessRecord, sig: int) -> None:
    # start_new_session made the service its own process-group leader.
    try:
        os.killpg(record.pid, sig)
    except ProcessLookupError:
        pass


def stop(records: Iterable[ProcessRecord], *, grace_s: float = 15.0, poll_s: float = 0.05,
         wait_reaped: bool = True) -> list[str]:
    """SIGTERM every live recorded process, wait, SIGKILL whatever remains.

    All are signalled first and waited for together (Orthanc and weed take
    3-5 s each to stop). Returns the services that needed SIGKILL.
    ``wait_reaped``: then wait (bounded) for init to reap their orphaned
    zombies (:func:`_wait_reaped`); a kill that stands for a crash does not.
    """
    live = [r for r in records if is_alive(r)]
    for record in live:
        _signal(record, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while live and time.monotonic() < deadline:
        live = [r for r in live if is_alive(r)]
        if live:
            time.sleep(poll_s)
    killed = []
    for record in live:
        _signal(record, signal.SIGKILL)
        killed.append(record.service)
    deadline = time.monotonic() + 5.0
    while live and time.monotonic() < deadline:
        live = [r for r in live if is_alive(r)]
        if live:
            time.sleep(poll_s)
    if wait_reaped:
        _wait_reaped(records, poll_s)
    return killed


def _wait_reaped(records: Iterable[ProcessRecord], poll_s: float, limit_s: float = 3.0) -> None:
    """Give init a moment to reap the stopped services' orphaned zombies.

    Nothing of them runs any more; this only keeps `ps` clean right after
    `down`. A zombie whose parent never reaps it is not waited for past
    ``limit_s``.
    """
    deadline = time.monotonic() + limit_s
    for record in records:
        while time.monotonic() < deadline:
            _reap(record.pid)  # a zombie that is our own child would otherwise wait out the limit
            try:
                os.killpg(record.pid, 0)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(poll_s)


def tail(path: Path, lines: int = 10) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.rstrip("\n").splitlines()[-lines:])
