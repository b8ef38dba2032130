"""Feeds: the ``/whisk.system/alarms`` package (alarm, interval, once), built in.

A feed is an action that a client invokes with ``lifecycleEvent`` (CREATE,
READ, UPDATE, DELETE, PAUSE, UNPAUSE), ``triggerName`` (``/ns/trigger``) and
``authKey``, plus its own parameters — what ``wsk trigger create --feed``,
wskdeploy and the npm client's ``feeds.*`` do (OpenWhisk docs/feeds.md). The
feeds mirror apache/openwhisk-package-alarms:

* ``alarm``: ``cron`` (5 fields, or 6 with seconds first), ``startDate``, ``stopDate``;
* ``interval``: ``minutes``, ``startDate``, ``stopDate``;
* ``once``: ``date``;

each with ``trigger_payload`` (an object fired as the trigger's parameters).
The alarm feed's ``cron`` is read in its ``timezone`` (an IANA name such as
``Europe/Paris``, UTC when absent), as the alarms provider does: "0 8 * * *"
fires at 08:00 local time through daylight-saving changes (a time the clock
skips does not fire that day; one it repeats fires once). Dates are UTC
unless they carry an offset. Registrations live in
the store (type ``alarm``, keyed by the trigger), so a restart keeps them;
the authKey is checked against the trigger's namespace and never stored.
:meth:`Alarms.tick` fires what is due; the server calls it every
``--alarm-tick`` seconds (tests call it with their own clock). A tick fires a
schedule at most once per due time; times missed while localwhisk was down are
not fired late (as the alarms provider, which skips to the next due time).
"""

from __future__ import annotations

import calendar
import functools
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

from localwhisk import entities as ent
from localwhisk.activations import new_id, response_of
from localwhisk.auth import Authenticator
from localwhisk.errors import WhiskError, not_found
from localwhisk.sequences import parse_name
from localwhisk.store import Store

log = logging.getLogger(__name__)

SYSTEM_NS, PACKAGE = "whisk.system", "alarms"
FEEDS = ("alarm", "interval", "once")
EVENTS = ("CREATE", "READ", "UPDATE", "DELETE", "PAUSE", "UNPAUSE")
MAX_CATCH_UP_S = 120   # a late tick looks back at most this far (a suspended machine fires no burst)
_RANGES = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]  # sec min hour dom month dow
_NAMES = {4: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
          5: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]}

Fire = Callable[[str, str, dict[str, Any]], "str | None"]


class FeedError(ValueError):
    """A feed request that cannot be honoured; the message says what to change."""


# -- cron ------------------------------------------------------------------------

class Cron:
    """A cron expression: 5 fields (minute first) or 6 (second first); ``*``, ``a-b``, ``*/n``, lists, names."""

    def __init__(self, expr: str, tz: str | None = None) -> None:
        self.zone = _zone(tz)
        fields = str(expr).split()
        if len(fields) not in (5, 6):
            raise FeedError(f"cron {expr!r} has {len(fields)} fields; use 5 (minute hour day month weekday) "
                            "or 6 (second first), e.g. '*/5 * * * *'")
        if len(fields) == 5:
            fields = ["0", *fields]
        self.expr = expr
        self.sets = [_field(f, i, expr) for i, f in enumerate(fields)]
        self.dom_any, self.dow_any = fields[3] == "*", fields[5] == "*"

    def matches(self, t: int) -> bool:
        """Does whole second ``t`` (epoch) match, read on the clock of the cron's time zone?"""
        if self.zone is None:
            tm = time.gmtime(t)
            sec, minute, hour, dom, month, wday = tm.tm_sec, tm.tm_min, tm.tm_hour, tm.tm_mday, tm.tm_mon, tm.tm_wday
        else:
            local = datetime.fromtimestamp(t, self.zone)
            if local.fold:  # the second pass through a repeated hour (DST ends): fired the first time
                return False
            sec, minute, hour, dom, month, wday = (local.second, local.minute, local.hour, local.day, local.month,
                                                   local.weekday())
        dow = (wday + 1) % 7  # cron: Sunday = 0
        s = self.sets
        if sec not in s[0] or minute not in s[1] or hour not in s[2] or month not in s[4]:
            return False
        if self.dom_any or self.dow_any:  # cron's rule: both restricted means either may match
            return dom in s[3] and dow in s[5]
        return dom in s[3] or dow in s[5]


def _field(text: str, index: int, expr: str) -> set[int]:
    lo, hi = _RANGES[index]
    out: set[int] = set()
    for part in text.lower().split(","):
        base, _, step_s = part.partition("/")
        try:
            step = int(step_s) if step_s else 1
            if base == "*":
                a, b = lo, hi
            elif "-" in base:
                a, b = (_value(x, index) for x in base.split("-", 1))
            else:
                a = _value(base, index)
                b = hi if step_s else a
        except ValueError:
            raise FeedError(f"cron {expr!r}: field {text!r} is not understood") from None
        if index == 5 and b == 7:
            b = 6 if a <= 6 else 0  # 7 is Sunday too
            out.add(0)
        if step < 1 or not (lo <= a <= hi and lo <= b <= hi) or a > b:
            raise FeedError(f"cron {expr!r}: field {text!r} is outside {lo}-{hi}")
        out.update(range(a, b + 1, step))
    return out


def _value(text: str, index: int) -> int:
    names = _NAMES.get(index)
    if names and text[:3] in names:
        return names.index(text[:3]) + (1 if index == 4 else 0)
    value = int(text)
    return 0 if index == 5 and value == 7 else value


_cron = functools.lru_cache(maxsize=256)(Cron)  # a tick checks each second of each schedule


def _zone(tz: str | None) -> Any:
    """The time zone called ``tz`` (None for UTC); FeedError naming it when there is none."""
    if tz in (None, "", "UTC", "Etc/UTC"):
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(str(tz))
    except (ZoneInfoNotFoundError, ValueError):
        raise FeedError(f"timezone {tz!r} is not a time zone this machine knows: use an IANA name such as "
                        "'Europe/Paris' or 'America/New_York' (tzdata), or leave it out for UTC") from None


# -- the feed provider --------------------------------------------------------------

class Alarms:
    """The alarms feed actions and their scheduler."""

    def __init__(self, store: Store, auth: Authenticator, fire: Fire, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.auth = auth
        self.fire = fire
        self.clock = clock
        self._lock = threading.Lock()
        self._checked = int(clock())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle (the feed action) ------------------------------------------------

    def invoke(self, caller_ns: str, feed: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Run feed action ``feed``: returns ``(status, result)`` as an activation would."""
        try:
            return "success", self._lifecycle(caller_ns, feed, params)
        except FeedError as exc:
            return "application error", {"error": str(exc)}

    def _lifecycle(self, caller_ns: str, feed: str, params: dict[str, Any]) -> dict[str, Any]:
        event = str(params.get("lifecycleEvent") or "").upper()
        if event not in EVENTS:
            raise FeedError(f"lifecycleEvent {params.get('lifecycleEvent')!r}: use one of {', '.join(EVENTS)}")
        trigger = params.get("triggerName")
        if not isinstance(trigger, str) or not trigger.strip("/"):
            raise FeedError("triggerName is required: the trigger's fully qualified name, /namespace/name")
        ns, pkg, name = parse_name(trigger, caller_ns)
        if pkg is not None:
            raise FeedError(f"triggerName {trigger!r} is not a trigger name (/namespace/name)")
        key_ns = self.auth.namespace_for("Basic " + _b64(str(params.get("authKey") or "")))
        if key_ns is None or key_ns != ns:
            raise FeedError(f"authKey does not authorize namespace {ns}: pass the key of the trigger's namespace")
        existing = self.store.get_entity("alarm", ns, name)
        if event == "CREATE":
            if self.store.get_entity("trigger", ns, name) is None:
                raise FeedError(f"trigger /{ns}/{name} does not exist: create it before its feed")
            doc = self._registration(feed, ns, name, params)
            self.store.put_entity("alarm", ns, name, doc)
            return {"status": "created", "triggerName": f"/{ns}/{name}"}
        if existing is None:
            raise FeedError(f"trigger /{ns}/{name} has no {feed} feed (CREATE it first)")
        if event == "READ":
            return {"config": {k: existing[k] for k in ("cron", "timezone", "minutes", "date", "startDate", "stopDate",
                                                        "trigger_payload", "name", "namespace") if k in existing},
                    "status": {"active": existing["active"], "dateChanged": existing["dateChanged"],
                               **({"reason": existing["reason"]} if existing.get("reason") else {})}}
        if event == "DELETE":
            self.store.delete_entity("alarm", ns, name)
            return {"status": "deleted"}
        if event == "UPDATE":
            merged = {**{k: existing[k] for k in ("cron", "timezone", "minutes", "date", "startDate", "stopDate",
                                                  "trigger_payload") if k in existing},
                      **{k: v for k, v in params.items() if k not in ("lifecycleEvent", "authKey", "triggerName")}}
            doc = self._registration(existing["feed"], ns, name, merged)
            self.store.put_entity("alarm", ns, name, doc)
            return {"status": "updated"}
        active = event == "UNPAUSE"
        self.store.put_entity("alarm", ns, name, {**existing, "active": active, "reason": None,
                                                  "dateChanged": ent.now_ms(), "updated": ent.now_ms()})
        return {"status": "active" if active else "paused"}

    def _registration(self, feed: str, ns: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
        if feed not in FEEDS:
            raise FeedError(f"feed {feed!r} does not exist; the alarms package has {', '.join(FEEDS)}")
        tz = params.get("timezone") or None
        if tz is not None and feed != "alarm":
            raise FeedError(f"timezone applies to the alarm feed's cron; the {feed} feed's times are absolute")
        payload = params.get("trigger_payload") or {}
        if not isinstance(payload, dict):
            raise FeedError("trigger_payload must be a JSON object (the parameters each fire sends)")
        doc: dict[str, Any] = {"feed": feed, "namespace": ns, "name": name, "trigger_payload": payload,
                               "active": True, "dateChanged": ent.now_ms(), "updated": ent.now_ms(),
                               "created": int(self.clock()), "fired": 0}
        for key in ("startDate", "stopDate"):
            if params.get(key) not in (None, ""):
                doc[key] = _epoch_s(params[key], key)
        if feed == "alarm":
            if not params.get("cron"):
                raise FeedError("cron is required for the alarm feed, e.g. '*/5 * * * *'")
            Cron(str(params["cron"]), tz)  # refused now (cron or time zone), not at the first tick
            doc["cron"] = str(params["cron"])
            if tz is not None:
                doc["timezone"] = str(tz)
        elif feed == "interval":
            try:
                minutes = int(params.get("minutes"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise FeedError("minutes (a positive integer) is required for the interval feed") from None
            if minutes < 1:
                raise FeedError("minutes must be at least 1")
            doc["minutes"] = minutes
        else:
            if params.get("date") in (None, ""):
                raise FeedError("date (ISO 8601, UTC, or epoch milliseconds) is required for the once feed")
            doc["date"] = _epoch_s(params["date"], "date")
        return doc

    # -- scheduling ---------------------------------------------------------------------

    def due(self, doc: dict[str, Any], t: int) -> bool:
        """Is registration ``doc`` due at whole second ``t``?"""
        if not doc.get("active"):
            return False
        if t < doc.get("startDate", 0) or ("stopDate" in doc and t > doc["stopDate"]):
            return False
        if doc["feed"] == "alarm":
            return _cron(doc["cron"], doc.get("timezone")).matches(t)
        if doc["feed"] == "interval":
            start = doc.get("startDate", doc["created"])
            return t > start and (t - start) % (doc["minutes"] * 60) == 0
        return t == doc["date"] or (doc["fired"] == 0 and doc["date"] <= t and t - doc["date"] <= MAX_CATCH_UP_S)

    def tick(self, now: float | None = None) -> int:
        """Fire every registration due in the seconds since the last tick; returns how many fires."""
        with self._lock:
            now_s = int(self.clock() if now is None else now)
            first = max(self._checked + 1, now_s - MAX_CATCH_UP_S)
            self._checked = max(self._checked, now_s)
            if first > now_s:
                return 0
            fired = 0
            for doc in self.store.list_all_entities("alarm"):
                for t in range(first, now_s + 1):
                    if self.due(doc, t):
                        fired += self._fire(doc)
                        break  # one fire per tick per schedule
            return fired

    def _fire(self, doc: dict[str, Any]) -> int:
        ns, name = doc["namespace"], doc["name"]
        update: dict[str, Any] = {"fired": doc["fired"] + 1}
        try:
            self.fire(ns, name, dict(doc["trigger_payload"]))
        except WhiskError as err:
            if err.status == 404:  # the trigger went away without a DELETE: stop, as the provider does
                update.update(active=False, reason=f"trigger /{ns}/{name} no longer exists",
                              dateChanged=ent.now_ms())
            log.warning("alarm for /%s/%s: fire refused (%s)", ns, name, err.message)
        if doc["feed"] == "once":
            update.update(active=False, dateChanged=ent.now_ms())
        self.store.put_entity("alarm", ns, name, {**doc, **update, "updated": ent.now_ms()})
        return 1

    def start(self, tick_s: float = 1.0) -> None:
        """Tick every ``tick_s`` seconds on a daemon thread until :meth:`stop`."""
        def loop() -> None:
            while not self._stop.wait(tick_s):
                try:
                    self.tick()
                except Exception:  # a bad record must not stop every other schedule
                    log.exception("alarm tick failed")
        self._checked = int(self.clock())
        self._thread = threading.Thread(target=loop, name="lw-alarms", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


# -- the feed actions as OpenWhisk entities --------------------------------------------

def feed_action(name: str) -> dict[str, Any]:
    """The document ``GET /namespaces/whisk.system/actions/alarms/<name>`` returns."""
    return {"namespace": f"{SYSTEM_NS}/{PACKAGE}", "name": name, "version": "0.0.1", "publish": True,
            "exec": {"kind": "builtin", "binary": False},
            "parameters": [],
            "annotations": [{"key": "feed", "value": True},
                            {"key": "description", "value": f"localwhisk's built-in {name} feed"}],
            "limits": dict(ent.DEFAULT_LIMITS), "updated": 0}


def package_doc() -> dict[str, Any]:
    return {"namespace": SYSTEM_NS, "name": PACKAGE, "version": "0.0.1", "publish": True,
            "parameters": [], "annotations": [{"key": "description", "value": "Alarm-based feeds (built in)"}],
            "binding": {}, "actions": [], "feeds": [{"name": f, "version": "0.0.1",
                                                     "annotations": feed_action(f)["annotations"]} for f in FEEDS],
            "updated": 0}


def feed_record(caller_ns: str, feed: str, status: str, result: dict[str, Any], start: int) -> dict[str, Any]:
    """The activation record of one feed invocation (stored like any action's)."""
    end = ent.now_ms()
    return {"namespace": caller_ns, "name": feed, "subject": caller_ns, "activationId": new_id(),
            "version": "0.0.1", "publish": False, "start": start, "end": end, "duration": end - start,
            "response": response_of(status, result), "logs": [],
            "annotations": [{"key": "path", "value": f"{SYSTEM_NS}/{PACKAGE}/{feed}"},
                            {"key": "kind", "value": "builtin"}]}


def _epoch_s(value: Any, field: str) -> int:
    """ISO 8601 (UTC unless an offset is given) or epoch milliseconds -> epoch seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value / 1000)
    text = str(value).strip()
    if text.isdigit():
        return int(text) // 1000
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FeedError(f"{field} {value!r} is not a date: use ISO 8601 (2026-01-31T08:00:00Z) "
                        "or epoch milliseconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return calendar.timegm(dt.utctimetuple())


def _b64(text: str) -> str:
    import base64
    return base64.b64encode(text.encode()).decode()
