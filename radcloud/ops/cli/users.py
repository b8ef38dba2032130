"""``radcloud users add|list|disable|enable|set-password|api-key``: accounts, for admins.

Talks to the Redis named by ``RADCLOUD_REDIS_URL`` (``set -a; .
.radcloud/radcloud.env; set +a`` after ``radcloud stack up``). Passwords are
read with a hidden prompt (or one line on stdin with ``--password-stdin``,
for scripts), never from the command line where ``ps`` and shell history
would keep them. A service account's API key is printed once, at creation.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from radcloud.core.errors import RadcloudError
from radcloud.core.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Manage who may log in (admins only: needs the Redis URL).")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def _store():
    import redis

    from radcloud.access.users import UserStore  # late: argon2 and redis, for the users commands only

    settings = Settings.load()
    return UserStore(redis.Redis.from_url(settings.redis_url.reveal(), socket_connect_timeout=3))


def _guarded(action):
    import redis

    try:
        return action()
    except RadcloudError as exc:
        err.print(f"[red]error:[/] {exc.message}", soft_wrap=True)
        raise typer.Exit(1)
    except redis.exceptions.RedisError as exc:
        err.print(f"[red]error:[/] cannot reach Redis ({type(exc).__name__}); is RADCLOUD_REDIS_URL set "
                  "and the stack up?", soft_wrap=True)
        raise typer.Exit(1)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt("password", hide_input=True, confirmation_prompt=True)


@app.command()
def add(name: str = typer.Argument(..., help="login name (a-z, 0-9, . _ -)"),
        role: str = typer.Option(..., "--role", "-r", help="clinician, researcher, admin or service"),
        password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from stdin")) -> None:
    """Add a user. People get a password; a service account gets an API key (printed once)."""
    password = None if role == "service" else _read_password(password_stdin)

    def do() -> None:
        store = _store()
        user = store.add(name, role, password)
        if role == "service":
            key = store.create_api_key(name)
            out.print(f"added service account {user.name}; its API key (shown once, keep it secret):")
            print(key)
        else:
            out.print(f"added {user.name} ({user.role})")

    _guarded(do)


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """List users with role and state (no secrets)."""
    users = _guarded(lambda: _store().list())
    if as_json:
        print(json.dumps([u.public() for u in users], indent=2))
        return
    table = Table("name", "role", "state", "login")
    for u in users:
        table.add_row(u.name, u.role, "disabled" if u.disabled else "active",
                      "password" if u.has_password else "API key")
    out.print(table)


@app.command()
def disable(name: str) -> None:
    """Lock a user out at once: login refused, tokens and API keys stop working."""
    _guarded(lambda: _store().disable(name))
    out.print(f"disabled {name}")


@app.command()
def enable(name: str) -> None:
    """Let a disabled user log in again (old tokens stay revoked)."""
    _guarded(lambda: _store().enable(name))
    out.print(f"enabled {name}")


@app.command("set-password")
def set_password(name: str, password_stdin: bool = typer.Option(False, "--password-stdin")) -> None:
    """Set a new password; the user's outstanding tokens stop working."""
    password = _read_password(password_stdin)
    _guarded(lambda: _store().set_password(name, password))
    out.print(f"password changed for {name}")


@app.command("api-key")
def api_key(name: str, revoke: Optional[str] = typer.Option(None, "--revoke", help="revoke this key instead")) -> None:
    """Issue another API key for a service account (or revoke one)."""
    if revoke:
        found = _guarded(lambda: _store().revoke_api_key(revoke))
        out.print("revoked" if found else "no such key")
        return
    key = _guarded(lambda: _store().create_api_key(name))
    print(key)
