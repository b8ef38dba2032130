"""``radcloud stack up|down|status|logs|seed``: the local stack from the shell.

Errors are one line on stderr (plus the last log lines when a service
crashed) and a non-zero exit: 1 for a stack failure, 2 for a usage error.
Secrets are never printed; ``up`` says where the credentials file is.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from radcloud.core.errors import RadcloudError
from radcloud.ops.stack import process
from radcloud.ops.stack.state import ALL_SERVICES, DEFAULT_SERVICES, SLURM_SERVICES, redact

app = typer.Typer(no_args_is_help=True, help="Start, inspect and stop the local Orthanc + Redis + S3 (+ localwhisk) stack.")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

STATE_DIR_HELP = "state directory (default: $RADCLOUD_STATE_DIR or ./.radcloud)"


def default_state_dir(environ: dict[str, str] | None = None, cwd: Path | None = None) -> Path:
    environ = dict(os.environ) if environ is None else environ
    if environ.get("RADCLOUD_STATE_DIR"):
        return Path(environ["RADCLOUD_STATE_DIR"])
    return (cwd or Path.cwd()) / ".radcloud"


def _stack(state_dir: Optional[Path], port_offset: Optional[int] = None, timeout: float = 60.0) -> Any:
    from radcloud.ops.stack import Ports, Stack, StackError  # late: the orchestrator's imports are heavy

    root = state_dir or default_state_dir()
    if port_offset is None:
        return Stack(root, timeout_s=timeout)
    try:
        ports = Ports.standard(port_offset)
    except ValueError as exc:
        raise StackError(str(exc)) from None
    return Stack(root, ports, timeout_s=timeout)


def _guarded(fn: Any) -> Any:
    """``fn()``; a radcloud error becomes its message, the log's last lines, and exit code 1."""
    try:
        return fn()
    except RadcloudError as exc:
        _fail(exc)


def _fail(exc: RadcloudError) -> None:
    err.print(f"[red]error:[/] {exc.message}", soft_wrap=True)
    tail = getattr(exc, "tail", "")
    if tail:
        err.print(f"[dim]last lines of {getattr(exc, 'log', 'the log')}:[/]", soft_wrap=True)
        for line in tail.splitlines():
            err.print("  " + line, markup=False, soft_wrap=True)
    raise typer.Exit(1)


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


@app.command()
def up(
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", help=STATE_DIR_HELP),
    port_offset: Optional[int] = typer.Option(
        None, "--port-offset", help="standard ports + this offset (default 10000: Orthanc 18042/14242, "
        "Redis 16379, S3 18333); remembered in the state dir"),
    with_pacs: bool = typer.Option(False, "--with-pacs", help="also start a second Orthanc acting as a hospital PACS"),
    with_whisk: bool = typer.Option(False, "--with-whisk", help="also start localwhisk (the OpenWhisk API; "
                                    "`radcloud deploy --local` deploys radcloud onto it)"),
    with_arrivals: bool = typer.Option(False, "--with-arrivals", help="also start localwhisk and the arrivals "
                                       "watcher: studies that become stable in Orthanc fire radcloud-study-stable "
                                       "(docs/triggers.md)"),
    with_slurm: bool = typer.Option(False, "--with-slurm", help="also start a one-node Slurm cluster (munge, "
                                    "slurmctld, slurmd, slurmrestd with JWT) for plugins too big for an action"),
    install: bool = typer.Option(True, "--install/--no-install", help="install missing binaries (root + apt only)"),
    timeout: float = typer.Option(60.0, "--timeout", help="seconds to wait for each service's health"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Start Orthanc, Redis and SeaweedFS S3 (a no-op for what already runs)."""
    services = (*DEFAULT_SERVICES, *(["pacs"] if with_pacs else []), *(["whisk"] if with_whisk or with_arrivals else []),
                *(["arrivals"] if with_arrivals else []),
                *(SLURM_SERVICES if with_slurm else []))
    started = time.perf_counter()

    def progress(service: str, event: str) -> None:
        if not as_json:
            err.print(f"  {service:<8} {event}")

    stack = _guarded(lambda: _stack(state_dir, port_offset, timeout))
    endpoints = _guarded(lambda: stack.up(services, install_missing=install, progress=progress))
    seconds = round(time.perf_counter() - started, 2)
    noop = all(v == "already running" for v in stack.last_up.values())
    if as_json:
        _emit_json({"services": stack.last_up, "already_running": noop, "seconds": seconds,
                    "endpoints": endpoints.public(), "env_file": str(stack.state.env_file)})
        return
    out.print("already running" if noop else f"stack up in {seconds} s")
    pub = endpoints.public()
    table = Table(show_header=True, header_style="bold")
    for col in ("service", "endpoint", "user / key"):
        table.add_column(col)
    for name in services:
        if name in pub["orthanc"]:
            o = pub["orthanc"][name]
            table.add_row(name, f"{o['url']}  DICOM {o['aet']}@{o['dicom']}", f"{o['user']} / {o['password']}")
    if "redis" in services:
        table.add_row("redis", f"redis://{pub['redis']['address']}", "*** (in the URL)")
    if "s3" in services:
        table.add_row("s3", f"{pub['s3']['endpoint']}  bucket {pub['s3']['bucket']}",
                      f"{pub['s3']['access_key']} / ***")
    if "whisk" in services:
        table.add_row("whisk", f"{pub['whisk']['api_host']}  web {pub['whisk']['web']}",
                      f"*** ({stack.state.whisk_dir / '.wskprops'})")
    if with_arrivals:
        table.add_row("arrivals", "Orthanc's stable studies -> trigger radcloud-study-stable",
                      f"*** ({stack.state.whisk_dir / '.wskprops'})")
    if with_slurm:
        table.add_row("slurm", f"{pub['slurm']['url']}  partition {pub['slurm']['partition']}",
                      f"{pub['slurm']['user']} / *** (JWT)")
    out.print(table)
    out.print(f"secrets: {endpoints.credentials_file} (mode 0600)")
    out.print(f"env for tools: set -a; . {stack.state.env_file}; set +a")


@app.command()
def down(
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", help=STATE_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Stop what `up` started (only the PIDs recorded in the state dir)."""
    started = time.perf_counter()
    stopped = _guarded(lambda: _stack(state_dir).down())
    seconds = round(time.perf_counter() - started, 2)
    if as_json:
        _emit_json({"stopped": stopped, "seconds": seconds})
    else:
        out.print(f"stopped {', '.join(stopped)} in {seconds} s" if stopped else "nothing was running")


@app.command()
def status(
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", help=STATE_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Show each service: up/down, health, endpoint. Exit 1 if a default service is down."""
    report = _guarded(lambda: _stack(state_dir).status())
    if as_json:
        _emit_json(report)
    else:
        table = Table(show_header=True, header_style="bold")
        for col in ("service", "state", "pid", "endpoint", "log"):
            table.add_column(col)
        for name, s in report.items():
            state = ("[green]up[/]" if s["healthy"] else "[yellow]up, not healthy[/]") if s["running"] else "[red]down[/]"
            table.add_row(name, state, str(s["pid"] or ""), s["endpoint"], s["log"])
        out.print(table)
    if not all(report[n]["healthy"] for n in DEFAULT_SERVICES):
        raise typer.Exit(1)


@app.command()
def logs(
    service: Optional[str] = typer.Argument(None, help=f"one of {', '.join(ALL_SERVICES)} (default: all)"),
    lines: int = typer.Option(20, "--lines", "-n", help="how many last lines"),
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", help=STATE_DIR_HELP),
) -> None:
    """Print the last lines of a service's log (or of every service's)."""
    if service is not None and service not in ALL_SERVICES:
        err.print(f"[red]error:[/] unknown service {service!r}; known: {', '.join(ALL_SERVICES)}")
        raise typer.Exit(2)
    stack = _stack(state_dir)
    # Services are configured not to log secrets; this is the last filter in case one does.
    secrets = stack.state.secret_values()
    for name in [service] if service else ALL_SERVICES:
        path = stack.state.log(name)
        if not path.exists():
            if service:
                err.print(f"[red]error:[/] no log for {name} yet ({path})")
                raise typer.Exit(1)
            continue
        out.print(f"[bold]==> {path} <==[/]")
        text = redact(process.tail(path, lines), secrets)
        if text:
            out.print(text, markup=False, highlight=False, soft_wrap=True)


@app.command()
def seed(
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", help=STATE_DIR_HELP),
    workers: int = typer.Option(4, "--workers", min=1, max=32, help="upload threads"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Load the sample studies into the stack's Orthanc (idempotent)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from radcloud.ops.samples.seed import seed_orthanc  # the sample generator is heavy: load on demand

    from radcloud.ops.stack import StackError

    def seed() -> dict[str, Any]:
        stack = _stack(state_dir)
        if not stack.running("orthanc"):
            raise StackError(f"orthanc is not running (state dir {stack.state.root}); "
                             "run `radcloud stack up` first")
        settings = stack.endpoints().settings()
        if as_json:
            return seed_orthanc(settings, workers=workers)
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=err, transient=False) as bar:
            task = bar.add_task("seeding Orthanc", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            return seed_orthanc(settings, workers=workers, progress=progress)

    report = _guarded(seed)
    if as_json:
        _emit_json(report)
    else:
        out.print(", ".join(f"{k}: {v}" for k, v in report.items()))
