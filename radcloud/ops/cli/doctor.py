"""``radcloud doctor``: is this deployment healthy? A table of ok/FAIL with what to do.

Settings come from ``$RADCLOUD_*`` (a production admin's shell, as for
``radcloud deploy``) over the local stack's values when its state dir exists;
the OpenWhisk API host/key from ``--apihost/--auth``, ``$RADCLOUD_OW_API_HOST``
/ ``$RADCLOUD_OW_API_KEY``, the local localwhisk, then ``~/.wskprops``.
Exit 1 if any check fails.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from radcloud.ops.cli import common
from radcloud.ops.cli.client import read_wskprops
from radcloud.ops.cli.common import JSON_OPTION, STATE_OPTION, out


def _environ(root: Path) -> dict[str, str]:
    environ: dict[str, str] = {}
    if (root / "credentials.json").exists():
        from radcloud.ops.stack import Stack

        environ.update(Stack(root).endpoints().env())
    environ.update({k: v for k, v in os.environ.items() if k.startswith("RADCLOUD_")})
    return environ


def doctor(
    apihost: Optional[str] = typer.Option(None, "--apihost", help="OpenWhisk API host"),
    auth: Optional[str] = typer.Option(None, "--auth", envvar="RADCLOUD_OW_AUTH", help="namespace key uuid:key"),
    state: Optional[Path] = STATE_OPTION, as_json: bool = JSON_OPTION,
) -> None:
    """Check OpenWhisk + deployed actions, Orthanc, S3 (and that it is not public), Redis AOF, token secret."""
    from radcloud.ops import deploy as deployer
    from radcloud.ops import doctor as checks
    from radcloud.core.errors import RadcloudError
    from radcloud.core.settings import Settings

    root = common.state_dir(state)
    try:
        settings = Settings.load({}, environ=_environ(root))
    except RadcloudError as exc:
        common.fail(exc)
    local = read_wskprops(root / "whisk" / ".wskprops")
    home = read_wskprops(Path(os.environ.get("WSK_CONFIG_FILE") or Path.home() / ".wskprops"))
    host = apihost or settings.ow_api_host or local.get("APIHOST") or home.get("APIHOST") or ""
    key = auth or settings.ow_api_key.reveal() or local.get("AUTH") or home.get("AUTH") or ""
    expected = deployer.manifest_actions(deployer.load_manifest())
    results = checks.run_all(settings, host, key, expected)
    failed = [c for c in results if not c.ok]
    if as_json:
        common.emit_json({"ok": not failed, "checks": [c.to_dict() for c in results]})
    else:
        table = Table("check", "", "found", "what to do", header_style="bold")
        for c in results:
            table.add_row(c.name, "[green]ok[/]" if c.ok else "[red]FAIL[/]", c.detail, c.fix)
        out.print(table)
        out.print(f"{len(failed)} problem(s)" if failed else "all checks passed")
    if failed:
        raise typer.Exit(common.FAILURE)
