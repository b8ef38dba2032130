"""The audit trail: who touched which patient's data, when, from where.

Every query, retrieve, job and result view that touches patient data
appends one entry to the Redis stream ``radcloud:audit``. The trail is the
one place patient and study identifiers belong; logs never hold them.
Only admins read it (``functions/audit`` allows the ``admin`` role only),
and radcloud never trims or edits it: stream entries are append-only and
their ids are time-ordered, so a gap or reordering would show. Retention
is the operator's decision (``XTRIM`` by hand, after export).

    audit.record(redis, principal, "query", request, patient_ids=["123"])

Each entry holds ``when`` (ISO 8601 UTC), ``who``, ``role``, ``action``,
``client`` (the caller's address), ``outcome`` and ``what`` (a JSON object
of the identifiers passed as keyword arguments).

The later components of a web sequence (``pull-and-run``: retrieve, then
dispatch) are direct invocations, but they act for the web caller; they are
recorded as that caller, from the address the first component saw, with
``"via": "sequence"`` in ``what``.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone
from typing import Any

from radcloud.core.errors import BadRequest

log = logging.getLogger(__name__)

STREAM = "radcloud:audit"
PAGE_MAX = 500
_ID_RE = re.compile(r"^\d{1,20}-\d{1,20}$")


def _clean(value: Any) -> Any:
    """Identifiers as strings or lists of strings; None dropped."""
    if isinstance(value, (list, tuple, set, frozenset)):
        return [str(v) for v in value if v is not None]
    return str(value)


def record(redis: Any, principal: Any, action: str, request: Any = None, *,
           outcome: str = "ok", **targets: Any) -> str | None:
    """Append one audit entry; return its stream id.

    Parameters:
        principal: an :class:`radcloud.access.auth.Principal` (or None: anonymous).
        action: what was done, e.g. ``query``, ``retrieve``, ``dispatch``,
            ``view_result``, ``login``.
        request: the :class:`radcloud.api.action.Request` (for the client address).
        targets: identifiers touched, e.g. ``patient_ids``, ``study_uids``,
            ``accessions``, ``job_id``.

    An audit write must not be silently lost, but it must not lose the
    caller's answer either: a Redis failure is logged (without the
    identifiers) and re-raised so the action's guard reports it.
    """
    what = {k: _clean(v) for k, v in targets.items() if v is not None and v != []}
    fields = {
        "when": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "who": getattr(principal, "name", None) or "anonymous",
        "role": getattr(principal, "role", None) or "",
        "action": action,
        "client": getattr(request, "client", None) or "unknown",
        "outcome": outcome,
        "what": json.dumps(what, sort_keys=True, separators=(",", ":")),
    }
    try:
        entry_id = redis.xadd(STREAM, fields)
    except Exception:
        log.error("audit write failed for action %s", action)
        raise
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(entry_id: Any, fields: dict[Any, Any]) -> dict[str, Any]:
    data = {_text(k): _text(v) for k, v in fields.items()}
    try:
        what = json.loads(data.get("what", "{}"))
    except json.JSONDecodeError:
        what = {"raw": data.get("what", "")}
    return {"id": _text(entry_id), "when": data.get("when", ""), "who": data.get("who", ""),
            "role": data.get("role", ""), "action": data.get("action", ""),
            "client": data.get("client", ""), "outcome": data.get("outcome", ""), "what": what}


def page(redis: Any, *, before: str | None = None, limit: int = 50,
         who: str | None = None, action: str | None = None) -> dict[str, Any]:
    """Entries newest first, ``limit`` at a time.

    Pass the returned ``next`` as ``before`` for the following page (None
    at the end). ``who``/``action`` filter exactly; filtering scans at most
    ten pages of the stream per call, so a rare filter may return a short
    page with a ``next`` to continue from.

    Raises:
        BadRequest: ``before`` is not a stream id or ``limit`` out of range.
    """
    if not isinstance(limit, int) or not 1 <= limit <= PAGE_MAX:
        raise BadRequest(f"limit must be an integer between 1 and {PAGE_MAX}", field="limit")
    if before is not None and not _ID_RE.match(before):
        raise BadRequest("before must be an audit entry id like '1732490000000-0' "
                         "(the 'next' of the previous page)", field="before")
    upper = f"({before}" if before else "+"
    entries: list[dict[str, Any]] = []
    next_id: str | None = None
    for _ in range(10):
        batch = redis.xrevrange(STREAM, max=upper, min="-", count=limit)
        if not batch:
            next_id = None
            break
        for entry_id, fields in batch:
            entry = _entry(entry_id, fields)
            if (who is None or entry["who"] == who) and (action is None or entry["action"] == action):
                entries.append(entry)
            next_id = entry["id"]
            if len(entries) == limit:
                break
        if len(entries) == limit or len(batch) < limit:
            if len(batch) < limit and len(entries) < limit:
                next_id = None
            break
        upper = f"({next_id}"
    if next_id is not None and not redis.xrevrange(STREAM, max=f"({next_id}", min="-", count=1):
        next_id = None
    return {"entries": entries, "next": next_id, "total": int(redis.xlen(STREAM))}


# -- the automatic entry written by radcloud.api.action.run ---------------------------

# Actions whose web requests touch patient data; the others (ui, status
# polling, login, audit) would only flood the trail, or audit themselves.
AUDITED = frozenset({"query", "retrieve", "dispatch", "results", "viewer"})
_PARAM_TARGETS = {
    "PatientID": "patient_ids", "PatientName": "patient_names", "AccessionNumber": "accessions",
    "StudyInstanceUID": "study_uids", "SeriesInstanceUID": "series_uids",
    "retrieve_id": "retrieve_id", "job_id": "job_id", "plugin": "plugin",
}
_RESULT_TARGETS = {"PatientID": "matched_patient_ids", "StudyInstanceUID": "matched_study_uids"}
MATCHES_MAX = 200  # identifiers of a query's answer kept per entry


def _as_list(value: Any) -> list[str]:
    values = value if isinstance(value, (list, tuple)) else [value]
    return [str(v) for v in values if v not in (None, "") and not isinstance(v, (dict, list))]


def targets_of(action: str, params: dict[str, Any], path: str, result: Any) -> dict[str, Any]:
    """The identifiers a request named and, for a query, the ones it answered."""
    targets: dict[str, Any] = {}
    for key, name in _PARAM_TARGETS.items():
        if key in params and _as_list(params[key]):
            targets[name] = _as_list(params[key])
    carried = params.get("run")  # pull-and-run carries the run request to dispatch
    if action == "dispatch" and isinstance(carried, dict) and "plugin" not in targets and _as_list(carried.get("plugin")):
        targets["plugin"] = _as_list(carried.get("plugin"))
    given = params.get("items")  # retrieve of a query's answer (what pull-and-run stages)
    if action == "retrieve" and isinstance(given, list):
        for key, name in (("PatientID", "patient_ids"), ("StudyInstanceUID", "study_uids"),
                          ("SeriesInstanceUID", "series_uids")):
            found = list(dict.fromkeys(str(i[key]) for i in given if isinstance(i, dict) and i.get(key)))
            if found:
                targets.setdefault(name, found[:MATCHES_MAX])
    first = path.strip("/").split("/")[0] if path.strip("/") else ""
    if first and first != "staged" and action in ("results", "retrieve"):
        targets.setdefault("job_id" if action == "results" else "retrieve_id", [first])
    if isinstance(result, dict):
        if action == "viewer":  # who viewed which study (and series): the UIDs the answer opened
            opened_one = result.get("source") if isinstance(result.get("source"), dict) else result  # a job's source
            for key, name in (("StudyInstanceUID", "study_uids"), ("SeriesInstanceUID", "series_uids")):
                if isinstance(opened_one.get(key), str) and opened_one[key]:
                    targets.setdefault(name, [opened_one[key]])
            seg = result.get("segmentation")
            if isinstance(seg, dict) and isinstance(seg.get("SeriesInstanceUID"), str) and "series_uids" in targets:
                targets["series_uids"].append(seg["SeriesInstanceUID"])  # a SEG opened from the PACS, with its source
            opened = [s["SeriesInstanceUID"] for s in result.get("series") or [] if isinstance(s, dict)]
            if opened:
                targets.setdefault("series_uids", opened[:MATCHES_MAX])
        if isinstance(result.get("job_id"), str):
            targets.setdefault("job_id", [result["job_id"]])
        if isinstance(result.get("retrieve_id"), str):
            targets.setdefault("retrieve_id", [result["retrieve_id"]])
        items = result.get("items")
        if action == "retrieve" and isinstance(result.get("studies"), list):   # the staged list
            items = result["studies"]
        if isinstance(items, list):
            for key, name in _RESULT_TARGETS.items():
                found = list(dict.fromkeys(str(i[key]) for i in items if isinstance(i, dict) and i.get(key)))
                if found:
                    targets[name] = found[:MATCHES_MAX]
            targets["matches"] = str(len(items))
    return targets


def after_request(redis: Any, action: str, principal: Any, request: Any, result: Any, *,
                  sequence: bool = False) -> str | None:
    """Record a web request, or a web-sequence step acting for its caller
    (``sequence=True``), to a patient-data action; None when not audited."""
    if action not in AUDITED or not (sequence or getattr(request, "web", False)) or _is_poll(action, request):
        return None
    method = getattr(request, "method", "")
    targets = targets_of(action, getattr(request, "params", {}) or {}, getattr(request, "path", ""), result)
    if sequence:
        targets["via"] = "sequence"
    name = f"{action}:{method}" if method != "post" else action
    if action == "retrieve" and str(getattr(request, "path", "")).strip("/") == "staged":
        name = "retrieve:staged"   # the staged list, not a progress read
    if action == "query" and str(getattr(request, "path", "")).strip("/") == "previews":
        name = "query:previews"    # pictures of a patient's series (radcloud.pacs.preview)
    return record(redis, principal, name, request, **targets)


def _is_poll(action: str, request: Any) -> bool:
    """Progress polls and per-file links: the UI sends hundreds per pull or
    result view; the request that started the pull or opened the results
    is the one recorded."""
    params = getattr(request, "params", {}) or {}
    path_parts = [p for p in str(getattr(request, "path", "")).strip("/").split("/") if p]
    if action == "retrieve":
        if path_parts == ["staged"] and not params.get("retrieve_id"):
            return False   # the staged list names patients: recorded like a search
        return getattr(request, "method", "") == "get" or bool(params.get("retrieve_id"))
    if action == "results":
        return len(path_parts) > 1 or params.get("op") in ("url", "thumbnail")
    return False
