"""A minimal OpenWhisk REST client and the deploy step of ``localwhisk deploy``.

Deploying goes over the REST API only (PUT package/action ``?overwrite=true``),
so the same command deploys onto a real OpenWhisk. Credentials come from
flags, then the deployment file, then a ``.wskprops`` file (``APIHOST=``,
``AUTH=``, ``NAMESPACE=``), like wskdeploy. ``Transport`` is injectable: unit
tests pass ``Controller.handle`` and need no socket.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import requests

from localwhisk.manifest import DEFAULT_KINDS, Plan

# transport(method, url_path, query, headers, body) -> (status, body bytes)
Transport = Callable[[str, str, str, dict[str, str], bytes], tuple[int, bytes]]


class DeployError(Exception):
    pass


def read_wskprops(path: Path) -> dict[str, str]:
    props: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() and not key.strip().startswith("#"):
                props[key.strip().upper()] = value.strip()
    return props


def resolve_credentials(apihost: str | None, auth: str | None, namespace: str | None, plan: Plan,
                        wskprops: Path | None = None) -> tuple[str, str, str]:
    """Flags, then the deployment file, then .wskprops (``$WSK_CONFIG_FILE`` or ``~/.wskprops``)."""
    if wskprops is None:
        wskprops = Path(os.environ.get("WSK_CONFIG_FILE") or Path.home() / ".wskprops")
    props = read_wskprops(wskprops)
    host = apihost or plan.credentials.get("apihost") or props.get("APIHOST")
    key = auth or plan.credentials.get("auth") or props.get("AUTH")
    ns = namespace or plan.credentials.get("namespace") or props.get("NAMESPACE") or "_"
    if not host:
        raise DeployError("The API host is not configured.")
    if not key:
        raise DeployError("The authentication key is not configured.")
    if "://" not in host:
        local = host.split(":")[0] in ("localhost", "127.0.0.1", "[::1]")
        host = ("http://" if local else "https://") + host
    return host.rstrip("/"), key, ns


def http_transport(apihost: str, timeout_s: float = 60.0) -> Transport:
    def send(method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        url = apihost + path + (f"?{query}" if query else "")
        try:
            resp = requests.request(method, url, data=body if body or method in ("PUT", "POST") else None,
                                    headers=headers, timeout=timeout_s)
        except requests.ConnectionError as err:
            raise DeployError(f"Cannot reach the OpenWhisk API at {apihost}: {err}") from None
        return resp.status_code, resp.content
    return send


class WhiskClient:
    def __init__(self, transport: Transport, auth: str, namespace: str = "_") -> None:
        self._send = transport
        self._auth = "Basic " + base64.b64encode(auth.encode()).decode()
        self.auth_key = auth  # a feed's CREATE carries it (authKey), as wsk does
        self.namespace = namespace

    def request(self, method: str, path: str, body: Any = None, query: str = "") -> tuple[int, Any]:
        data = b"" if body is None else json.dumps(body).encode()
        headers = {"Authorization": self._auth, "Content-Type": "application/json",
                   "User-Agent": "localwhisk-deploy"}
        status, raw = self._send(method, path, query, headers, data)
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def kinds(self) -> tuple[str, ...]:
        """Runtime kinds from ``GET /``; wskdeploy falls back to a built-in list when that fails."""
        try:
            status, info = self.request("GET", "/")
        except DeployError:
            return DEFAULT_KINDS
        if status != 200 or not isinstance(info, dict) or not isinstance(info.get("runtimes"), dict):
            return DEFAULT_KINDS
        found = [r["kind"] for rs in info["runtimes"].values() for r in rs if isinstance(r, dict) and "kind" in r]
        defaults = [r["kind"] for rs in info["runtimes"].values() for r in rs
                    if isinstance(r, dict) and r.get("default") and str(r.get("kind", "")).startswith("python:")]
        ordered = defaults + [k for k in found if k not in defaults]
        return tuple(ordered + (["blackbox"] if "blackbox" not in ordered else []))

    def put(self, collection: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        url = f"/api/v1/namespaces/{quote(self.namespace)}/{collection}/{quote(path)}"
        return self.request("PUT", url, body, "overwrite=true")


def apply(plan: Plan, client: WhiskClient, echo: Callable[[str], None] = print) -> None:
    """PUT packages, actions, then sequences (retrying ones whose components come later), then
    triggers (registering each with its feed) and rules (activated)."""
    def put(entity, collection: str, label: str) -> tuple[int, Any]:
        echo(f"Deploying {label} [{entity.path}] ...")
        return client.put(collection, entity.path, entity.body)

    def check(entity, label: str, status: int, body: Any) -> None:
        if status != 200:
            msg = body.get("error") if isinstance(body, dict) else body
            raise DeployError(f"Error creating {label} [{entity.path}] with error message: {msg} "
                              f"and error code: {status}.")
        echo(f"{label.capitalize()} [{entity.path}] has been successfully deployed.")

    for pkg in plan.packages:
        check(pkg, "package", *put(pkg, "packages", "package"))
    for action in plan.actions:
        check(action, "action", *put(action, "actions", "action"))
    pending = list(plan.sequences)
    for _ in range(len(pending) + 1):  # each pass deploys at least one, or we stop
        deferred = []
        for seq in pending:
            status, body = put(seq, "actions", "sequence")
            if status == 400 and isinstance(body, dict) and body.get("error") == "Sequence component does not exist.":
                deferred.append((seq, status, body))
                continue
            check(seq, "sequence", status, body)
        if not deferred or len(deferred) == len(pending):
            for seq, status, body in deferred:
                check(seq, "sequence", status, body)
            break
        pending = [d[0] for d in deferred]
    for trigger in plan.triggers:
        check(trigger, "trigger", *put(trigger, "triggers", "trigger"))
        if trigger.feed:
            _feed_create(client, trigger, echo)
    for rule in plan.rules:
        check(rule, "rule", *put(rule, "rules", "rule"))
        status, body = client.request("POST", f"/api/v1/namespaces/{quote(client.namespace)}/rules/"
                                               f"{quote(rule.path)}", {"status": "active"})
        check(rule, "rule", status, body)


def _feed_create(client: WhiskClient, trigger: Any, echo: Callable[[str], None]) -> None:
    """Register the trigger with its feed: ``lifecycleEvent: CREATE`` as ``wsk trigger create --feed``.

    A redeploy creates it again; the feed replaces its registration (the alarms feed does).
    """
    parts = [p for p in trigger.feed.split("/") if p]
    ns, rest = (parts[0], parts[1:]) if len(parts) == 3 else (client.namespace, parts[-2:])
    own = client.namespace
    if own == "_":  # a feed provider outside this namespace needs its real name
        status, names = client.request("GET", "/api/v1/namespaces")
        own = names[0] if status == 200 and isinstance(names, list) and names else own
    url = f"/api/v1/namespaces/{quote(ns)}/actions/{quote('/'.join(rest))}"
    common = {"triggerName": f"/{own}/{trigger.path}", "authKey": client.auth_key}
    echo(f"Creating feed [{trigger.feed}] for trigger [{trigger.path}] ...")
    # As wskdeploy on a redeploy: the earlier registration goes first (its absence is no error).
    client.request("POST", url, {**common, "lifecycleEvent": "DELETE"}, "blocking=true")
    status, body = client.request("POST", url, {**trigger.feed_params, **common, "lifecycleEvent": "CREATE"},
                                  "blocking=true")
    if status != 200:
        result = body.get("response", {}).get("result", body) if isinstance(body, dict) else body
        msg = result.get("error", result) if isinstance(result, dict) else result
        raise DeployError(f"Error creating feed [{trigger.feed}] for trigger [{trigger.path}] with error message: "
                          f"{msg} and error code: {status}.")
    echo(f"Feed [{trigger.feed}] for trigger [{trigger.path}] has been successfully deployed.")
