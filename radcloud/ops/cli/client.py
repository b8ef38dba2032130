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

A busy namespace (OpenWhisk's 429, or a 503) is waited out with backoff and
jitter, honouring ``Retry-After``, for up to ``BUSY_BUDGET_S`` seconds
(:mod:`radcloud.core.retry`); only then does a call fail, with a message saying so.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # loaded by Client: commands that never call the API don't pay for requests
    import requests

WEB_PATH = "/api/v1/web/guest/radcloud/"
TIMEOUT_S = 75.0  # above the actions' 60 s limit: the action's own error arrives first
CONNECT_TIMEOUT_S = 10.0
BUSY_BUDGET_S = 120.0  # a full namespace frees slots within seconds; past two minutes, say so


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

    ``adapter`` replaces the HTTP transport (a ``requests`` adapter; tests
    pass a fake). ``busy_budget_s`` bounds how long 429/503 are retried.
    """

    def __init__(self, base: str, token: str | None = None, *, api_key: str | None = None,
                 timeout_s: float = TIMEOUT_S, busy_budget_s: float = BUSY_BUDGET_S,
                 adapter: requests.adapters.BaseAdapter | None = None) -> None:
        from radcloud.core import retry

        self.base = base.rstrip("/") + "/"
        self.timeout_s, self.busy_budget_s = timeout_s, busy_budget_s
        self.http = retry.session(budget_s=busy_budget_s)
        self.http.headers.update({"Accept": "application/json", "User-Agent": "radcloud-cli"})
        if api_key:
            self.http.headers["X-Api-Key"] = api_key
        elif token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        # Presigned URLs are the credential themselves: never send them our token.
        self.plain = retry.session(budget_s=busy_budget_s)
        for s in (self.http, self.plain):
            s.trust_env = False  # no ~/.netrc credentials on presigned URLs, no proxy surprises
            if adapter is not None:
                s.mount("http://", adapter)
                s.mount("https://", adapter)

    def call(self, action: str, *, method: str = "GET", path: str = "",
             params: Mapping[str, Any] | None = None, body: Any = None) -> Any:
        import requests

        url = self.base + action + (f"/{path.strip('/')}" if path else "")
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        try:
            resp = self.http.request(method, url, params=query, json=body, allow_redirects=False,
                                     timeout=(CONNECT_TIMEOUT_S, self.timeout_s))
        except requests.Timeout:
            raise ApiError(0, "timeout", f"{action}: no answer from {self.base} within "
                           f"{self.timeout_s:.0f} s") from None
        except requests.RequestException as exc:
            raise ApiError(0, "network", f"cannot reach {self.base} ({type(exc).__name__}); is the API up? "
                           "(`radcloud stack status`, or check --api)") from None
        return _answer(action, resp, self.busy_budget_s)

    def download(self, url: str, dest: Path, on_bytes: Any = None) -> tuple[int, str]:
        """Stream a presigned URL (no auth header: the URL is the credential) → (bytes, md5)."""
        import hashlib

        import requests

        md5, size = hashlib.md5(), 0
        tmp = dest.with_name(dest.name + ".part")
        try:
            with self.plain.get(url, stream=True, timeout=(CONNECT_TIMEOUT_S, self.timeout_s)) as resp:
                if resp.status_code != 200:
                    raise ApiError(resp.status_code, "download", f"download of {dest.name} answered "
                                   f"HTTP {resp.status_code}; the link may have expired, run results again")
                with open(tmp, "wb") as fh:
                    for chunk in resp.iter_content(1 << 16):
                        fh.write(chunk)
                        md5.update(chunk)
                        size += len(chunk)
                        if on_bytes:
                            on_bytes(len(chunk))
        except requests.RequestException as exc:
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


def _answer(action: str, resp: requests.Response, budget_s: float = BUSY_BUDGET_S) -> Any:
    try:
        data = resp.json() if resp.content else None
    except ValueError:
        data = None
    if resp.status_code in (301, 302, 303) and "login" in resp.headers.get("location", ""):
        raise ApiError(401, "unauthorized", "not logged in: run `radcloud login`")
    err = data.get("error") if isinstance(data, dict) else None
    if resp.status_code in (429, 503) and not isinstance(err, dict):
        # OpenWhisk's own refusal, still there after the retry budget (radcloud.core.retry).
        raise ApiError(resp.status_code, "busy", f"{action}: radcloud's OpenWhisk namespace stayed busy "
                       f"(HTTP {resp.status_code}{': ' + str(err) if err else ''}) through "
                       f"{budget_s:.0f} s of retries; try again later, or ask the admin to raise "
                       "the namespace's concurrency limit")
    if resp.status_code >= 400 or resp.status_code in (301, 302, 303):
        if isinstance(err, dict):
            raise ApiError(resp.status_code, str(err.get("code") or "error"),
                           str(err.get("message") or resp.reason), err.get("field"))
        text = err if isinstance(err, str) else resp.text[:200]
        raise ApiError(resp.status_code, "http", f"{action} answered HTTP {resp.status_code}: {text}".strip())
    return data
