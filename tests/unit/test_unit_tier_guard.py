"""The unit tier's guard (tests/unit/conftest.py) refuses sockets and child processes."""

from __future__ import annotations

import socket
import subprocess

import pytest


def test_a_socket_connection_is_refused_naming_where_the_test_belongs():
    with pytest.raises(AssertionError, match="tests/integration/local/") as err:
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    assert type(err.value).__name__ == "UnitTierViolation" and "test_unit_tier_guard.py" in str(err.value)


def test_a_unix_socket_and_a_listener_are_refused_too():
    for family, address in ((socket.AF_UNIX, "/nonexistent/redis.sock"), (socket.AF_INET, ("127.0.0.1", 0))):
        with socket.socket(family, socket.SOCK_STREAM) as sock, pytest.raises(AssertionError, match="unit tier"):
            (sock.connect if family == socket.AF_UNIX else sock.bind)(address)


def test_a_child_process_is_refused():
    with pytest.raises(AssertionError, match="started a process"):
        subprocess.run(["true"], check=False)


def test_a_process_outside_popen_is_refused_too():
    import multiprocessing
    import os

    with pytest.raises(AssertionError, match="started a process"):
        os.system("true")
    with pytest.raises(AssertionError, match="started a process"):
        os.posix_spawnp("true", ["true"], dict(os.environ))
    process = multiprocessing.get_context("fork").Process(target=print)
    with pytest.raises(AssertionError, match="started a process"):
        process.start()


def test_a_thread_the_test_starts_is_refused_too():
    import threading

    caught: list[BaseException] = []

    def reach_out() -> None:
        try:
            subprocess.run(["true"], check=False)
        except AssertionError as exc:
            caught.append(exc)

    worker = threading.Thread(target=reach_out)
    worker.start()
    worker.join(10)
    assert [type(e).__name__ for e in caught] == ["UnitTierViolation"], caught


@pytest.fixture(scope="module")
def background():
    """A thread alive before the test starts, as a session fixture of another tier leaves one
    (the e2e world's background stop): it binds a socket when asked to."""
    import queue
    import threading

    asked: queue.Queue = queue.Queue()
    answers: queue.Queue = queue.Queue()

    def serve() -> None:
        while asked.get():
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", 0))
                    answers.put(sock.getsockname()[1])
            except BaseException as exc:  # noqa: BLE001 - the test reads what happened
                answers.put(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield lambda: (asked.put(True), answers.get(timeout=10))[1]
    asked.put(False)
    thread.join(10)


def test_a_thread_alive_before_the_test_passes_through(background):
    port = background()
    assert isinstance(port, int) and port > 0, port
    with pytest.raises(AssertionError, match="unit tier"):
        socket.socket().bind(("127.0.0.1", 0))   # the test's own thread is still refused
