"""The arrivals watcher: studies that became stable in Orthanc fire an OpenWhisk trigger.

It reads Orthanc's change log (``GET /changes?since=N``) from a cursor kept
in Redis and fires ``radcloud-study-stable`` once per stable study with the
attributes routing needs and no more (:func:`arrival`: modality, body part,
descriptions, calling AET, UIDs; never patient name, ID, birth date or
accession number).

Stable, exactly once, through restarts of Orthanc, Redis or the watcher:

* ``NewStudy``/``NewSeries`` put the study in a *pending* set (Redis), with
  the time the watcher saw it change. ``StableStudy`` routes it at once.
* A pending study Orthanc never announces (it was unstable when Orthanc
  restarted: Orthanc keeps its stability timers in memory, and after a
  restart reports everything ``IsStable``) is routed by the *sweep*: only
  once its ``LastUpdate`` is ``stable_age_s`` old by Orthanc's own clock
  (``/tools/now``), so a study still receiving instances stays pending.
* The cursor advances only after a page of changes is handled; a change
  handled twice (a crash before the cursor moved) meets the study's
  *fingerprint*: per series, a hash of its instance ids, recorded after the
  fire. A study sent again with the same instances fires nothing; a study
  that grew fires again for the new or changed series only.
* Between a fire and its fingerprint write a crash could fire twice, so
  every fire carries ``arrival_id`` (study + the fired series'
  fingerprints): whoever acts on it de-duplicates on that id.
* The router's *pending arrivals* (:mod:`radcloud.arrivals.rules`: refused as
  busy, due again after a backoff; or fired and never taken) are fired again
  by the watcher when they are due (:meth:`Watcher.redrive_due`), so an idle
  system routes them at their due time, not at the next reconcile alarm.

Redis keys (prefix ``radcloud:arrivals:``): ``cursor``, ``pending`` (hash
Orthanc study id -> epoch seconds last seen changing), ``routed:<study id>``
(hash Orthanc series id -> fingerprint).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from radcloud.arrivals import rules as routing
from radcloud.core.errors import NotFound, RadcloudError, TooManyRequests

log = logging.getLogger(__name__)

PREFIX = "radcloud:arrivals:"
CURSOR, PENDING = PREFIX + "cursor", PREFIX + "pending"
TRIGGER = "radcloud-study-stable"
PAGE = 1000  # Orthanc's own maximum for /changes
HOLD_S = 5.0  # after a 429 (the namespace's trigger fires per minute used up), no fire for this long
REFIRE_MAX = 4  # due pending arrivals fired again per pass (a route run re-drives 2 more after each)
REFIRE_ERROR_S = 10.0  # a re-fire that failed (not 429) is tried again after this


def routed_key(study_id: str) -> str:
    return f"{PREFIX}routed:{study_id}"


def fingerprint(instance_ids: list[str]) -> str:
    """A series' identity for idempotence: its set of Orthanc instance ids."""
    return hashlib.sha256("\n".join(sorted(instance_ids)).encode()).hexdigest()[:16]


def _orthanc_time(text: str) -> float:
    """Orthanc's ``20260105T081000`` (UTC) as epoch seconds."""
    return datetime.strptime(text[:15], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc).timestamp()


class Watcher:
    """One pass of :meth:`poll` handles a page of changes and the pending sweep; :meth:`run` loops."""

    def __init__(self, orthanc: Any, redis: Any, fire: Callable[[dict[str, Any]], Any], *,
                 stable_age_s: float = 5.0, from_start: bool = False, clock: Callable[[], float] = time.time,
                 page: int = PAGE, workers: int = 4) -> None:
        self.orthanc = orthanc            # radcloud.pacs.orthanc.Orthanc
        self.redis = redis                # redis.Redis (decode_responses=True)
        self.fire = fire                  # sends one arrival (raises when it could not)
        self.stable_age_s = stable_age_s
        self.from_start = from_start      # no cursor yet: replay Orthanc's whole log (else: from now on)
        self.clock = clock
        self.page = page
        self.fired = 0
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="arrivals")
        self._count = threading.Lock()
        self._held_until = 0.0            # OpenWhisk said 429 (fires per minute used up): no fire before this
        self._refired: dict[str, tuple[Any, float]] = {}  # arrival id -> (its due time fired for, when)

    # -- the change log -------------------------------------------------------------

    def cursor(self) -> int:
        value = self.redis.get(CURSOR)
        if value is not None:
            return int(value)
        start = 0 if self.from_start else self.orthanc.last_change()
        self.redis.set(CURSOR, start, nx=True)
        return int(self.redis.get(CURSOR))

    def poll(self) -> int:
        """Handle one page of changes, then sweep pending studies; returns how many arrivals fired."""
        before = self.fired
        since = self.cursor()
        changes = self.orthanc.changes(since, self.page)
        if changes["Last"] < since and not changes["Changes"]:
            # Orthanc's log restarted (a new index): replay it; fingerprints stop repeats.
            log.warning("Orthanc's change log is behind the cursor (%d < %d): reading it again from 0",
                        changes["Last"], since)
            self.redis.set(CURSOR, 0)
            return self.poll()
        for change in changes["Changes"]:
            self._handle(change)
        if changes["Changes"]:
            self.redis.set(CURSOR, changes["Last"])
        self.sweep()
        self.redrive_due()
        return self.fired - before

    def _handle(self, change: dict[str, Any]) -> None:
        kind, rid = change["ChangeType"], change["ID"]
        if kind == "NewStudy":
            self.redis.hset(PENDING, rid, self.clock())
        elif kind == "NewSeries":
            try:
                study = self.orthanc.resource("Series", rid)["ParentStudy"]
            except NotFound:  # deleted since
                return
            self.redis.hset(PENDING, study, self.clock())
        elif kind == "StableStudy":
            self.route(rid)

    def sweep(self) -> None:
        """Route pending studies whose last instance is ``stable_age_s`` old (Orthanc's clock)."""
        pending = self.redis.hgetall(PENDING)
        due = [sid for sid, seen in pending.items() if self.clock() - float(seen) >= self.stable_age_s]
        if not due:
            return
        now = _orthanc_time(self.orthanc.now())

        def check(sid: str) -> None:
            try:
                study = self.orthanc.resource("Study", sid)
            except NotFound:
                self.redis.hdel(PENDING, sid)
                return
            if now - _orthanc_time(study["LastUpdate"]) >= self.stable_age_s:
                self.route(sid, study)
        # Studies are independent; a burst is mostly waiting on Orthanc and OpenWhisk round trips.
        list(self._pool.map(check, due))

    # -- routing one study ------------------------------------------------------------

    def route(self, study_id: str, study: dict[str, Any] | None = None) -> bool:
        """Fire the study's new or changed series (if any); True when it fired.

        A failed fire leaves the study pending, so the next sweep tries again. A fire refused
        as too many (429: the namespace's fires per minute) holds every fire for
        :data:`HOLD_S`, so a burst waits for the next minute instead of spending it on refusals
        (OpenWhisk charges refused fires too).
        """
        if self.clock() < self._held_until:
            self.redis.hset(PENDING, study_id, 0)  # due again once the hold ends
            return False
        try:
            study = study or self.orthanc.resource("Study", study_id)
            series = self.orthanc.children("Study", study_id, "Series")
        except NotFound:
            self.redis.hdel(PENDING, study_id)
            return False
        routed = self.redis.hgetall(routed_key(study_id))
        prints = {s["ID"]: fingerprint(s.get("Instances") or []) for s in series}
        fresh = [s for s in series if s.get("Instances") and routed.get(s["ID"]) != prints[s["ID"]]]
        if not fresh:
            self.redis.hdel(PENDING, study_id)
            return False
        payload = arrival(study, fresh, prints, self._calling_aet(fresh[0]))
        routing.expect(self.redis, payload, self.clock())  # routed by reconcile should the fire not reach `route`
        try:
            activation = self.fire(payload)
        except TooManyRequests as exc:
            routing.unexpect(self.redis, payload["arrival_id"])
            self._held_until = self.clock() + HOLD_S
            log.warning("arrival of study %s not fired (%s); fires held for %.0f s", study_id, exc.message, HOLD_S)
            self.redis.hset(PENDING, study_id, 0)
            return False
        except RadcloudError as exc:
            routing.unexpect(self.redis, payload["arrival_id"])
            log.warning("arrival of study %s not fired (%s); it stays pending", study_id, exc.message)
            self.redis.hset(PENDING, study_id, 0)  # due again at the next sweep
            return False
        if activation is None:  # no active rule (OpenWhisk's 204): nothing is meant to route it
            routing.unexpect(self.redis, payload["arrival_id"])
        pipe = self.redis.pipeline()
        pipe.hset(routed_key(study_id), mapping={s["ID"]: prints[s["ID"]] for s in fresh})
        pipe.hdel(PENDING, study_id)
        pipe.execute()
        with self._count:
            self.fired += 1
        return True

    def redrive_due(self) -> int:
        """Fire again the router's pending arrivals whose next try is due; returns how many.

        A route run that was refused (the namespace busy, a service down) leaves its arrival in
        the router's pending set, due after a backoff of 2, 4, 8 … s. Route runs of later arrivals
        and the reconcile alarm route it again — but on an idle system the next of those may be
        minutes away (the alarm's period). The watcher polls anyway, so it fires the same arrival
        again at its due time; the route run it starts claims it like any other (a duplicate of a
        run already routing it starts nothing). An arrival is fired once per due time: when no
        route run takes it (the fire lost), it is fired again only after the route lease.
        """
        now = self.clock()
        if now < self._held_until:
            return 0
        entries = routing.pending_entries(self.redis)
        live = {e["arrival"]["arrival_id"] for e in entries}
        self._refired = {k: v for k, v in self._refired.items() if k in live}
        count = 0
        for entry in entries:
            if count >= REFIRE_MAX:
                break
            due_at = float(entry.get("next_at") or 0)
            aid = entry["arrival"]["arrival_id"]
            fired_for, fired_at = self._refired.get(aid, (None, 0.0))
            if due_at > now or (fired_for == due_at and now - fired_at < routing.LEASE_S):
                continue
            try:
                self.fire(entry["arrival"])
            except TooManyRequests as exc:
                self._held_until = now + HOLD_S
                log.warning("pending arrival %s not fired again (%s); fires held for %.0f s", aid, exc.message, HOLD_S)
                break
            except RadcloudError as exc:
                log.warning("pending arrival %s not fired again (%s); tried again in %.0f s", aid, exc.message,
                            REFIRE_ERROR_S)
                self._refired[aid] = (due_at, now - routing.LEASE_S + REFIRE_ERROR_S)
                continue
            self._refired[aid] = (due_at, now)
            count += 1
        return count

    def _calling_aet(self, series: dict[str, Any]) -> str:
        """The AE title that sent the series (Orthanc's ``RemoteAET`` metadata; "" when sent over REST)."""
        try:
            return self.orthanc.metadata("Instance", series["Instances"][0], "RemoteAET")
        except NotFound:
            return ""

    # -- the loop ---------------------------------------------------------------------

    def run(self, stop: threading.Event, poll_s: float = 0.5, on_error_s: float = 2.0) -> None:
        """Poll until ``stop`` is set; Orthanc or Redis being away is waited out, logged once per outage."""
        failing = False
        while not stop.is_set():
            try:
                busy = self.poll()
                if failing:
                    log.info("arrivals watcher: Orthanc and Redis reachable again")
                failing = False
            except Exception as exc:  # noqa: BLE001 — an outage must not end the watcher
                if not failing:
                    log.warning("arrivals watcher: %s; retrying every %.0f s", _reason(exc), on_error_s)
                failing = True
                stop.wait(on_error_s)
                continue
            if not busy:
                stop.wait(poll_s)


def arrival(study: dict[str, Any], series: list[dict[str, Any]], prints: dict[str, str],
            calling_aet: str) -> dict[str, Any]:
    """The trigger's parameters: routing attributes and UIDs only (no patient attributes)."""
    tags = study.get("MainDicomTags") or {}
    items = []
    for s in series:
        st = s.get("MainDicomTags") or {}
        items.append({"series_uid": st.get("SeriesInstanceUID", ""), "orthanc_series": s["ID"],
                      "modality": st.get("Modality", ""), "body_part": st.get("BodyPartExamined", ""),
                      "series_description": st.get("SeriesDescription", ""),
                      "instances": len(s.get("Instances") or []), "fingerprint": prints[s["ID"]]})
    study_uid = tags.get("StudyInstanceUID", "")
    arrival_id = hashlib.sha256((study_uid + "|" + ",".join(sorted(f"{i['orthanc_series']}:{i['fingerprint']}"
                                                                   for i in items))).encode()).hexdigest()[:32]
    return {"arrival_id": arrival_id, "study_uid": study_uid, "orthanc_study": study["ID"],
            "study_description": tags.get("StudyDescription", ""), "calling_aet": calling_aet,
            "modalities": sorted({i["modality"] for i in items if i["modality"]}), "series": items}


def _reason(exc: Exception) -> str:
    return exc.message if isinstance(exc, RadcloudError) else f"{type(exc).__name__}: {exc}"


def trigger_fire(openwhisk: Any, trigger: str = TRIGGER) -> Callable[[dict[str, Any]], Any]:
    """``fire(payload)`` through OpenWhisk's trigger API (:meth:`radcloud.core.openwhisk.OpenWhisk.fire`).

    A fire OpenWhisk accepted (202) has not necessarily reached the rule's action: at the
    namespace's concurrency limit the rule's invoke is refused and only the trigger
    activation's log says so (``{"statusCode": 429, "success": false, ...}`` per rule). That
    record is read back and such a refusal raised as TooManyRequests, so the study stays
    pending and is fired again after the hold. (A record not written yet proves nothing
    either way; the route action's own pending set covers what happens after it started.)
    """
    def fire(payload: dict[str, Any]) -> Any:
        aid = openwhisk.fire(trigger, payload)
        refused = refused_rules(openwhisk.activation(aid)) if aid else []
        if refused:
            raise TooManyRequests(f"trigger {trigger} fired (activation {aid}) but OpenWhisk refused its rule(s) "
                                  f"{', '.join(refused)}: the namespace is at its concurrency limit")
        return aid
    return fire


def refused_rules(record: dict[str, Any] | None) -> list[str]:
    """The rules a trigger activation record says were refused as busy (429/503)."""
    out = []
    for line in (record or {}).get("logs") or []:
        try:
            entry = json.loads(line)
        except (TypeError, ValueError):
            continue
        if isinstance(entry, dict) and not entry.get("success", True) and entry.get("statusCode") in (429, 503):
            out.append(str(entry.get("rule", "?")))
    return out
