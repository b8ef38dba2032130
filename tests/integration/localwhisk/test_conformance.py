"""Conformance over HTTP with the real runtime: a named case list like OpenWhisk's BasicActionRunnerTests.

Each case deploys one action through the REST API, invokes it blocking and
checks the HTTP status, the activation's status and its result (ref §1, §3, §6).
"""

from __future__ import annotations

import base64
import io
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

pytestmark = pytest.mark.integration


def zip_b64(files: dict[str, str]) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return base64.b64encode(buf.getvalue()).decode()


@dataclass
class Case:
    code: str
    payload: Any = field(default_factory=dict)
    status: int = 200
    activation: str = "success"
    check: Callable[[Any], bool] = lambda r: True
    main: str | None = None
    limits: dict | None = None
    annotations: list | None = None


ENV = """import os
def main(a):
    return {k: os.environ.get(k) for k in ("__OW_API_HOST", "__OW_NAMESPACE", "__OW_ACTION_NAME",
            "__OW_ACTION_VERSION", "__OW_ACTIVATION_ID", "__OW_DEADLINE", "__OW_API_KEY", "__OW_TRANSACTION_ID")}
"""
BIG = "x" * (900 * 1024)

CASES = {
    "echo": Case("def main(a):\n    return a\n", {"a": 1, "b": [True, None]},
                 check=lambda r: r == {"a": 1, "b": [True, None]}),
    "unicode": Case("def main(a):\n    print('héllo ☃')\n    return {'s': a['s'] + ' ✓'}\n", {"s": "ünïcødé 日本"},
                    check=lambda r: r == {"s": "ünïcødé 日本 ✓"}),
    "env vars": Case(ENV, check=lambda r: r["__OW_NAMESPACE"] == "guest"
                     and r["__OW_ACTION_NAME"] == "/guest/env_vars" and r["__OW_API_HOST"].startswith("http://127.0.0.1:")
                     and len(r["__OW_ACTIVATION_ID"]) == 32 and r["__OW_DEADLINE"].isdigit()
                     and r["__OW_API_KEY"] is None),  # new actions get provide-api-key:false
    "env api key": Case(ENV, annotations=[{"key": "provide-api-key", "value": True}],
                        check=lambda r: r["__OW_API_KEY"] and ":" in r["__OW_API_KEY"]),
    "large input": Case("def main(a):\n    return {'n': len(a['big'])}\n", {"big": BIG},
                        check=lambda r: r == {"n": len(BIG)}),
    "non-JSON result": Case("def main(a):\n    return 'just a string'\n", status=502,
                            activation="action developer error", check=lambda r: "error" in r),
    "list result": Case("def main(a):\n    return [1, 'two', {'three': 3}]\n", check=lambda r: r == [1, "two", {"three": 3}]),
    "exception": Case("def main(a):\n    raise ValueError('it broke')\n", status=502, activation="application error",
                      check=lambda r: r == {"error": "it broke"}),
    "non-main entry": Case("def other(a):\n    return {'entry': 'other'}\n", main="other",
                           check=lambda r: r == {"entry": "other"}),
    "zip action": Case(zip_b64({"__main__.py": "from helper import f\ndef main(a):\n    return {'v': f()}\n",
                                "helper.py": "def f():\n    return 42\n"}), check=lambda r: r == {"v": 42}),
    "zip missing __main__.py": Case(zip_b64({"other.py": "def main(a):\n    return {}\n"}), status=502,
                                    activation="action developer error", check=lambda r: "error" in r),
    "timeout": Case("import time\ndef main(a):\n    time.sleep(10)\n    return {}\n", limits={"timeout": 2000},
                    status=502, activation="action developer error",
                    check=lambda r: r == {"error": "The action exceeded its time limits of 2000 milliseconds."}),
    "result over 1 MB": Case("def main(a):\n    return {'x': 'y' * (1024 * 1024 + 10)}\n", status=502,
                             activation="application error",
                             check=lambda r: r["error"].startswith("The action produced a response that exceeded the allowed length")),
    "memory blow-up": Case("def main(a):\n    b = bytearray(2 * 1024 ** 3)\n    return {'n': len(b)}\n",
                           limits={"memory": 128}, status=502, activation="action developer error",
                           check=lambda r: r == {"error": "The action exhausted its memory and was aborted."}),
}


def deploy(whisk, name: str, case: Case) -> None:
    exec_ = {"kind": "python:3.11", "code": case.code}
    if case.main:
        exec_["main"] = case.main
    body = {"exec": exec_, "annotations": case.annotations or []}
    if case.limits:
        body["limits"] = case.limits
    status, resp = whisk.client.request("PUT", f"/api/v1/namespaces/_/actions/{name}", body, "overwrite=true")
    assert status == 200, resp


@pytest.mark.parametrize("name", list(CASES))
def test_case(whisk, name):
    case = CASES[name]
    action = name.replace(" ", "_").replace("-", "_").replace(".", "_")
    deploy(whisk, action, case)
    status, rec = whisk.invoke(action, case.payload, result=False)
    assert status == case.status, rec
    if isinstance(rec, list):  # an array result comes back bare even without result=true
        assert case.check(rec), rec
        _, found = whisk.client.request("GET", "/api/v1/namespaces/_/activations", query=f"name={action}&docs=true&limit=1")
        rec = found[0]
    assert rec["response"]["status"] == case.activation, rec
    assert case.check(rec["response"]["result"]), rec["response"]["result"]


def test_init_once_state_survives_between_runs(whisk):
    deploy(whisk, "counter", Case("count = 0\ndef main(a):\n    global count\n    count += 1\n    return {'count': count}\n"))
    counts = [whisk.invoke("counter")[1]["count"] for _ in range(3)]
    assert counts == [1, 2, 3]  # one container, initialised once, reused warm
    _, rec = whisk.invoke("counter", result=False)
    assert "initTime" not in {a["key"] for a in rec["annotations"]}


def test_update_replaces_warm_container(whisk):
    deploy(whisk, "ver", Case("def main(a):\n    return {'v': 1}\n"))
    assert whisk.invoke("ver")[1] == {"v": 1}
    deploy(whisk, "ver", Case("def main(a):\n    return {'v': 2}\n"))
    assert whisk.invoke("ver")[1] == {"v": 2}


def test_payload_over_1mb_is_413(whisk):
    deploy(whisk, "echo413", CASES["echo"])
    status, body = whisk.invoke("echo413", {"x": "a" * (1024 * 1024 + 1)})
    assert status == 413 and "larger than allowed" in body["error"]


def test_logs_are_captured_with_openwhisk_line_format(whisk):
    deploy(whisk, "logger", Case("import sys\ndef main(a):\n    print('to stdout')\n    print('to stderr', file=sys.stderr)\n    return {}\n"))
    status, rec = whisk.invoke("logger", result=False)
    assert status == 200 and rec["logs"] == []  # blocking replies carry no logs
    _, logs = whisk.client.request("GET", f"/api/v1/namespaces/_/activations/{rec['activationId']}/logs")
    assert any(line.endswith("stdout: to stdout") for line in logs["logs"])
    assert any(line.endswith("stderr: to stderr") for line in logs["logs"])
    assert all(len(line.split(" ")[0]) >= 20 for line in logs["logs"])


def test_sequence_short_circuit(whisk):
    deploy(whisk, "s_ok", Case("def main(a):\n    return {'n': a.get('n', 0) + 1}\n"))
    deploy(whisk, "s_fail", Case("def main(a):\n    return {'error': 'stopped at ' + str(a['n'])}\n"))
    deploy(whisk, "s_never", Case("def main(a):\n    return {'never': True}\n"))
    body = {"exec": {"kind": "sequence", "components": ["/_/s_ok", "/_/s_fail", "/_/s_never"]}}
    assert whisk.client.request("PUT", "/api/v1/namespaces/_/actions/seq", body, "overwrite=true")[0] == 200
    status, rec = whisk.invoke("seq", {"n": 1}, result=False)
    assert status == 502 and rec["response"]["result"] == {"error": "stopped at 2"}
    _, full = whisk.activation(rec["activationId"])
    assert len(full["logs"]) == 2  # s_never did not run


def test_activation_record_shape(whisk):
    deploy(whisk, "shape", CASES["echo"])
    _, rec = whisk.invoke("shape", {"k": "v"}, result=False)
    _, full = whisk.activation(rec["activationId"])
    assert set(full) >= {"namespace", "name", "subject", "activationId", "version", "publish", "start", "end",
                         "duration", "response", "logs", "annotations"}
    ann = {a["key"]: a["value"] for a in full["annotations"]}
    assert ann["path"] == "guest/shape" and ann["kind"] == "python:3.11" and "waitTime" in ann
    assert full["response"] == {"status": "success", "success": True, "result": {"k": "v"}, "size": 9}
