"""What every API command of the CLI shares: options, the client, output and exit codes.

Exit codes (documented in docs/api.md, relied upon by scripts):

====  =====================================================================
0     done
1     failure: the API, a service or a download failed (message says what)
2     usage: a bad option or a request the API refused as invalid (400)
3     a watched job or pull ended but did not succeed (failed/partial/cancelled)
4     not authenticated or not allowed (401/403): run ``radcloud login``
5     gave up waiting (``--timeout``) while the job still runs
====  =====================================================================
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console

from radcloud.ops.cli.client import ApiError, Client, load_token, resolve_api, token_file
from radcloud.core.errors import RadcloudError

OK, FAILURE, USAGE, NOT_SUCCEEDED, AUTH, TIMEOUT = 0, 1, 2, 3, 4, 5

# Piped output is not cut at 80 columns: UIDs in tables must survive `| grep`.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True, highlight=False)

API_OPTION = typer.Option(None, "--api", help="web actions URL prefix (default $RADCLOUD_API_URL, "
                          "else the local stack's localwhisk)")
STATE_OPTION = typer.Option(None, "--state-dir", help="local stack state dir (default $RADCLOUD_STATE_DIR "
                            "or ./.radcloud)")
JSON_OPTION = typer.Option(False, "--json", help="machine-readable output on stdout")


def state_dir(option: Optional[Path]) -> Path:
    if option:
        return option
    if os.environ.get("RADCLOUD_STATE_DIR"):
        return Path(os.environ["RADCLOUD_STATE_DIR"])
    return Path.cwd() / ".radcloud"


def client(api: Optional[str], state: Optional[Path], *, need_auth: bool = True) -> Client:
    """A client for the resolved API with the best credential available."""
    environ = dict(os.environ)
    root = state_dir(state)
    try:
        base = resolve_api(api, environ, root)
    except ApiError as exc:
        fail(exc)
    api_key = environ.get("RADCLOUD_API_KEY")
    token = environ.get("RADCLOUD_TOKEN") or (None if api_key else load_token(token_file(environ, root), base))
    if need_auth and not token and not api_key:
        fail(ApiError(401, "unauthorized", f"not logged in to {base}: run `radcloud login` "
                      "(or set RADCLOUD_TOKEN / RADCLOUD_API_KEY)"))
    return Client(base, token, api_key=api_key)


def exit_code(exc: BaseException) -> int:
    status = getattr(exc, "status", 0)
    if status in (401, 403):
        return AUTH
    if status in (400, 404, 413, 422) and isinstance(exc, ApiError):
        return USAGE
    return FAILURE


def fail(exc: BaseException | str, code: int | None = None) -> NoReturn:
    """One line on stderr and the exit code that means something."""
    message = exc if isinstance(exc, str) else getattr(exc, "message", None) or str(exc)
    where = f" ({exc.field})" if isinstance(exc, ApiError) and exc.field and exc.field not in message else ""
    err.print(f"[red]error:[/] {message}{where}", soft_wrap=True, markup=True, highlight=False)
    raise typer.Exit(code if code is not None else exit_code(exc if not isinstance(exc, str) else Exception()))


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def guarded(fn):
    """Run ``fn()``; API and radcloud errors become one line and an exit code."""
    try:
        return fn()
    except (ApiError, RadcloudError) as exc:
        fail(exc)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``--param k=v`` (repeatable); values are JSON when they parse (numbers, true), else strings."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            fail(f"--param {pair!r}: expected NAME=VALUE", USAGE)
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params
