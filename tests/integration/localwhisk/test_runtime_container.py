"""One container on its own: init-once, staging rules, a child that dies, the launcher's reply rules."""

from __future__ import annotations

import base64
import io
import os
import sys
import zipfile
from pathlib import Path

import pytest

from localwhisk.runtime.container import LAUNCHER, Container, stage_code
from localwhisk.runtime.messages import MAX_RESULT_BYTES, SENTINEL, classify_run, log_line
from localwhisk.runtime.model import APPLICATION_ERROR, DEVELOPER_ERROR, SUCCESS, ActionCode

FIXTURES = Path(__file__).parent / "fixtures"
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "__OW_WAIT_FOR_ACK": "1"}


def code(text: str, binary: bool = False, main: str = "main") -> ActionCode:
    return ActionCode(fqn="/guest/c", version="1", kind="python:3.11", code=text, binary=binary, main=main)


@pytest.fixture
def container(tmp_path):
    workdir = tmp_path / "c1"
    workdir.mkdir()
    c = Container("c1", workdir, [sys.executable, "-u", LAUNCHER], dict(ENV))
    yield c
    c.destroy()


def test_second_init_is_rejected_and_the_first_code_keeps_running(container):
    first = container.init(code("def main(a):\n    return {'v': 1}\n"), {}, 5000, None, 1 << 20)
    assert first.status is None
    second = container.init(code("def main(a):\n    return {'v': 2}\n"), {}, 5000, None, 1 << 20)
    assert second.status == DEVELOPER_ERROR
    assert second.result == {"error": "Cannot initialize the action more than once."}
    assert container.run({"value": {}}, 5000, 1 << 20).result == {"v": 1}


def test_init_env_and_per_run_keys_reach_the_action(container):
    src = "import os\ndef main(a):\n    return {k: os.environ.get(k) for k in ('MY_PARAM', '__OW_ACTIVATION_ID')}\n"
    assert container.init(code(src), {"MY_PARAM": "x"}, 5000, None, 1 << 20).status is None
    out = container.run({"value": {}, "activation_id": "abc"}, 5000, 1 << 20)
    assert out.result == {"MY_PARAM": "x", "__OW_ACTIVATION_ID": "abc"}


def test_a_child_that_exits_mid_run_is_a_developer_error_and_is_destroyed(container):
    assert container.init(code("import os\ndef main(a):\n    os._exit(3)\n"), {}, 5000, None, 1 << 20).status is None
    out = container.run({"value": {}}, 5000, 1 << 20)
    assert (out.status, out.result) == (DEVELOPER_ERROR, {"error": "command exited"})
    assert container.alive is False
    assert not container.workdir.exists()


def test_init_that_exceeds_its_time_limit(container):
    out = container.init(code("import time\ntime.sleep(30)\ndef main(a):\n    return {}\n"), {}, 300, None, 1 << 20)
    assert out.result == {"error": "The action exceeded its time limits of 300 milliseconds during initialization."}
    assert out.timeout and container.alive is False


def test_init_output_is_logged_with_the_first_run(container):
    assert container.init(code("print('importing')\ndef main(a):\n    return {}\n"), {}, 5000, None, 1 << 20).status is None
    logs = container.run({"value": {}}, 5000, 1 << 20).logs
    assert [line[31:] for line in logs] == ["stdout: importing"]


def test_a_plain_binary_file_is_staged_as_the_module(tmp_path):
    payload = base64.b64encode(b"def main(a):\n    return {}\n").decode()
    assert stage_code(tmp_path, code(payload, binary=True)) is None
    assert (tmp_path / "main__.py").read_text().startswith("def main")


def test_a_zip_is_extracted_and_its_entry_renamed(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("__main__.py", "def main(a):\n    return {}\n")
        zf.writestr("pkg/mod.py", "X = 1\n")
    assert stage_code(tmp_path, code(base64.b64encode(buf.getvalue()).decode(), binary=True)) is None
    assert sorted(os.listdir(tmp_path)) == ["main__.py", "pkg"]


def test_bad_base64_is_reported(tmp_path):
    assert "not valid base64" in stage_code(tmp_path, code("%%%", binary=True))


@pytest.mark.parametrize("line, status, result", [
    ('{"a": 1}', SUCCESS, {"a": 1}),
    ('[1]', SUCCESS, [1]),
    ('{"error": "x", "other": 1}', APPLICATION_ERROR, {"error": "x"}),  # only `error` survives
    ('"text"', DEVELOPER_ERROR, {"error": "The action did not return a dictionary or array."}),
    ('null', DEVELOPER_ERROR, {"error": "The action did not return a dictionary or array."}),
    ('not json', DEVELOPER_ERROR, {"error": "The action did not return a dictionary or array."}),
])
def test_classify_run_follows_the_proxy_and_invoker(line, status, result):
    assert classify_run(line) == (status, result)


def test_log_line_format():
    line = log_line(1_700_000_000_123_456_789, "stdout", "hello")
    assert line == "2023-11-14T22:13:20.123456789Z stdout: hello"
    assert MAX_RESULT_BYTES == 1048576 and SENTINEL == "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"


def test_output_without_newlines_is_cut_into_lines_and_the_sentinel_still_found(container):
    src = "import sys\ndef main(a):\n    sys.stdout.write('z' * 100000)\n    return {'ok': 1}\n"
    assert container.init(code(src), {}, 5000, None, 1 << 20).status is None
    out = container.run({"value": {}}, 5000, 1 << 20)
    assert out.result == {"ok": 1}
    texts = [line.split("stdout: ", 1)[1] for line in out.logs]
    assert "".join(texts) == "z" * 100000
    assert max(len(t) for t in texts) <= 16 * 1024


def test_stray_fd3_lines_retire_the_container(container):
    src = "import os\ndef main(a):\n    os.write(3, b'{\"stray\": true}\\n')\n    return {'real': True}\n"
    assert container.init(code(src), {}, 5000, None, 1 << 20).status is None
    out = container.run({"value": {}}, 5000, 1 << 20)
    assert out.result == {"stray": True}  # the first line wins, as with the Go proxy
    assert container.alive is False  # but the second line must not answer the next run


@pytest.mark.parametrize("returned", ["{1, 2}", "{'x': float('nan')}", "None"])
def test_results_that_are_not_json_objects_are_developer_errors(container, returned):
    assert container.init(code(f"def main(a):\n    return {returned}\n"), {}, 5000, None, 1 << 20).status is None
    out = container.run({"value": {}}, 5000, 1 << 20)
    assert (out.status, out.result) == (DEVELOPER_ERROR, {"error": "The action did not return a dictionary or array."})
