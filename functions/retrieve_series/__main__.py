"""Action ``retrieve-series``: stage one series (invoked by ``retrieve``, not web-exported).

Params: ``retrieve_id``, ``series`` (``{StudyInstanceUID, SeriesInstanceUID,
orthanc_id, total}``), ``modality``, ``layout``, ``pacs_name``, ``start``.

It stages until its time budget (the activation's deadline minus a margin)
runs out, then invokes itself non-blocking for the rest (``start`` = next
instance) — so a series of any size fits OpenWhisk's 60 s default timeout.
Its outcome is always written to the retrieve's record in Redis. Each hop
records its own activation id (``__OW_ACTIVATION_ID``) before staging, and the
id of the hop it invokes, so the retrieve's status can tell a dead hop from a
live one.
"""

import os
import time

from radcloud.action import run
from radcloud.errors import BadRequest, RadcloudError
from radcloud.openwhisk import OpenWhisk
from radcloud.orthanc import Orthanc
from radcloud.progress import Progress
from radcloud.retrieve import Stager
from radcloud.storage import ObjectStore

SELF = "retrieve-series"
MARGIN_S = 15.0        # left for the manifest, the record and the re-invoke
DEFAULT_BUDGET_S = 40.0


def budget_s(environ=os.environ, now=time.time):
    """Seconds this activation may spend staging (``__OW_DEADLINE`` is epoch ms)."""
    deadline = environ.get("__OW_DEADLINE")
    if not deadline:
        return DEFAULT_BUDGET_S
    return max(1.0, float(deadline) / 1000.0 - now() - MARGIN_S)


def handle(request, settings, principal, services=None, environ=os.environ):
    services = services or {}
    params = request.params
    rid, series = params.get("retrieve_id"), params.get("series")
    if not isinstance(rid, str) or not isinstance(series, dict) or not series.get("SeriesInstanceUID"):
        raise BadRequest("retrieve-series needs retrieve_id and series", field="series")
    start = int(params.get("start") or 0)
    stager = Stager(services.get("orthanc") or Orthanc.from_settings(settings),
                    services.get("store") or ObjectStore.from_settings(settings),
                    services.get("progress") or Progress.from_settings(settings),
                    layout=params.get("layout") or "uid", pacs_name=params.get("pacs_name") or "radcloud",
                    workers=settings.retrieve_workers)
    if environ.get("__OW_ACTIVATION_ID"):
        stager.progress.record_activation(rid, series["SeriesInstanceUID"], environ["__OW_ACTIVATION_ID"])
    result = stager.stage(rid, series, modality=params.get("modality"), start=start,
                          budget_s=services.get("budget_s") or budget_s())
    if result.get("next") is not None:
        uid = series["SeriesInstanceUID"]
        try:
            whisk = services.get("whisk") or OpenWhisk.from_settings(settings)
            action = f"{settings.ow_package}/{SELF}" if settings.ow_package else SELF
            answer = whisk.invoke(action, {**params, "start": result["next"], "modality": None},
                                  blocking=False)
            stager.progress.record_activation(rid, uid, answer.get("activationId", ""))
        except RadcloudError as exc:  # never leave the series looking alive
            stager.progress.update(rid, uid, state="failed",
                                   reason=f"could not continue the series: {exc.message}; rerun the retrieve")
            result = {**result, "state": "failed", "next": None}
    return {"retrieve_id": rid, "SeriesInstanceUID": series["SeriesInstanceUID"],
            **{k: v for k, v in result.items() if k != "errors"}, "errors": len(result.get("errors") or [])}


def main(args):
    return run(args, handle, roles=("service", "admin"))
