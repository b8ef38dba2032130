"""Conformance of localwhisk's runtime with OpenWhisk's actionloop, as a named case list.

Like OpenWhisk's BasicActionRunnerTests: each case is an action (most are broken on
purpose, see fixtures/), an input and what a real OpenWhisk answers. Real launcher
subprocesses run; no network.
"""

from __future__ import annotations

import base64
import io
import re
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from localwhisk.runtime import (
    APPLICATION_ERROR,
    DEVELOPER_ERROR,
    SUCCESS,
    ActionCode,
    Limits,
    RunOutcome,
    Runtime,
)

FIXTURES = Path(__file__).parent / "fixtures"
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr): ")


def source(name: str) -> str:
    return (FIXTURES / name).read_text()


def zipped(folder: str) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted((FIXTURES / folder).iterdir()):
            if path.suffix == ".py":
                zf.write(path, path.name)
    return base64.b64encode(buf.getvalue()).decode()


def action(code: str, *, name: str, binary: bool = False, main: str = "main", **kw) -> ActionCode:
    return ActionCode(fqn=f"/guest/conf/{name}", version="0.0.1", kind="python:3.11", code=code,
                      binary=binary, main=main, digest=name, **kw)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    rt = Runtime(api_host="http://127.0.0.1:3233", state_dir=tmp_path_factory.mktemp("lw"),
                 prewarm=1, max_containers=4)
    yield rt
    rt.shutdown()


def invoke(rt: Runtime, act: ActionCode, value, limits: Limits = Limits(), **kw) -> RunOutcome:
    args = dict(activation_id="a" * 32, transaction_id="t1", namespace="guest", api_key="uuid:key",
                deadline_ms=int(time.time() * 1000) + limits.timeout_ms)
    args.update(kw)
    return rt.run(act, limits, value, **args)


# -- the named cases ----------------------------------------------------------

@dataclass
class Case:
    name: str
    action: ActionCode
    value: dict | list = field(default_factory=dict)
    limits: Limits = Limits()
    status: str = SUCCESS
    check: Callable[[RunOutcome], None] = lambda out: None


BIG_INPUT = {"payload": "é" * (450 * 1024)}  # ~900 KB of UTF-8
ENV_ALLOWED = {"PATH", "HOME", "LANG", "PYTHONIOENCODING", "OPENBLAS_NUM_THREADS", "TMPDIR",
               "INIT_PARAM"}


def check_env(out: RunOutcome) -> None:
    env = out.result["env"]
    assert env["__OW_API_HOST"] == "http://127.0.0.1:3233"
    assert env["__OW_API_KEY"] == "uuid:key"
    assert env["__OW_NAMESPACE"] == "guest"
    assert env["__OW_ACTION_NAME"] == "/guest/conf/env"
    assert env["__OW_ACTION_VERSION"] == "0.0.1"
    assert env["__OW_ACTIVATION_ID"] == "a" * 32
    assert env["__OW_TRANSACTION_ID"] == "t1"
    assert env["__OW_DEADLINE"].isdigit()
    assert env["INIT_PARAM"] == '{"nested": 1}'  # non-string init values arrive as compact JSON
    # Nothing of the parent's environment leaks in (pytest sets PYTEST_CURRENT_TEST).
    assert "PYTEST_CURRENT_TEST" not in env
    assert {k for k in env if not k.startswith("__OW_")} <= ENV_ALLOWED
    assert env["PATH"].split(":")[1:] == ["/usr/local/bin", "/usr/bin", "/bin"]


def check_traceback(out: RunOutcome) -> None:
    assert out.result == {"error": "boom: because"}
    assert any(line.endswith("stdout: about to fail") for line in out.logs)
    stderr = [line for line in out.logs if " stderr: " in line]
    assert any("Traceback (most recent call last):" in line for line in stderr)
    assert any("ValueError: boom: because" in line for line in stderr)


def check_truncated_logs(out: RunOutcome) -> None:
    assert out.logs[-1].endswith(
        "stderr: Logs were truncated because the total bytes size exceeds the limit of 1048576 bytes.")
    kept = sum(len(line.split(": ", 1)[1]) for line in out.logs[:-1])
    assert 1000 * 1024 < kept <= 1024 * 1024


def check_big_result(out: RunOutcome) -> None:
    error = out.result["error"]
    assert error.startswith("The action produced a response that exceeded the allowed length: ")
    assert re.search(r": (\d+) > 1048576 bytes\. The truncated response was: ", error)
    assert int(re.search(r": (\d+) >", error).group(1)) > 1100 * 1024


CASES = [
    Case("echo", action(source("echo.py"), name="echo"), {"name": "Ann", "n": [1, 2]},
         check=lambda out: out.result == {"name": "Ann", "n": [1, 2]} or pytest.fail(out.result)),
    Case("unicode", action(source("echo.py"), name="unicode"), {"text": "Grüße ☃ 日本 \U0001F600"},
         check=lambda out: out.result == {"text": "Grüße ☃ 日本 \U0001F600"} or pytest.fail(out.result)),
    Case("env vars", action(source("env_dump.py"), name="env", init_env={"INIT_PARAM": {"nested": 1}}),
         check=check_env),
    Case("large input", action(source("echo.py"), name="large"), BIG_INPUT,
         check=lambda out: out.result == BIG_INPUT or pytest.fail("large input not echoed")),
    Case("non-JSON result", action(source("garbage_fd3.py"), name="garbage"), status=DEVELOPER_ERROR,
         check=lambda out: out.result == {"error": "The action did not return a dictionary or array."}
         or pytest.fail(out.result)),
    Case("scalar result", action(source("returns_string.py"), name="string"), status=DEVELOPER_ERROR,
         check=lambda out: out.result == {"error": "The action did not return a dictionary or array."}
         or pytest.fail(out.result)),
    Case("list result", action(source("returns_list.py"), name="list"),
         check=lambda out: out.result == [1, "two", {"three": 3}] or pytest.fail(out.result)),
    Case("exception", action(source("raises.py"), name="raises"), {"why": "because"},
         status=APPLICATION_ERROR, check=check_traceback),
    Case("non-main entry", action(source("other_entry.py"), name="entry", main="handler"),
         check=lambda out: out.result == {"entry": "handler"} or pytest.fail(out.result)),
    Case("missing entry", action(source("echo.py"), name="noentry", main="nope"), status=DEVELOPER_ERROR,
         check=lambda out: "nope" in out.result["error"] or pytest.fail(out.result)),
    Case("syntax error", action(source("syntax_error.py"), name="syntax"), status=DEVELOPER_ERROR,
         check=lambda out: out.result["error"].startswith("SyntaxError") or pytest.fail(out.result)),
    Case("empty code", action("", name="empty"), status=DEVELOPER_ERROR,
         check=lambda out: out.result == {"error": "Missing main/no code to execute."}
         or pytest.fail(out.result)),
    Case("zip with __main__.py", action(zipped("zip_ok"), name="zip", binary=True), {"name": "Zed"},
         check=lambda out: out.result == {"greeting": "Hello Zed!"} or pytest.fail(out.result)),
    Case("zip without __main__.py", action(zipped("zip_no_main"), name="zipbad", binary=True),
         status=DEVELOPER_ERROR,
         check=lambda out: "does not include __main__.py" in out.result["error"] or pytest.fail(out.result)),
    Case("result over 1 MB", action(source("big_result.py"), name="big"), status=APPLICATION_ERROR,
         check=check_big_result),
    Case("memory blow-up", action(source("memory_hog.py"), name="hog"), limits=Limits(memory_mb=128),
         status=DEVELOPER_ERROR,
         check=lambda out: out.result == {"error": "The action exhausted its memory and was aborted."}
         or pytest.fail(out.result)),
    Case("log truncation", action(source("flood.py"), name="flood"), {"kib": 2048},
         limits=Limits(logs_mb=1), check=check_truncated_logs),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_conformance(runtime, case):
    started = time.monotonic()
    out = invoke(runtime, case.action, case.value, case.limits)
    assert out.status == case.status, out.result
    assert time.monotonic() - started < 20  # nothing hangs, the memory case included
    assert all(LINE.match(line) for line in out.logs), out.logs[:3]
    case.check(out)


def test_timeout_kills_the_container_and_the_next_call_is_cold(runtime):
    # The limit under test is on the middle call only: the cold starts around it get the default
    # limits, as a cold start (launcher + init) can itself take 500 ms on a loaded machine.
    act = action(source("sleeper.py"), name="sleeper")
    warm = invoke(runtime, act, {"seconds": 0})
    assert warm.status == SUCCESS
    started = time.monotonic()
    out = invoke(runtime, act, {"seconds": 30}, Limits(timeout_ms=500))
    assert time.monotonic() - started < 5
    assert out.status == DEVELOPER_ERROR
    assert out.result == {"error": "The action exceeded its time limits of 500 milliseconds."}
    assert out.timeout is True
    assert any(line.endswith("stdout: going to sleep") for line in out.logs)
    assert "/guest/conf/sleeper" not in runtime.stats()["actions"]  # destroyed, not parked
    again = invoke(runtime, act, {"seconds": 0})
    assert again.status == SUCCESS and again.init_time_ms is not None


def test_logs_keep_order_streams_and_openwhisk_format(runtime):
    out = invoke(runtime, action(source("chatty.py"), name="chatty"), {})
    assert [line[31:] for line in out.logs] == ["stdout: first out", "stderr: then err", "stdout: last out"]
    stamps = [line[:30] for line in out.logs]
    assert stamps == sorted(stamps)
    assert all(len(s) == 30 and s.endswith("Z") for s in stamps)
    assert not any("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX" in line for line in out.logs)


def test_warm_reuse_has_no_init_time(runtime):
    act = action(source("echo.py"), name="warm")
    first = invoke(runtime, act, {"i": 1})
    second = invoke(runtime, act, {"i": 2})
    assert first.init_time_ms is not None
    assert second.init_time_ms is None
    assert second.result == {"i": 2}
    assert second.wait_time_ms >= 0 and second.duration_ms == second.end_ms - second.start_ms


def test_api_key_is_withheld_when_not_provided(runtime):
    act = action(source("env_dump.py"), name="nokey", provide_api_key=False)
    out = invoke(runtime, act, {})
    assert "__OW_API_KEY" not in out.result["env"]


def test_numpy_fits_under_the_smallest_memory_limit(runtime):
    # The limit is resident memory (the container's cgroup), so the interpreter plus numpy fit.
    src = ("import numpy\n\ndef main(args):\n"
           "    a = numpy.ones((1024, 1024, 8))  # 64 MB, within a 128 MB limit\n"
           "    return {'sum': float(a.sum())}\n")
    out = invoke(runtime, action(src, name="numpy"), {}, Limits(memory_mb=128))
    assert out.status == SUCCESS, out.result
    assert out.result == {"sum": 8 * 1024 * 1024}


# -- memory: the container's cgroup, as OpenWhisk's docker --memory -----------------

RESERVE = ("import mmap\n\ndef main(args):\n"
           "    m = mmap.mmap(-1, 4 << 30)  # 4 GB of address space, never touched\n"
           "    m[0:1] = b'x'\n"
           "    return {'reserved': len(m)}\n")
CHILD_HOG = ("import subprocess, sys\n\ndef main(args):\n"
             "    code = 'b = bytearray(1 << 30)'  # 1 GB, touched: past the container's 128 MB\n"
             "    return {'rc': subprocess.run([sys.executable, '-c', code]).returncode}\n")
SELF_KILL = ("import os, signal\n\ndef main(args):\n"
             "    os.kill(os.getpid(), signal.SIGKILL)\n")


def test_reserving_address_space_is_not_using_memory(runtime):
    # numpy/OpenBLAS/JITs reserve far more than they touch: no address-space cap (RLIMIT_AS).
    out = invoke(runtime, action(RESERVE, name="reserve"), {}, Limits(memory_mb=128))
    assert out.status == SUCCESS and out.result == {"reserved": 4 << 30}, out.result


def test_the_limit_holds_every_process_of_the_container(runtime):
    out = invoke(runtime, action(CHILD_HOG, name="childhog"), {}, Limits(memory_mb=128))
    if runtime.memory.kind in ("cgroup1", "cgroup2"):
        # the kernel kills the biggest process, the child: the action sees it and answers
        assert out.status == SUCCESS and out.result == {"rc": -9}, out.result
    else:  # the watcher kills the whole tree: the action itself is gone
        assert out.result == {"error": "The action exhausted its memory and was aborted."}


def test_a_sigkill_that_is_not_for_memory_is_not_reported_as_memory(runtime):
    out = invoke(runtime, action(SELF_KILL, name="selfkill"), {}, Limits(memory_mb=128))
    assert out.status == DEVELOPER_ERROR and out.result == {"error": "command exited"}


def test_containers_run_in_their_own_cgroup_and_leave_none_behind(tmp_path):
    rt = Runtime(api_host="http://127.0.0.1:3233", state_dir=tmp_path, prewarm=0)
    base = rt.memory.base
    try:
        out = invoke(rt, action(source("echo.py"), name="cg"), {"x": 1}, Limits(memory_mb=200))
        assert out.status == SUCCESS
        if base is not None:
            boxes = [p for p in base.iterdir() if p.is_dir()]
            assert len(boxes) == 1  # the warm container's
            limit_file = "memory.max" if rt.memory.kind == "cgroup2" else "memory.limit_in_bytes"
            assert (boxes[0] / limit_file).read_text().strip() == str(200 * 2**20)
    finally:
        rt.shutdown()
    assert base is None or not base.exists()


def test_the_watcher_fallback_kills_a_container_past_its_limit(tmp_path):
    # Where no cgroup is writable: the RSS watcher over the container's process tree.
    rt = Runtime(api_host="http://127.0.0.1:3233", state_dir=tmp_path, prewarm=0, memory="watch")
    try:
        assert rt.memory.kind == "watch" and rt.stats()["memory"] == "watch"
        out = invoke(rt, action(CHILD_HOG, name="watched"), {}, Limits(memory_mb=128))
        assert out.status == DEVELOPER_ERROR
        assert out.result == {"error": "The action exhausted its memory and was aborted."}
        fine = invoke(rt, action(source("echo.py"), name="small"), {"x": 1}, Limits(memory_mb=128))
        assert fine.status == SUCCESS and fine.result == {"x": 1}
    finally:
        rt.shutdown()
