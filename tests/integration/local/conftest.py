"""Fixtures for the local-component tests: real processes, no network stack.

This folder holds what used to sit in tests/unit but needs a real component:
a private ``redis-server`` (the job model is Lua scripts and blocking stream
reads, which fakes mimic badly), plugins and actions in child processes and
the bubblewrap sandbox. tests/unit stays in-process (``make test-fast``).

``redis_server``: a private redis-server listening on a unix socket in a temp
dir (no TCP port, nothing reachable from outside), one per test session;
``redis_client`` flushes it before each test. A missing ``redis-server`` fails
under ``CI=true`` (the ``require`` fixture) and skips elsewhere.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def _listening(sock: Path) -> bool:
    """Whether a unix socket accepts a connection. Redis creates the socket file
    before it listens, and a connect in between is refused: the file is not enough."""
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(sock))
        except OSError:
            return False
    return True


@pytest.fixture(scope="session")
def unix_listening():
    """``unix_listening(path)``: whether a private server's unix socket accepts connections yet."""
    return _listening


@pytest.fixture(scope="session")
def redis_server(require):
    binary = shutil.which("redis-server")
    require(binary is not None, "redis-server is not installed: make system-deps")
    tmp = Path(tempfile.mkdtemp(prefix="radcloud-redis-"))
    sock = tmp / "redis.sock"
    proc = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
         "--dir", str(tmp), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Bounded, but by what a loaded machine needs (a 2 s bound failed a setup
        # at load 12); a server that exited is reported at once.
        deadline = time.monotonic() + 30
        while not _listening(sock):
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {proc.returncode} before listening")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not listen within 30 s")
            time.sleep(0.01)
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def redis_client(redis_server):
    import redis

    client = redis.Redis.from_url(redis_server, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _bwrap_cases_need_bubblewrap(request: pytest.FixtureRequest) -> None:
    # Tests parametrised over ``use_bwrap``: the sandboxed case must run in
    # CI, not vanish from the parametrisation on a machine without bwrap.
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("use_bwrap") is True:
        request.getfixturevalue("needs_bwrap")
