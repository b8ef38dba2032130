"""Action ``retrieve-series``: stage one series (invoked by ``retrieve``, not web-exported).

Params: ``retrieve_id``, ``series`` (``{StudyInstanceUID, SeriesInstanceUID,
orthanc_id, total}``), ``modality``, ``layout``, ``pacs_name``, ``start``,
``move_job`` and ``move_started`` (a C-MOVE being waited for).

It stages until its time budget (the activation's deadline minus a margin)
runs out, then invokes itself non-blocking for the rest (``start`` = next
instance) — so a series of any size fits OpenWhisk's 60 s default timeout.
A C-MOVE that Orthanc runs as a job (Orthanc >= 1.11) is waited for the same
way, hop after hop, for at most :data:`MOVE_LIMIT_S` in all.
Its outcome is always written to the retrieve's record in Redis. Each hop
records its own activation id (``__OW_ACTIVATION_ID``) before staging, and the
id of the hop it invokes, so the retrieve's status can tell a dead hop from a
live one.
"""

import os
import time

from radcloud.api.action import run
from radcloud.api import parse
from radcloud.api.models import RetrieveSeriesRequest
from radcloud.core.openwhisk import OpenWhisk
from radcloud.pacs.orthanc import Orthanc
from radcloud.work.executors import as_executor
from radcloud.work.lifecycle import FAILED
from radcloud.work.retrieves import Progress, continue_series
from radcloud.work.retrieve import Stager, series_key
from radcloud.store.storage import ObjectStore

MARGIN_S = 15.0        # left for the manifest, the record and the re-invoke
DEFAULT_BUDGET_S = 40.0
MOVE_LIMIT_S = 1800.0  # a C-MOVE still running after this is failed: the remote PACS is stuck


def budget_s(environ=os.environ, now=time.time):
    """Seconds this activation may spend staging (``__OW_DEADLINE`` is epoch ms)."""
    deadline = environ.get("__OW_DEADLINE")
    if not deadline:
        return DEFAULT_BUDGET_S
    return max(1.0, float(deadline) / 1000.0 - now() - MARGIN_S)


def handle(request, settings, principal, services=None, environ=os.environ):
    services = services or {}
    params = request.params
    hop = parse(RetrieveSeriesRequest, params)
    rid, series, start, move_job = hop.retrieve_id, params["series"], hop.start, hop.move_job
    move_started = hop.move_started or time.time()
    stager = Stager(services.get("orthanc") or Orthanc.from_settings(settings),
                    services.get("store") or ObjectStore.from_settings(settings),
                    services.get("progress") or Progress.from_settings(settings),
                    layout=params.get("layout") or "uid", pacs_name=params.get("pacs_name") or "radcloud",
                    workers=settings.retrieve_workers)
    if environ.get("__OW_ACTIVATION_ID"):
        stager.progress.record_activation(rid, series_key(series), environ["__OW_ACTIVATION_ID"])
    result = stager.stage(rid, series, modality=params.get("modality"), start=start,
                          budget_s=services.get("budget_s") or budget_s(), move_job=move_job)
    uid = series_key(series)
    if result.get("move_job") and time.time() - move_started > MOVE_LIMIT_S:
        reason = (f"the C-MOVE from {params.get('modality')} was still running after {MOVE_LIMIT_S / 60:.0f} "
                  f"minutes (Orthanc job {result['move_job']}); check the remote PACS, then rerun the retrieve")
        stager.progress.update(rid, uid, state=FAILED, reason=reason)
        result = {**result, "state": FAILED, "next": None, "reason": reason}
    if result.get("next") is not None:
        if result.get("move_job"):  # the same move, waited for by the next hop
            follow = {**params, "start": 0, "move_job": result["move_job"], "move_started": move_started}
        else:
            follow = {**params, "start": result["next"], "modality": None}
            follow.pop("move_job", None)
            follow.pop("move_started", None)
        executor = lambda: as_executor(services.get("whisk") or OpenWhisk.from_settings(settings),  # noqa: E731
                                       settings.ow_package)
        if not continue_series(stager.progress, executor, rid, uid, follow):
            result = {**result, "state": FAILED, "next": None}
    return {"retrieve_id": rid, "SeriesInstanceUID": series["SeriesInstanceUID"], "series_key": uid,
            **{k: v for k, v in result.items() if k != "errors"}, "errors": len(result.get("errors") or [])}


def main(args):
    return run(args, handle, roles=("service", "admin"))
