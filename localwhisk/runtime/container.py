"""One "container": a launcher subprocess in its own directory and process group.

This module plays the part of OpenWhisk's Go actionloop proxy plus the invoker's
view of it: it stages the code, sends the init line and waits for the ack, feeds
one JSON line per run on stdin, reads the single result line from fd 3 under a
deadline, and collects stdout/stderr up to the log sentinels the launcher writes
(see launcher.py for why the launcher writes them).

All three pipes are read by the calling thread in one poll loop rather than by
reader threads: a warm run then costs no thread hand-offs, and timestamps are
taken when the bytes arrive. Output an action writes between runs (a background
thread) stays in the pipe and is attributed to the next run, as OpenWhisk's log
collection would do.

Faults never raise: they come back as (status, result) pairs with OpenWhisk's
messages, and ``alive`` tells the pool whether the container may be reused.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from localwhisk.runtime import messages as msg
from localwhisk.runtime.memory import Box
from localwhisk.runtime.model import APPLICATION_ERROR, DEVELOPER_ERROR, WHISK_ERROR, ActionCode

log = logging.getLogger(__name__)

LAUNCHER = str(Path(__file__).with_name("launcher.py"))
MEMORY_EXIT = 86  # launcher.py exits with this after a MemoryError
_STREAMS = {1: "stdout", 2: "stderr"}
_SENTINEL = msg.SENTINEL.encode()
_SENTINEL_GRACE_S = 2.0  # logs still in flight after the result line
_READ = 1 << 16
_MAX_LINE = 16 * 1024


@dataclass
class Reply:
    """The outcome of one init or run exchange."""

    status: str | None = None  # None for a good init
    result: dict | list = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)
    timeout: bool = False


def stage_code(workdir: Path, action: ActionCode) -> str | None:
    """Write the action's code as OpenWhisk's compile step leaves it; return an error or None."""
    if not action.code:
        return msg.NO_CODE
    if not action.binary:
        (workdir / "main__.py").write_text(action.code, encoding="utf-8")
        return None
    try:
        raw = base64.b64decode("".join(action.code.split()), validate=True)
    except (binascii.Error, ValueError) as ex:
        return f"The action code is not valid base64: {ex}."
    if not raw:
        return msg.NO_CODE
    if not zipfile.is_zipfile(io.BytesIO(raw)):
        (workdir / "main__.py").write_bytes(raw)  # like the Go proxy: a plain file is the exec
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            zf.extractall(workdir)  # extractall drops absolute and '..' members
    except (zipfile.BadZipFile, OSError, ValueError) as ex:
        return f"The action zip could not be extracted: {ex}."
    entry = workdir / "__main__.py"
    if not entry.is_file():
        return "Zip file does not include __main__.py at its top level, which a Python zip action needs."
    entry.rename(workdir / "main__.py")
    return None


class Container:
    """A launcher process speaking the actionloop protocol; not thread-safe (one run at a time)."""

    def __init__(self, cid: str, workdir: Path, argv: list[str], env: dict[str, str],
                 preload: tuple[str, ...] = (), box: Box | None = None) -> None:
        self.cid = cid
        self.workdir = workdir
        self.box = box or Box()  # its memory cgroup (see memory.py)
        self.label = cid  # the action it runs, once initialised (for logs)
        self.initialized = False
        self.alive = False
        self.last_used = time.monotonic()
        # Our own pipes (not Popen's file objects) so that every fd has one owner.
        r0, w0 = os.pipe()
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        r3, w3 = os.pipe()
        try:
            self._proc = subprocess.Popen(
                self.box.wrap([*argv, str(w3), *([",".join(preload)] if preload else [])]),
                cwd=workdir,
                env=env,
                stdin=r0,
                stdout=w1,
                stderr=w2,
                pass_fds=(w3,),
                start_new_session=True,  # its own process group: a timeout kills everything it forked
            )
        except OSError:
            for fd in (w0, r1, r2, r3):
                os.close(fd)
            self.box.remove()
            raise
        finally:
            for fd in (r0, w1, w2, w3):
                os.close(fd)
        self.box.started(self._proc.pid)
        self.alive = True
        self._fd3 = r3
        self._stdin = w0
        os.set_blocking(w0, False)
        self._fds = {r3: "result", r1: 1, r2: 2}
        self._partial = {1: b"", 2: b""}
        self._logs: list[str] = []
        self._log_bytes = 0
        self._log_limit = 10 * 1024 * 1024
        self._truncated = False
        self._sentinels: set[int] = set()
        self._tainted = False

    @property
    def pid(self) -> int:
        return self._proc.pid

    # -- protocol -------------------------------------------------------------

    def init(self, action: ActionCode, env: dict[str, str], timeout_ms: int,
             memory_bytes: int | None, log_limit: int) -> Reply:
        """Stage the code and initialise the launcher once; a failed init destroys the container.

        ``memory_bytes`` becomes the container's memory limit (its cgroup's), as
        OpenWhisk sizes a container by the action's ``limits.memory``.
        """
        if self.initialized:
            return Reply(DEVELOPER_ERROR, {"error": msg.INIT_TWICE})
        self.initialized = True
        self.label = f"{self.cid} ({action.fqn})"
        self._log_limit = log_limit
        if memory_bytes:
            try:
                self.box.set_limit(memory_bytes)
            except OSError as ex:  # e.g. a stem cell already using more than this action may
                log.error("container %s: cannot set its memory limit to %d MiB: %s", self.label,
                          memory_bytes >> 20, ex)
                self.destroy()
                return Reply(WHISK_ERROR, {"error": msg.RESOURCE_ERROR})
        error = stage_code(self.workdir, action)
        if error:
            self.destroy()
            return Reply(DEVELOPER_ERROR, {"error": error}, self._take_logs())
        line = json.dumps({"init": {"main": action.main, "env": env}})
        deadline = time.monotonic() + timeout_ms / 1000
        reply, length, ended = self._exchange(line.encode() + b"\n", deadline, sentinels=False)
        if ended == "timeout":
            self.destroy()
            return Reply(DEVELOPER_ERROR, {"error": msg.timed_out(timeout_ms, init=True)},
                         self._take_logs(), timeout=True)
        ack = _json_or_none(reply)
        if ended == "exited" or not isinstance(ack, dict):
            self.destroy()
            return Reply(DEVELOPER_ERROR, {"error": msg.INIT_EXITED}, self._take_logs())
        if ack.get("ok") is not True:
            self._drain_logs(time.monotonic() + _SENTINEL_GRACE_S)
            self.destroy()
            return Reply(DEVELOPER_ERROR, {"error": ack.get("error") or msg.INIT_EXITED}, self._take_logs())
        return Reply()

    def run(self, message: dict, timeout_ms: int, log_limit: int) -> Reply:
        """Run once; the reply's status is final (success, application or developer error)."""
        self.last_used = time.monotonic()
        self._log_limit = log_limit
        if not self.alive:
            return Reply(DEVELOPER_ERROR, {"error": msg.COMMAND_EXITED})
        data = json.dumps(message, ensure_ascii=False).replace("\n", "").encode("utf-8") + b"\n"
        deadline = self.last_used + timeout_ms / 1000
        oom_before = self.box.oom_kills()
        per_run = log.isEnabledFor(logging.DEBUG)  # each cgroup file op costs ~25 us of a warm run
        if per_run:
            self.box.reset_peak()
        line, length, ended = self._exchange(data, deadline, sentinels=True)
        if per_run:
            self._log_peak(logging.DEBUG, "run")
        if ended == "timeout":
            log.info("container %s: run exceeded %d ms, killed", self.cid, timeout_ms)
            self.destroy()
            return Reply(DEVELOPER_ERROR, {"error": msg.timed_out(timeout_ms)}, self._take_logs(), True)
        if ended == "exited":
            # Read before destroy() removes the cgroup: was memory why it died?
            oom = self.box.oom_kills() > oom_before
            code = self.destroy()
            log.info("container %s: exited mid-run with code %s%s", self.label, code,
                     " after an OOM kill" if oom else "")
            error = msg.MEMORY_EXHAUSTED if oom or code == MEMORY_EXIT else msg.COMMAND_EXITED
            return Reply(DEVELOPER_ERROR, {"error": error}, self._take_logs())
        self.last_used = time.monotonic()
        if length > msg.MAX_RESULT_BYTES:
            trunk = line[: msg.TRUNK_CHARS].decode("utf-8", "replace")
            return Reply(APPLICATION_ERROR, {"error": msg.truncated_response(length, trunk)},
                         self._take_logs())
        status, result = msg.classify_run(line.decode("utf-8", "replace"))
        logs = self._take_logs()
        if self._tainted:
            log.warning("container %s: the action wrote extra lines to fd 3; retiring it", self.cid)
        if status == DEVELOPER_ERROR or self._tainted:
            # OpenWhisk's ContainerProxy discards a container after a developer error;
            # a container with stray fd-3 output cannot be trusted with the next run.
            self.destroy()
        return Reply(status, result, logs)

    def kill(self) -> None:
        """Kill the process group and its cgroup; safe from another thread (the running one then sees EOF)."""
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.box.kill_all()  # what left the process group (a plugin in its own session)

    def _log_peak(self, level: int, what: str) -> None:
        peak, limit = self.box.peak(), self.box.limit_bytes
        if peak is None:
            return
        if limit and peak >= 0.8 * limit:
            level = max(level, logging.INFO)  # a near miss is worth knowing without -v
        log.log(level, "container %s: %s memory peak %.1f MiB of its %s limit (%s)", self.label, what,
                peak / 2**20, f"{limit >> 20} MiB" if limit else "unset", self.box.kind)

    def destroy(self) -> int | None:
        """Kill the whole process group, close the pipes, remove the directory; returns the exit code.

        Only the thread that owns the container may call this (it closes the fds it polls).
        """
        if self.alive:
            self.alive = False
            self.kill()
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not take 5 s
            code = None
        if self.initialized:
            self._log_peak(logging.DEBUG, "lifetime")
        self.box.remove()
        for fd in list(self._fds):
            self._close(fd)
        if self._stdin >= 0:
            os.close(self._stdin)
            self._stdin = -1
        shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    # -- plumbing -------------------------------------------------------------

    def _exchange(self, data: bytes, deadline: float, sentinels: bool) -> tuple[bytes, int, str]:
        """Write ``data``, read one fd-3 line; returns (line, its length, "ok"|"timeout"|"exited")."""
        poller = select.poll()
        for fd in self._fds:
            poller.register(fd, select.POLLIN)
        pending = memoryview(data)
        if pending:
            poller.register(self._stdin, select.POLLOUT)
        self._sentinels.clear()
        kept, length, got_line = bytearray(), 0, False
        grace_until = None
        while True:
            now = time.monotonic()
            if got_line and (not sentinels or len(self._sentinels) == 2):
                if sentinels and self._fd3 in self._fds and select.select([self._fd3], [], [], 0)[0]:
                    self._tainted = True  # a second fd-3 line, written before the sentinels
                return bytes(kept), length, "ok"
            if got_line and grace_until is not None and now >= grace_until:
                self._add_log(2, msg.LOG_FAILURE.encode())
                return bytes(kept), length, "ok"
            if now >= deadline:
                return bytes(kept), length, "timeout"
            if self._fd3 not in self._fds and not got_line:
                self._drain_logs(time.monotonic() + 0.5)
                return bytes(kept), length, "exited"
            wait = min(deadline, grace_until or deadline) - now
            events = poller.poll(max(1, min(int(wait * 1000) + 1, 250)))
            if not events and self._proc.poll() is not None and not got_line:
                self._drain_logs(time.monotonic() + 0.5)
                return bytes(kept), length, "exited"
            for fd, event in events:
                if fd == self._stdin:
                    try:
                        n = os.write(fd, pending)
                    except BlockingIOError:
                        continue
                    except (BrokenPipeError, OSError):
                        poller.unregister(fd)
                        pending = memoryview(b"")
                        continue
                    pending = pending[n:]
                    if not pending:
                        poller.unregister(fd)
                    continue
                chunk = os.read(fd, _READ)
                if not chunk:
                    poller.unregister(fd)
                    kind = self._fds.get(fd)
                    self._close(fd)
                    if kind in _STREAMS:
                        self._sentinels.add(kind)  # EOF ends that stream's logs too
                    continue
                if fd == self._fd3:
                    if got_line or chunk.find(b"\n") not in (-1, len(chunk) - 1):
                        # More than one line: the action wrote to fd 3 itself. The proxy
                        # takes the first line; the rest would answer the next run.
                        self._tainted = True
                    if got_line:
                        continue
                    end = chunk.find(b"\n")
                    part = chunk if end < 0 else chunk[:end]
                    length += len(part)
                    room = msg.MAX_RESULT_BYTES + 1 - len(kept)
                    if room > 0:
                        kept += part[:room]
                    if end >= 0:
                        got_line = True
                        grace_until = time.monotonic() + _SENTINEL_GRACE_S
                else:
                    self._feed(self._fds[fd], chunk)

    def _drain_logs(self, until: float) -> None:
        """Read stdout/stderr until both sentinels or EOF (used after a failure)."""
        poller = select.poll()
        streams = [fd for fd in self._fds if fd != self._fd3]
        for fd in streams:
            poller.register(fd, select.POLLIN)
        while streams and len(self._sentinels) < 2 and time.monotonic() < until:
            for fd, _ in poller.poll(50):
                chunk = os.read(fd, _READ)
                if chunk:
                    self._feed(self._fds[fd], chunk)
                else:
                    poller.unregister(fd)
                    streams.remove(fd)
                    self._sentinels.add(self._fds[fd])

    def _feed(self, stream: int, chunk: bytes) -> None:
        buf = self._partial[stream] + chunk
        *lines, rest = buf.split(b"\n")
        while len(rest) > _MAX_LINE + len(_SENTINEL):
            # A stream without newlines would grow without bound. The tail kept may be
            # the start of a sentinel.
            lines.append(rest[:_MAX_LINE])
            rest = rest[_MAX_LINE:]
        self._partial[stream] = rest
        for raw in lines:
            if raw.endswith(_SENTINEL):
                raw = raw[: -len(_SENTINEL)]
                self._sentinels.add(stream)
                if not raw:
                    continue
            # Docker's log driver also cuts long lines (at 16 KB).
            for start in range(0, max(len(raw), 1), _MAX_LINE):
                self._add_log(stream, raw[start:start + _MAX_LINE])

    def _add_log(self, stream: int, raw: bytes) -> None:
        if self._truncated:
            return
        self._log_bytes += len(raw)
        if self._log_bytes > self._log_limit:
            self._truncated = True
            return
        text = raw.decode("utf-8", "replace")
        self._logs.append(msg.log_line(time.time_ns(), _STREAMS[stream], text))

    def _take_logs(self) -> list[str]:
        for stream, rest in self._partial.items():
            if rest and not self.alive:  # an unterminated last line of a dead process
                self._add_log(stream, rest)
                self._partial[stream] = b""
        logs = self._logs
        if self._truncated:
            logs.append(msg.log_line(time.time_ns(), "stderr", msg.truncate_logs(self._log_limit)))
        self._logs, self._log_bytes, self._truncated = [], 0, False
        return logs

    def _close(self, fd: int) -> None:
        if self._fds.pop(fd, None) is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def _json_or_none(data: bytes):
    try:
        return json.loads(data)
    except ValueError:
        return None
