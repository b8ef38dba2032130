"""Retrieves as tracked work: their records and progress, in Redis.

A retrieve is tracked work on :mod:`radcloud.work.lifecycle`: its units are
series (the ``SERIES`` machine); the retrieve's own state is derived from
theirs (:func:`radcloud.work.lifecycle.retrieve_state`).

One retrieve = one record plus one hash per series, all under
``radcloud:retrieve:{id}``:

* ``radcloud:retrieve:{id}``            hash: created, source, layout, request,
                                        series (JSON list of the series UIDs, in order)
* ``radcloud:retrieve:{id}:s:{uid}``    hash: state, done, total, bytes, skipped, errors, manifest,
                                        activation, updated
* ``radcloud:staged:series:{uid}``      string: the series' manifest key, once staged
                                        (how dispatch finds a series by UID)
* ``radcloud:retrieves:open``           zset: retrieve id -> created, while any series is
                                        unfinished (what reconcile looks at)

Workers only ever touch their own series hash (``HINCRBY`` for counters),
so concurrent series never race. The overall state is derived on read:
``queued`` → ``running`` → ``succeeded`` | ``partial`` (some series failed)
| ``failed`` (all failed). A series with no progress for ``stall_s`` while
running is reported ``stalled`` with the reason, so a caller is never left
watching a dead worker. Sooner than that, :func:`radcloud.work.reconcile.reconcile_retrieve`
(on a schedule, never inside a read) fails a series whose recorded activation
has ended without a final state (killed, timed out, crashed before its
guard): the ``activation`` field always names the series' latest activation
(each hop records itself). Reads never write.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from radcloud.core.errors import NotFound, RadcloudError, UpstreamError
from radcloud.work import lifecycle as L
from radcloud.work.lifecycle import SERIES, SERIES_FINAL

log = logging.getLogger(__name__)

PREFIX = "radcloud:retrieve:"
STAGED = "radcloud:staged:series:"
OPEN = "radcloud:retrieves:open"
TTL_S = 7 * 24 * 3600
FINAL = tuple(sorted(SERIES_FINAL))  # a series' final states (radcloud.work.lifecycle)
MAX_ERRORS = 20   # per series: enough to act on, bounded so the record stays small

# Fail a series only if it may still fail (SERIES.sources("fail")) AND is still on
# the activation that was found ended: a hop that re-invoked itself meanwhile has
# recorded its successor, and a worker that finished meanwhile has written its outcome.
_FAIL_IF_ON = """
local row = redis.call('HMGET', KEYS[1], 'state', 'activation')
local open = false
for s in string.gmatch(ARGV[4], '[^,]+') do if s == row[1] then open = true end end
if not open or row[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[5], 'reason', ARGV[2], 'updated', ARGV[3])
return 1
"""


class Progress:
    """Create, update and read retrieve records. ``redis`` is a redis-py client."""

    def __init__(self, redis: Any, *, clock: Callable[[], float] = time.time, stall_s: float = 180.0) -> None:
        self.redis = redis
        self.clock = clock
        self.stall_s = stall_s

    @classmethod
    def from_settings(cls, settings: Any) -> "Progress":
        from radcloud.core import redisclient

        return cls(redisclient.client(settings, redisclient.PROGRESS))

    def _key(self, rid: str, *parts: str) -> str:
        return PREFIX + rid + "".join(":" + p for p in parts)

    def _do(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # redis-py raises its own family; never leak the URL
            if exc.__class__.__module__.startswith("redis"):
                raise UpstreamError(f"Redis unavailable: {type(exc).__name__}") from None
            raise

    # -- writing -------------------------------------------------------------
    def create(self, series: list[dict[str, Any]], *, source: str, layout: str,
               request: dict[str, Any] | None = None, retrieve_id: str | None = None) -> str:
        """Record a new retrieve of ``series`` (dicts with at least ``SeriesInstanceUID``)."""
        rid = retrieve_id or uuid.uuid4().hex
        now = self.clock()

        # Tracked by series key: the UID, or the key a retrieve gave one of
        # several series sharing a UID (radcloud.work.retrieve.series_key).
        uids = [s.get("series_key") or s["SeriesInstanceUID"] for s in series]

        def write() -> None:
            pipe = self.redis.pipeline()
            pipe.hset(self._key(rid), mapping={
                "created": now, "source": source, "layout": layout, "series": json.dumps(uids),
                "request": json.dumps(request or {}, sort_keys=True)})
            for key, s in zip(uids, series):
                pipe.hset(self._key(rid, "s", key), mapping={
                    "state": "queued", "done": 0, "total": s.get("total") or 0, "bytes": 0,
                    "skipped": 0, "errors": "[]", "updated": now,
                    "study": s.get("StudyInstanceUID") or "", "uid": s["SeriesInstanceUID"]})
            for key in [self._key(rid)] + [self._key(rid, "s", u) for u in uids]:
                pipe.expire(key, TTL_S)
            pipe.zadd(OPEN, {rid: now})
            pipe.execute()

        self._do(write)
        return rid

    def update(self, rid: str, series_uid: str, **fields: Any) -> None:
        """Set fields of one series (``errors`` as a list, capped)."""
        if "errors" in fields:
            fields["errors"] = json.dumps(list(fields["errors"])[:MAX_ERRORS])
        fields["updated"] = self.clock()
        self._do(lambda: self.redis.hset(self._key(rid, "s", series_uid), mapping=fields))

    def record_activation(self, rid: str, series_uid: str, activation_id: str, *, replace: bool = True) -> None:
        """Name the activation now working on a series.

        ``replace=False`` (the fan-out, after its invoke returned) keeps an id
        the worker already recorded itself: a later hop's id must never be
        overwritten by an earlier one.
        """
        key = self._key(rid, "s", series_uid)
        if replace:
            self._do(lambda: self.redis.hset(key, "activation", activation_id))
        else:
            self._do(lambda: self.redis.hsetnx(key, "activation", activation_id))

    def advance(self, rid: str, series_uid: str, *, done: int = 0, nbytes: int = 0, skipped: int = 0) -> None:
        """Count staged instances and bytes (atomic increments)."""
        key = self._key(rid, "s", series_uid)

        def write() -> None:
            pipe = self.redis.pipeline()
            if done:
                pipe.hincrby(key, "done", done)
            if nbytes:
                pipe.hincrby(key, "bytes", nbytes)
            if skipped:
                pipe.hincrby(key, "skipped", skipped)
            pipe.hset(key, "updated", self.clock())
            pipe.execute()

        self._do(write)

    def staged(self, series_uid: str, manifest_key: str) -> None:
        """Index a staged series' manifest by UID (dispatch resolves series this way)."""
        self._do(lambda: self.redis.set(STAGED + series_uid, manifest_key))

    # -- reconcile (radcloud.work.reconcile) --------------------------------------
    def open_retrieves(self, limit: int = 1000) -> list[str]:
        """Ids of retrieves with an unfinished series, oldest first."""
        return list(self._do(lambda: self.redis.zrange(OPEN, 0, limit - 1)))

    def closed(self, rid: str) -> None:
        """Drop a retrieve whose series are all final (or that expired) from the open index."""
        self._do(lambda: self.redis.zrem(OPEN, rid))

    def units(self, rid: str) -> list[tuple[str, str, str]]:
        """(series key, state, handle) of every series of a retrieve ([] if it does not exist)."""
        def read() -> tuple[list[str], list[list]]:
            uids = json.loads(self.redis.hget(self._key(rid), "series") or "[]")
            pipe = self.redis.pipeline()
            for uid in uids:
                pipe.hmget(self._key(rid, "s", uid), "state", "activation")
            return uids, pipe.execute()

        uids, rows = self._do(read)
        return [(uid, state or "queued", aid or "") for uid, (state, aid) in zip(uids, rows)]

    def fail_if_on(self, rid: str, series_key: str, handle: str, reason: str) -> bool:
        """Fail a series still open on ``handle`` (atomic); False if it moved on meanwhile."""
        return bool(self._do(lambda: self.redis.eval(
            _FAIL_IF_ON, 1, self._key(rid, "s", series_key), handle, reason, self.clock(),
            ",".join(SERIES.sources("fail")), SERIES.next("staging", "fail"))))

    # -- reading -------------------------------------------------------------
    def exists(self, rid: str) -> bool:
        return bool(self._do(lambda: self.redis.exists(self._key(rid))))

    def status(self, rid: str) -> dict[str, Any]:
        """The retrieve as the caller sees it; raises NotFound for an unknown id."""
        def read() -> tuple[dict, list[str], list[dict]]:
            head = self.redis.hgetall(self._key(rid))
            uids = json.loads(head.get("series") or "[]")
            pipe = self.redis.pipeline()
            for uid in uids:
                pipe.hgetall(self._key(rid, "s", uid))
            return head, uids, pipe.execute()

        head, uids, rows = self._do(read)
        if not head:
            raise NotFound(f"no retrieve {rid!r} (unknown or expired)", field="retrieve_id")
        now = self.clock()
        series = []
        for uid, row in zip(uids, rows):
            state = row.get("state") or "queued"
            item = {
                "SeriesInstanceUID": row.get("uid") or uid, "StudyInstanceUID": row.get("study") or None,
                "state": state,
                "done": int(row.get("done", 0)), "total": int(row.get("total", 0)),
                "bytes": int(row.get("bytes", 0)), "skipped": int(row.get("skipped", 0)),
                "errors": json.loads(row.get("errors") or "[]"),
            }
            for optional in ("manifest", "reason", "activation"):
                if row.get(optional):
                    item[optional] = row[optional]
            if uid != item["SeriesInstanceUID"]:  # one of several series sharing a UID
                item["series_key"] = uid
            if not SERIES.is_final(state) and now - float(row.get("updated", now)) > self.stall_s:
                item["state"] = L.STALLED
                item["reason"] = f"no progress for {self.stall_s:.0f} s; rerun the retrieve to finish it"
            series.append(item)
        return {
            "retrieve_id": rid, "state": overall([s["state"] for s in series]),
            "source": head.get("source"), "layout": head.get("layout"),
            "created": float(head.get("created", 0)),
            "series_total": len(series),
            "series_done": sum(s["state"] == L.SUCCEEDED for s in series),
            "instances_done": sum(s["done"] for s in series),
            "instances_total": sum(s["total"] for s in series),
            "bytes": sum(s["bytes"] for s in series),
            "series": series,
        }


def overall(states: list[str]) -> str:
    """Derive a retrieve's state from its series' states (the lifecycle's rule)."""
    return L.retrieve_state(states)


Retrieves = Progress  # the name it has as tracked work


# -- units: one retrieve-series activation per series, through an Executor --------------
WORKER = "retrieve-series"  # the action that stages one series (functions/retrieve_series)


def submit_series(progress: Progress, executor: Any, rid: str, series: list[dict[str, Any]], *,
                  modality: str | None, layout: str, pacs_name: str) -> None:
    """Submit one ``retrieve-series`` unit per series of a recorded retrieve.

    A series whose submit fails (including a busy executor: a series has no
    pending state to wait in) is failed with the reason at once: never a
    silent partial.
    """
    from radcloud.work.executors import Unit

    for item in series:
        key = item.get("series_key") or item["SeriesInstanceUID"]
        payload = {"retrieve_id": rid, "series": item, "modality": modality, "layout": layout,
                   "pacs_name": pacs_name}
        try:
            handle = executor.submit(Unit(job_id=rid, unit_id=key, action=WORKER, payload=payload))
        except RadcloudError as exc:
            progress.update(rid, key, state=L.FAILED, reason=f"could not start the series' activation: {exc.message}")
            continue
        # replace=False: a worker that already started has recorded itself (or a later hop)
        progress.record_activation(rid, key, handle, replace=False)


def continue_series(progress: Progress, executor: Callable[[], Any], rid: str, key: str,
                    follow: dict[str, Any]) -> str:
    """Submit the next hop of a series (the rest of its instances, or a C-MOVE still
    running); '' with the series failed and the reason when it cannot be submitted.

    ``executor()`` builds the executor only now that a hop is due (it needs credentials).
    """
    from radcloud.work.executors import Unit

    try:
        handle = executor().submit(Unit(job_id=rid, unit_id=key, action=WORKER, payload=follow))
    except RadcloudError as exc:  # never leave the series looking alive
        progress.update(rid, key, state=L.FAILED,
                        reason=f"could not continue the series: {exc.message}; rerun the retrieve")
        return ""
    progress.record_activation(rid, key, handle)
    return handle
