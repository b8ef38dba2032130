"""The unit tier is in-process: this guard makes that a checked fact.

Every test under tests/unit runs with socket ``connect``/``bind`` and child
processes (``subprocess.Popen`` and everything built on it) refused, so
``make test-fast`` needs no service, no port and no sandbox, and a test that
starts needing one fails here with where it belongs instead of quietly making
the fast tier slow. Fakes are passed to constructors; a test that needs a real
Redis, a plugin subprocess or the bubblewrap sandbox lives in
tests/integration/local/ (or tests/integration/plugins/, .../localwhisk/).

Only the test's own threads are refused: a thread that was alive before the
test started (a session fixture's background work when tiers are mixed in one
pytest run, e.g. the e2e world stopping its services) passes through, so the
guard never leaves another tier's services running.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading

import pytest

_WHERE = "use a fake, or move the test to tests/integration/local/"


class UnitTierViolation(AssertionError):
    """A unit test reached outside the process."""


@pytest.fixture(autouse=True)
def _in_process_only(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    test = request.node.nodeid
    others = {t for t in threading.enumerate() if t is not threading.current_thread()}

    def guarded(original, refuse):
        def call(*args, **kwargs):
            if threading.current_thread() in others:
                return original(*args, **kwargs)
            refuse(*args)
        return call

    def no_socket(self, address=None, *args):
        raise UnitTierViolation(f"{test}: opened a socket to {address!r} in the unit tier: {_WHERE}")

    def no_process(self, args=None, *rest):
        raise UnitTierViolation(f"{test}: started a process {args!r} in the unit tier: {_WHERE}")

    def no_spawn(*args):
        raise UnitTierViolation(f"{test}: started a process {args[:2]!r} in the unit tier: {_WHERE}")

    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, guarded(getattr(socket.socket, name), no_socket))
    monkeypatch.setattr(subprocess.Popen, "__init__", guarded(subprocess.Popen.__init__, no_process))
    # What does not go through Popen: os.system, fork (multiprocessing), posix_spawn.
    for name in ("system", "fork", "forkpty", "posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, guarded(getattr(os, name), no_spawn))
