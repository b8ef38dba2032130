"""``radcloud deploy``: deploy/manifest.yaml onto the local stack's localwhisk or any OpenWhisk.

* ``radcloud deploy --local`` — package inputs from the local stack, image
  names mapped to this checkout (the images file localwhisk was started
  with; rewritten and localwhisk restarted when the manifest names new ones);
* ``radcloud deploy --apihost H --auth K`` — any OpenWhisk; package inputs
  from ``$RADCLOUD_*`` (see docs/deploy.md), images as built and pushed;
* ``radcloud deploy --write-plugins`` — regenerate the manifest's
  ``plugin-<name>`` actions from plugins/*/descriptor.json.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional

import typer

from radcloud.ops.cli import common
from radcloud.ops.cli.client import read_wskprops
from radcloud.ops.cli.common import JSON_OPTION, STATE_OPTION, err, out
from radcloud.core.errors import RadcloudError


def deploy_local(state: Path, progress=lambda msg: None) -> dict[str, Any]:
    """Deploy onto the local stack's localwhisk; returns ``{apihost, actions, seconds}``."""
    from radcloud.ops import deploy as deployer
    from radcloud.ops.stack import Stack, StackError
    from radcloud.ops.stack import config

    stack = Stack(state)
    if not stack.running("whisk"):
        raise StackError(f"localwhisk is not running (state dir {stack.state.root}); "
                         "run `radcloud stack up --with-whisk` first", service="whisk")
    started = time.perf_counter()
    creds = stack.state.credentials_data()
    images_file = config.config_path(stack.state, "whisk")
    wanted = config.render_whisk_images(state=stack.state, ports=stack.ports, credentials=creds)
    if not images_file.exists() or images_file.read_text() != wanted:
        progress("the manifest names new images: restarting localwhisk")
        stack.restart("whisk")  # writes the images file again before starting
    props = read_wskprops(stack.state.whisk_dir / ".wskprops")
    env = {**stack.endpoints().env(), **deployer.local_image_env(os.environ)}
    progress(f"deploying deploy/manifest.yaml to {props['APIHOST']}")
    deployer.deploy(props["APIHOST"], props["AUTH"], env)
    actions = list(deployer.manifest_actions(deployer.load_manifest()))
    return {"apihost": props["APIHOST"], "actions": actions, "seconds": round(time.perf_counter() - started, 2)}


def deploy(
    local: bool = typer.Option(False, "--local", help="onto the local stack's localwhisk"),
    apihost: Optional[str] = typer.Option(None, "--apihost", help="OpenWhisk API host (else ~/.wskprops)"),
    auth: Optional[str] = typer.Option(None, "--auth", envvar="RADCLOUD_OW_AUTH",
                                       help="namespace key uuid:key (better: $RADCLOUD_OW_AUTH or ~/.wskprops)"),
    write_plugins: bool = typer.Option(False, "--write-plugins",
                                       help="regenerate the manifest's plugin actions from plugins/ and exit"),
    state: Optional[Path] = STATE_OPTION, as_json: bool = JSON_OPTION,
) -> None:
    """Deploy the actions, sequences and plugin actions of deploy/manifest.yaml."""
    from radcloud.ops import deploy as deployer  # late: yaml and the manifest tooling, for this command only

    if write_plugins:
        names = common.guarded(lambda: deployer.write_plugin_actions())
        common.emit_json({"plugin_actions": names}) if as_json else out.print(
            f"{deployer.MANIFEST}: {', '.join(names)}")
        return
    if local == bool(apihost or auth):
        common.fail("say where: --local, or --apihost H --auth K", common.USAGE)
    if local:
        with err.status("deploying to localwhisk ...", spinner="dots") if not as_json else nullcontext():
            report = common.guarded(lambda: deploy_local(common.state_dir(state),
                                                         progress=lambda m: err.print(f"  {m}")))
    else:
        props = read_wskprops(Path(os.environ.get("WSK_CONFIG_FILE") or Path.home() / ".wskprops"))
        host, key = apihost or props.get("APIHOST"), auth or props.get("AUTH")
        if not host or not key:
            common.fail("no OpenWhisk credentials: pass --apihost and --auth (or write ~/.wskprops)", common.USAGE)
        missing = [v for v in ("RADCLOUD_RUNTIME_IMAGE", "RADCLOUD_PLUGIN_IMAGE_PREFIX", "RADCLOUD_TOKEN_SECRET",
                               "RADCLOUD_REDIS_URL", "RADCLOUD_ORTHANC_URL") if not os.environ.get(v)]
        if missing:
            err.print(f"[yellow]warning:[/] not set: {', '.join(missing)} (see docs/deploy.md §4)")
        started = time.perf_counter()
        try:
            with err.status(f"deploying to {host} ...", spinner="dots") if not as_json else nullcontext():
                deployer.deploy(host, key, dict(os.environ))
        except RadcloudError as exc:
            common.fail(exc)
        report = {"apihost": host, "actions": list(deployer.manifest_actions(deployer.load_manifest())),
                  "seconds": round(time.perf_counter() - started, 2)}
    if as_json:
        common.emit_json(report)
    else:
        out.print(f"deployed {len(report['actions'])} actions to {report['apihost']} in {report['seconds']} s")
