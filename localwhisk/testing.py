"""Start a real localwhisk server from tests (a subprocess on 127.0.0.1, a free port).

Usage in an integration fixture::

    from localwhisk.testing import Server

    @pytest.fixture(scope="session")
    def whisk(tmp_path_factory):
        with Server(tmp_path_factory.mktemp("whisk")) as server:
            server.deploy("deploy/manifest.yaml", params={"redis_url": "redis://..."})
            yield server

    def test_query(whisk):
        status, body = whisk.invoke("radcloud/query", {"q": "..."})     # blocking, result=true
        status, body = whisk.web("radcloud/query.json", query="q=...")   # web action

``Server.start()`` returns ``(api_host, auth)``; ``.client`` is a ``WhiskClient``
for anything else; ``kill()`` stops it hard (SIGKILL) to test restarts.
Everything the server keeps lives in ``state_dir``. ``extra_args`` go to
``localwhisk serve``, ``images={"user/img": ["/dir"]}`` maps docker images of
blackbox actions to local PYTHONPATH dirs (``--image``; keep them outside /tmp:
sandboxed actions get a private /tmp), ``preload=["numpy"]`` makes every stem cell
import those modules before it gets code (``--preload``), ``env`` is added to the
server's environment.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

from localwhisk.manifest import load_plan
from localwhisk.wskclient import WhiskClient, apply, http_transport

START_TIMEOUT_S = 30.0


class Server:
    def __init__(self, state_dir: str | Path, *, extra_args: list[str] | None = None,
                 env: Mapping[str, str] | None = None, max_concurrent: int = 30,
                 images: Mapping[str, list[str | Path]] | None = None, preload: list[str] | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.extra_args = list(extra_args or [])
        for image, dirs in (images or {}).items():  # blackbox image -> PYTHONPATH dirs (serve --image)
            self.extra_args += ["--image", f"{image}=" + ":".join(str(d) for d in dirs)]
        if preload:  # modules every stem cell imports (serve --preload)
            self.extra_args += ["--preload", ",".join(preload)]
        self.env = dict(env or {})
        self.max_concurrent = max_concurrent
        self.api_host = ""
        self.auth = ""
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> tuple[str, str]:
        argv = [sys.executable, "-m", "localwhisk.cli", "serve", "--state-dir", str(self.state_dir),
                "--port", "0", "--max-concurrent", str(self.max_concurrent), *self.extra_args]
        self.output, self._lines = [], queue.Queue()  # a restart must not read the previous run's lines
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **self.env}, start_new_session=True)
        threading.Thread(target=self._pump, args=(self.proc, self._lines, self.output), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            if line.startswith("APIHOST="):
                self.api_host = line.split("=", 1)[1].strip()
            elif line.startswith("AUTH="):
                # The server prints no key (its output is logged); .wskprops holds it, written before.
                self.auth = _wskprops(self.state_dir)["AUTH"]
                return self.api_host, self.auth
        self.stop()
        raise RuntimeError("localwhisk did not start:\n" + "".join(self.output))

    @staticmethod
    def _pump(proc: subprocess.Popen, lines: queue.Queue, output: list[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            lines.put(line)
        lines.put(None)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (graceful: containers are killed), then SIGKILL if it hangs."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self) -> None:
        """Die like a crash: SIGKILL the server's whole process group (its containers too)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> "Server":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- conveniences ------------------------------------------------------------

    @property
    def client(self) -> WhiskClient:
        return WhiskClient(http_transport(self.api_host), self.auth)

    def deploy(self, manifest: str | Path, deployment: str | Path | None = None,
               params: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> None:
        """Deploy a wskdeploy manifest onto this server (raises ManifestError/DeployError)."""
        client = self.client
        plan = load_plan(Path(manifest), Path(deployment) if deployment else None, params,
                         environ, kinds=client.kinds())
        apply(plan, client, echo=lambda _msg: None)

    def invoke(self, name: str, params: Any = None, *, blocking: bool = True, result: bool = True,
               timeout_ms: int | None = None) -> tuple[int, Any]:
        """POST /namespaces/_/actions/<name>; returns (status, JSON body)."""
        query = f"blocking={str(blocking).lower()}&result={str(result).lower()}"
        if timeout_ms is not None:
            query += f"&timeout={timeout_ms}"
        return self.client.request("POST", f"/api/v1/namespaces/_/actions/{name}", params or {}, query)

    def web(self, path: str, *, method: str = "GET", query: str = "", body: bytes = b"",
            headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """Call ``/api/v1/web/guest/<path>``; returns (status, headers, raw body)."""
        import requests

        url = f"{self.api_host}/api/v1/web/guest/{path}" + (f"?{query}" if query else "")
        resp = requests.request(method, url, data=body or None, headers=dict(headers or {}), timeout=70)
        return resp.status_code, dict(resp.headers), resp.content

    def activation(self, activation_id: str) -> tuple[int, Any]:
        return self.client.request("GET", f"/api/v1/namespaces/_/activations/{activation_id}")


def _wskprops(state_dir: Path) -> dict[str, str]:
    lines = (Path(state_dir) / ".wskprops").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


class Conn:
    """One keep-alive HTTP/1.1 connection to a localwhisk, as a client SDK would hold.

    For benches that time the server: plain ``http.client``, so no client
    library's own overhead is in the figures (``Server.web`` and the CLI use
    requests).
    """

    def __init__(self, api_host: str, auth: str) -> None:
        u = urlparse(api_host)
        self.http = http.client.HTTPConnection(u.hostname, u.port, timeout=70)
        self.headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode(),
                        "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        self.http.request(method, path, body=None if body is None else json.dumps(body), headers=self.headers)
        resp = self.http.getresponse()
        return resp.status, resp.read()


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]
