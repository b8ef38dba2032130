"""The CLI's HTTP client: radcloud's web actions, called exactly as the web UI and ChRIS call them.

Where it talks to (first found wins):

1. ``--api URL`` — the web actions' prefix, e.g. ``https://whisk.example/api/v1/web/ns/radcloud/``;
2. ``$RADCLOUD_API_URL``;
3. the local stack's localwhisk (``<state dir>/whisk/.wskprops``).

Who it is: ``$RADCLOUD_TOKEN`` (a login token) or ``$RADCLOUD_API_KEY`` (a
service account's key), else the token ``radcloud login`` cached (mode
0600) in ``<state dir>/token.json`` when the state dir exists, otherwise in
``~/.config/radcloud/token.json``. A cached token is only sent to the API
it was issued by.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

WEB_PATH = "/api/v1/web/guest/radcloud/"
TIMEOUT_S = 75.0  # above the actions' 60 s limit: the action's own error arrives first


class ApiError(Exception):
    """A web action refused the request, or could not be reached (status 0)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def read_wskprops(path: Path) -> dict[str, str]:
    props: dict[str, str] = {}
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                props[key.strip()] = value.strip()
    except FileNotFoundError:
        pass
    return props


def resolve_api(api: str | None, environ: Mapping[str, str], state_dir: Path) -> str:
    """The web actions' URL prefix (ends with ``/``); raises ApiError when there is none."""
    url = api or environ.get("RADCLOUD_API_URL")
    if not url:
        host = read_wskprops(state_dir / "whisk" / ".wskprops").get("APIHOST")
        if not host:
            raise ApiError(0, "config", "no radcloud API to talk to: pass --api URL, set RADCLOUD_API_URL, "
                           "or start the local one with `radcloud stack up --with-whisk`")
        url = host.rstrip("/") + WEB_PATH
    return url.rstrip("/") + "/"


def token_file(environ: Mapping[str, str], state_dir: Path) -> Path:
    if environ.get("RADCLOUD_TOKEN_FILE"):
        return Path(environ["RADCLOUD_TOKEN_FILE"])
    if state_dir.is_dir():
        return state_dir / "token.json"
    return Path(environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "radcloud" / "token.json"


def load_token(path: Path, api: str, *, now: float | None = None) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    if data.get("api") != api or float(data.get("expires_at", 0)) <= (now or time.time()):
        return None
    return data.get("token")


def save_token(path: Path, api: str, token: str, expires_in: int, user: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"api": api, "token": token, "expires_at": time.time() + expires_in, "user": dict(user)}, fh)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class Client:
    """Calls ``<base><action>[/<path>]`` with the bearer token; answers the JSON body.

    ``transport`` is an ``httpx`` transport (tests pass ``httpx.MockTransport``).
    """

    def __init__(self, base: str, token: str | None = None, *, api_key: str | None = None,
                 timeout_s: float = TIMEOUT_S, transport: httpx.BaseTransport | None = None) -> None:
        self.base = base.rstrip("/") + "/"
        headers = {"Accept": "application/json", "User-Agent": "radcloud-cli"}
        if api_key:
            headers["X-Api-Key"] = api_key
        elif token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(headers=headers, timeout=timeout_s, transport=transport,
                                 follow_redirects=False)
        # Presigned URLs are the credential themselves: never send them our token.
        self.plain = httpx.Client(timeout=timeout_s, transport=transport)

    def call(self, action: str, *, method: str = "GET", path: str = "",
             params: Mapping[str, Any] | None = None, body: Any = None) -> Any:
        url = self.base + action + (f"/{path.strip('/')}" if path else "")
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        try:
            resp = self.http.request(method, url, params=query, json=body)
        except httpx.TimeoutException:
            raise ApiError(0, "timeout", f"{action}: no answer from {self.base} within "
                           f"{self.http.timeout.read:.0f} s") from None
        except httpx.HTTPError as exc:
            raise ApiError(0, "network", f"cannot reach {self.base} ({type(exc).__name__}); is the API up? "
                           "(`radcloud stack status`, or check --api)") from None
        return _answer(action, resp)

    def download(self, url: str, dest: Path, on_bytes: Any = None) -> tuple[int, str]:
        """Stream a presigned URL (no auth header: the URL is the credential) → (bytes, md5)."""
        import hashlib

        md5, size = hashlib.md5(), 0
        tmp = dest.with_name(dest.name + ".part")
        try:
            with self.plain.stream("GET", url) as resp:
                if resp.status_code != 200:
                    raise ApiError(resp.status_code, "download", f"download of {dest.name} answered "
                                   f"HTTP {resp.status_code}; the link may have expired, run results again")
                with open(tmp, "wb") as fh:
                    for chunk in resp.iter_bytes(1 << 16):
                        fh.write(chunk)
                        md5.update(chunk)
                        size += len(chunk)
                        if on_bytes:
                            on_bytes(len(chunk))
        except httpx.HTTPError as exc:
            tmp.unlink(missing_ok=True)
            raise ApiError(0, "network", f"download of {dest.name} failed ({type(exc).__name__})") from None
        os.replace(tmp, dest)
        return size, md5.hexdigest()

    def close(self) -> None:
        self.http.close()
        self.plain.close()


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _answer(action: str, resp: httpx.Response) -> Any:
    try:
        data = resp.json() if resp.content else None
    except ValueError:
        data = None
    if resp.status_code in (301, 302, 303) and "login" in resp.headers.get("location", ""):
        raise ApiError(401, "unauthorized", "not logged in: run `radcloud login`")
    if resp.status_code >= 400 or resp.status_code in (301, 302, 303):
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            raise ApiError(resp.status_code, str(err.get("code") or "error"),
                           str(err.get("message") or resp.reason_phrase), err.get("field"))
        text = err if isinstance(err, str) else resp.text[:200]
        raise ApiError(resp.status_code, "http", f"{action} answered HTTP {resp.status_code}: {text}".strip())
    return data
