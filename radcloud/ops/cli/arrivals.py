"""``radcloud arrivals watch``: fire ``radcloud-study-stable`` for every study that becomes stable in Orthanc.

Reads ``RADCLOUD_*`` (Orthanc, Redis, ``RADCLOUD_OW_API_HOST``/``RADCLOUD_OW_API_KEY``)
or, with ``--wskprops``, the OpenWhisk host and key from that file (the
local stack's is ``.radcloud/whisk/.wskprops``). Runs until interrupted; the
cursor lives in Redis, so a restart resumes where it stopped (docs/triggers.md).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Optional

import typer

from radcloud.ops.cli.common import err, fail
from radcloud.core.errors import RadcloudError

app = typer.Typer(no_args_is_help=True, help="Route studies as they arrive in Orthanc (OpenWhisk trigger).")


@app.command()
def watch(wskprops: Optional[Path] = typer.Option(None, help="OpenWhisk APIHOST/AUTH from this file"),
          from_start: bool = typer.Option(False, "--from-start",
                                          help="with no cursor yet, route Orthanc's whole change log "
                                               "(default: only what arrives from now on)"),
          trigger: str = typer.Option("radcloud-study-stable", help="the trigger to fire")) -> None:
    """Watch Orthanc's change log and fire the trigger once per stable study."""
    from radcloud.core import redisclient
    from radcloud.arrivals.watch import Watcher, trigger_fire
    from radcloud.ops.cli.client import read_wskprops
    from radcloud.core.openwhisk import OpenWhisk
    from radcloud.pacs.orthanc import Orthanc
    from radcloud.core.settings import Settings

    logging.getLogger("radcloud").setLevel(logging.INFO)
    try:
        settings = Settings.load()
        host, key = settings.ow_api_host, settings.ow_api_key.reveal()
        if wskprops is not None:
            props = read_wskprops(wskprops)
            host, key = props.get("APIHOST", host), props.get("AUTH", key)
        ow = OpenWhisk(host, key, settings.ow_namespace)
        watcher = Watcher(Orthanc.from_settings(settings), redisclient.client(settings, redisclient.PROGRESS),
                          trigger_fire(ow, trigger), stable_age_s=settings.arrivals_stable_age_s,
                          from_start=from_start)
    except RadcloudError as exc:
        fail(exc)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    err.print(f"watching {settings.orthanc_url} for stable studies; firing {trigger} on {host}")
    watcher.run(stop, poll_s=settings.arrivals_poll_s)
    err.print(f"stopped after {watcher.fired} arrival(s)")
