"""Action ``retrieve``: stage image sets from the PACS into object storage.

POST ``{"StudyInstanceUID": uid | [uids]}`` and/or ``{"SeriesInstanceUID": ...}``
and/or ``{"orthanc_series": [Orthanc ids]}``,
optional ``modality`` (a remote PACS registered in Orthanc: each series is
C-MOVEd into Orthanc first), ``layout`` (``uid`` default, or ``chris``) and
``pacs_name``. A query answer (``items``) is accepted too, so
``query → retrieve`` chains as a sequence; a ``run`` object passes through.

Everything is validated and the series are resolved before anything is
recorded; then one ``retrieve-series`` activation per series is invoked
non-blocking and the answer — ``{retrieve_id, state, series}`` — comes back
at once. GET ``retrieve/staged`` lists what is staged already, by study (patient,
study, series, size, age: radcloud.staged.list_studies) — the Run page's inputs
after a new login; audited, it names patients. GET (or any call with
``retrieve_id``) answers the retrieve's
status: per-series state, n of N instances, bytes, errors. Never stuck: before
answering, a series whose ``retrieve-series`` activation has ended without an
outcome (the runner restarted, the activation was killed) is failed with the
activation id and status — at most one OpenWhisk lookup pass every 2 s.
"""

import time

from radcloud import retrieve
from radcloud.action import run
from radcloud.api import parse
from radcloud.api.models import QueryAnswerInput, RetrieveStatusRequest
from radcloud.errors import BadRequest, RadcloudError
from radcloud.openwhisk import OpenWhisk
from radcloud.orthanc import Orthanc
from radcloud.progress import Progress

WORKER = "retrieve-series"
PASS_THROUGH = "run"
_QUERY_ANSWER_KEYS = ("level", "source", "total", "truncated", "offset", "limit")


def _from_query_answer(params):
    """Turn a query answer (``items``) into UIDs; other params win."""
    answer = parse(QueryAnswerInput, params)
    items, level = answer.items, answer.level
    for key in ("items", *_QUERY_ANSWER_KEYS):
        params.pop(key, None)
    field = "SeriesInstanceUID" if level in ("series", "instance") else "StudyInstanceUID"
    uids = list(dict.fromkeys(i.get(field) for i in items if i.get(field)))
    if not uids:
        raise BadRequest("the query matched nothing to retrieve", field="items")
    params.setdefault(field, uids)
    return params


def _activation_lookup(services, settings):
    """``activation(id)`` for Progress.reconcile; the client is built only if a lookup is due."""
    whisk = services.get("whisk")

    def lookup(activation_id):
        nonlocal whisk
        whisk = whisk or OpenWhisk.from_settings(settings)
        return whisk.activation(activation_id)

    return lookup


def _status(rid, progress, services, settings):
    # A lookup that fails (OpenWhisk down, no credentials) only skips the
    # check: the answer still comes, and the stall timeout stays the backstop.
    progress.reconcile(rid, _activation_lookup(services, settings))
    return progress.status(rid)


def handle(request, settings, principal, services=None):
    services = services or {}
    progress = services.get("progress") or Progress.from_settings(settings)
    params = dict(request.params)
    if request.web and request.method == "get" and request.path.strip("/") == "staged":
        from radcloud.staged import list_studies
        from radcloud.storage import ObjectStore

        store = services.get("store") or ObjectStore.from_settings(settings)
        return list_studies(store, now=time.time(), redis=progress.redis)
    if params.get("retrieve_id") or (request.web and request.method == "get"):
        asked = params.get("retrieve_id") or request.path.strip("/")
        rid = parse(RetrieveStatusRequest, {"retrieve_id": asked}).retrieve_id
        return _status(rid, progress, services, settings)
    carried = params.pop(PASS_THROUGH, None)
    if "items" in params:
        params = _from_query_answer(params)
    req = retrieve.parse_request(params)
    orthanc = services.get("orthanc") or Orthanc.from_settings(settings)
    series = retrieve.plan(req, orthanc)
    whisk = services.get("whisk") or OpenWhisk.from_settings(settings)
    rid = progress.create(series, source=f"modality:{req.modality}" if req.modality else "orthanc",
                          layout=req.layout, request={"studies": list(req.studies), "series": list(req.series)})
    action = f"{settings.ow_package}/{WORKER}" if settings.ow_package else WORKER
    for item in series:
        payload = {"retrieve_id": rid, "series": item, "modality": req.modality,
                   "layout": req.layout, "pacs_name": req.pacs_name}
        try:
            answer = whisk.invoke(action, payload, blocking=False)
            # replace=False: a worker that already started has recorded itself (or a later hop)
            progress.record_activation(rid, retrieve.series_key(item), answer.get("activationId", ""),
                                       replace=False)
        except RadcloudError as exc:  # recorded per series: never a silent partial
            progress.update(rid, retrieve.series_key(item), state="failed",
                            reason=f"could not start the series' activation: {exc.message}")
    answer = {"retrieve_id": rid, "state": "queued", "series": len(series),
              "instances": sum(s["total"] for s in series)}
    if carried is not None:
        answer[PASS_THROUGH] = carried
    return answer


def main(args):
    return run(args, handle)
