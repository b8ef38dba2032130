"""Taking a test world down without making the next test wait for it.

Stopping a stack is mostly waiting: Orthanc and SeaweedFS take 3-4 s each to
shut down cleanly after SIGTERM (radcloud.ops.stack.process.stop), localwhisk a
moment more. A tier's fixture hands its ``down`` to :func:`stop_later`, which
runs it on a thread while the next tier starts; the root conftest's
``pytest_sessionfinish`` calls :func:`join` so every service is stopped —
cleanly, as before — before pytest exits, and a stop that failed fails the run.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable

_pending: list[tuple[str, threading.Thread]] = []
_failures: list[str] = []
_lock = threading.Lock()


def stop_later(stop: Callable[[], object], what: str) -> None:
    """Run ``stop`` (a world's or stack's ``down``) on a background thread."""

    def run() -> None:
        try:
            stop()
        except BaseException:  # noqa: BLE001 — reported by join(), never lost
            with _lock:
                _failures.append(f"stopping {what} failed:\n{traceback.format_exc()}")

    thread = threading.Thread(target=run, name=f"stop {what}", daemon=False)
    thread.start()
    with _lock:
        _pending.append((what, thread))


def join(timeout_s: float = 120.0) -> list[str]:
    """Wait for every stop started so far; returns what went wrong (empty when all stopped)."""
    with _lock:
        pending = list(_pending)
        _pending.clear()
    problems = []
    for what, thread in pending:
        thread.join(timeout_s)
        if thread.is_alive():
            problems.append(f"stopping {what} did not finish within {timeout_s:.0f} s")
    with _lock:
        problems += _failures
        _failures.clear()
    return problems
