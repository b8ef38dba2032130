"""FakeRuntime and helpers for the controller's unit tests (no sockets, no subprocesses).

FakeRuntime has the real runtime's interface (``run/forget/stats/shutdown``)
but executes the action's Python source in-process, classifying the result
like OpenWhisk's invoker; ``GATE`` (a threading.Event) is visible to the
action code so tests can hold an activation in flight.
"""

from __future__ import annotations

import base64
import json
import threading
import time

from localwhisk.api import Controller
from localwhisk.auth import Authenticator
from localwhisk.runtime.model import RunOutcome
from localwhisk.store import Store

KEY = "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP"
AUTH = {"authorization": "Basic " + base64.b64encode(KEY.encode()).decode()}


class FakeRuntime:
    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.forgotten: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self._warm: set[tuple[str, str]] = set()

    def run(self, action, limits, value, *, activation_id, transaction_id, namespace, api_key, deadline_ms):
        self.calls.append({"action": action, "limits": limits, "value": value, "activation_id": activation_id,
                           "namespace": namespace, "api_key": api_key})
        wait_start = now = int(time.time() * 1000)
        cold = (action.fqn, action.digest) not in self._warm
        self._warm.add((action.fqn, action.digest))
        scope = {"GATE": self.gate}
        try:
            exec(action.code, scope)
            result = scope[action.main](value)
        except Exception as exc:  # as the launcher does: the exception becomes {"error": ...}
            result = {"error": str(exc)}
        end = int(time.time() * 1000)
        if isinstance(result, dict):
            status = "application error" if "error" in result else "success"
        elif isinstance(result, list):
            status = "success"
        else:
            status = "action developer error"
            result = {"error": "The action did not produce a valid JSON or JSON Array response: "
                      + json.dumps(result)}
        return RunOutcome(status=status, result=result, logs=["2024-01-01T00:00:00.000000000Z stdout: ran"],
                          start_ms=now, end_ms=end, duration_ms=end - now, init_time_ms=1 if cold else None,
                          wait_time_ms=now - wait_start, timeout=False)

    def forget(self, fqn: str) -> None:
        self.forgotten.append(fqn)

    def stats(self) -> dict:
        return {}

    def shutdown(self) -> None:
        pass


def make_controller(runtime=None, store=None, **kw) -> Controller:
    return Controller(runtime or FakeRuntime(), store or Store(":memory:"), Authenticator({"guest": KEY}), **kw)


def call(ctrl, method, path, body=None, query="", auth=True, headers=None, raw: bytes | None = None):
    hdrs = dict(AUTH) if auth else {}
    hdrs.update(headers or {})
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    return ctrl.handle(method, path, query, hdrs, data)


def put_action(ctrl, name, code, *, kind="python:3.11", query="overwrite=true", **fields):
    body = {"exec": {"kind": kind, "code": code}, **fields}
    resp = call(ctrl, "PUT", f"/api/v1/namespaces/_/actions/{name}", body, query=query)
    assert resp.status == 200, resp.body
    return resp.json()


ECHO = "def main(args):\n    return args\n"
