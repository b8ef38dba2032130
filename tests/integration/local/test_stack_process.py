"""radcloud.ops.stack.process with real child processes: zombies and reaping."""

from __future__ import annotations

import os
import time

from radcloud.ops.stack import process


def test_a_zombie_leader_someone_else_has_not_reaped_is_not_alive():
    # The service was started by another process (e.g. a test harness) that
    # has not reaped it yet: its group still "exists" for killpg, but nothing
    # in it runs, so `down`/`deploy` must not wait on it forever.
    import subprocess
    import sys
    import time

    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         "c = subprocess.Popen([sys.executable, '-c', 'pass'], start_new_session=True)\n"
         "print(c.pid, flush=True)\n"
         "time.sleep(30)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while process._stat(pid) and process._stat(pid)[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.02)
        state, start = process._stat(pid)
        assert state == "Z"
        record = process.ProcessRecord("svc", pid, start, ("x",))
        assert process.is_alive(record) is False
    finally:
        parent.kill()
        parent.wait()


def test_stop_reaps_a_killed_service_that_is_our_own_child(tmp_path):
    # Fault tests SIGKILL a service the test process itself started. A
    # multi-threaded one (Redis) shows a zombie leader before it can be
    # reaped; stop() must reap it, not wait out its reaping limit on it
    # (which kept Redis down 3 s instead of 0.5 s in the fault test).
    import sys

    code = "import threading, time\nfor _ in range(4): threading.Thread(target=time.sleep, args=(30,)).start()\n" \
           "print('up', flush=True)\ntime.sleep(30)"
    _proc, record = process.spawn("sleeper", [sys.executable, "-c", code], log_path=tmp_path / "s.log",
                                  env=dict(os.environ), cwd=tmp_path)
    deadline = time.monotonic() + 30
    while "up" not in (tmp_path / "s.log").read_text():
        assert time.monotonic() < deadline, "the sleeper never started"
        time.sleep(0.01)
    process.stop([record], grace_s=0.0)
    assert not os.path.exists(f"/proc/{record.pid}"), "stop() left our own child a zombie"
