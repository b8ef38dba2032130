"""Action ``retrieve``: stage image sets from the PACS into object storage.

POST ``{"StudyInstanceUID": uid | [uids]}`` and/or ``{"SeriesInstanceUID": ...}``
and/or ``{"orthanc_series": [Orthanc ids]}``,
optional ``modality`` (a remote PACS registered in Orthanc: each series is
C-MOVEd into Orthanc first), ``layout`` (``uid`` default, or ``chris``) and
``pacs_name``; a whole study leaves out radcloud's own result series
(``skipped_derived`` counts them) unless ``include_derived``. A query
answer (``items``) is accepted too, so
``query → retrieve`` chains as a sequence; a ``run`` object passes through.

Everything is validated and the series are resolved before anything is
recorded; then one ``retrieve-series`` activation per series is invoked
non-blocking and the answer — ``{retrieve_id, state, series}`` — comes back
at once. GET ``retrieve/staged`` lists what is staged already, by study (patient,
study, series, size, age: radcloud.store.staged.list_studies) — the Run page's inputs
after a new login; audited, it names patients. GET (or any call with
``retrieve_id``) answers the retrieve's
status: per-series state, n of N instances, bytes, errors. Reads never
write: a series whose ``retrieve-series`` activation ended without an
outcome is failed (with the activation id and status) by the ``reconcile``
action (radcloud.work.reconcile), and shows ``stalled`` after a while anyway.
"""

import time

from radcloud.work import retrieve
from radcloud.api.action import run
from radcloud.api import parse
from radcloud.api.models import QueryAnswerInput, RetrieveStatusRequest
from radcloud.core.errors import BadRequest
from radcloud.core.openwhisk import OpenWhisk
from radcloud.pacs.orthanc import Orthanc
from radcloud.work.executors import as_executor
from radcloud.work.retrieves import Progress, submit_series

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


def handle(request, settings, principal, services=None):
    services = services or {}
    progress = services.get("progress") or Progress.from_settings(settings)
    params = dict(request.params)
    if request.web and request.method == "get" and request.path.strip("/") == "staged":
        from radcloud.store.staged import list_studies
        from radcloud.store.storage import ObjectStore

        store = services.get("store") or ObjectStore.from_settings(settings)
        return list_studies(store, now=time.time(), redis=progress.redis)
    if params.get("retrieve_id") or (request.web and request.method == "get"):
        asked = params.get("retrieve_id") or request.path.strip("/")
        rid = parse(RetrieveStatusRequest, {"retrieve_id": asked}).retrieve_id
        return progress.status(rid)
    carried = params.pop(PASS_THROUGH, None)
    if "items" in params:
        params = _from_query_answer(params)
    req = retrieve.parse_request(params)
    orthanc = services.get("orthanc") or Orthanc.from_settings(settings)
    series = retrieve.plan(req, orthanc)
    executor = as_executor(services.get("whisk") or OpenWhisk.from_settings(settings), settings.ow_package)
    rid = progress.create(series, source=f"modality:{req.modality}" if req.modality else "orthanc",
                          layout=req.layout, request={"studies": list(req.studies), "series": list(req.series)})
    submit_series(progress, executor, rid, series, modality=req.modality, layout=req.layout,
                  pacs_name=req.pacs_name)
    answer = {"retrieve_id": rid, "state": "queued", "series": len(series),
              "instances": sum(s["total"] for s in series), "skipped_derived": series.skipped_derived}
    if carried is not None:
        answer[PASS_THROUGH] = carried
    return answer


def main(args):
    return run(args, handle)
