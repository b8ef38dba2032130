"""Triggers and rules (CTRL/Triggers.scala, CTRL/Rules.scala): OpenWhisk's event model.

A trigger is a named channel with default parameters; a rule links a trigger
to an action (or sequence) and is ``active`` or ``inactive``. Firing a trigger
(``POST /namespaces/{ns}/triggers/{name}``) merges the fire parameters over
the trigger's, records one *trigger activation* and invokes every active
rule's action non-blocking with those parameters, each invocation's record
carrying ``cause`` = the trigger activation id. As OpenWhisk: 202
``{"activationId"}`` when at least one rule is active, 204 and no record when
none is; the trigger activation's ``logs`` are one JSON line per rule
(``{statusCode, success, activationId, rule, action}`` or ``error``).

The trigger document keeps a ``rules`` map (``"ns/rule" -> {action, status}``)
as OpenWhisk's does, so a fire reads one document. Fires are rate-limited
per namespace as OpenWhisk's RateThrottler does (``limits.triggers.fires.perMinute``,
60 by default; ``serve --fires-per-minute``): a fixed one-minute window,
every fire charged (refused ones too), the one over the limit answered 429
"Too many requests in the last minute (count: 61, allowed: 60)." — REST
fires and the alarms feeds' alike. The concurrency cap on the rules'
actions applies too (a rule refused by it is logged in the trigger activation).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

from localwhisk import entities as ent
from localwhisk.activations import Invoker, Target, new_id, response_of
from localwhisk.errors import WhiskError, bad_request, not_found, refuse_overwrite, too_many_per_minute
from localwhisk.params import json_object, json_payload, page
from localwhisk.response import Response, json_response
from localwhisk.sequences import parse_name
from localwhisk.store import Store

log = logging.getLogger(__name__)

Lookup = Callable[[str, str | None, str], "Target | None"]
STATUSES = ("active", "inactive")
FIRES_PER_MINUTE = 60  # OpenWhisk's default limits.triggers.fires.perMinute


def _path(ns: str, pkg: str | None) -> str:
    return f"{ns}/{pkg}" if pkg else ns


class Triggers:
    """The ``triggers`` and ``rules`` collections and :meth:`fire` (also used by feeds)."""

    def __init__(self, store: Store, invoker: Invoker, lookup: Lookup, *, fires_per_minute: int = FIRES_PER_MINUTE,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.invoker = invoker
        self.lookup = lookup
        self.fires_per_minute = fires_per_minute
        self.clock = clock
        self._minute: dict[str, tuple[int, int]] = {}  # namespace -> (minute, fires charged in it)
        self._rate_lock = threading.Lock()

    def _charge(self, ns: str) -> None:
        """One fire charged to ``ns``'s current minute; 429 past the limit (OpenWhisk's RateThrottler)."""
        minute = int(self.clock() // 60)
        with self._rate_lock:
            last, count = self._minute.get(ns, (minute, 0))
            count = (count if last == minute else 0) + 1
            self._minute[ns] = (minute, count)
        if count > self.fires_per_minute:
            raise too_many_per_minute(count, self.fires_per_minute)

    def _read(self, type_: str, method: str, ns: str, rest: list[str], q: dict[str, str],
              shape: Any) -> Response | tuple[str, dict[str, Any] | None]:
        """The list and GET answers of a collection; otherwise ``(name, existing document or None)``.

        A PUT onto one that exists without ``?overwrite=true`` is refused here (409), for both collections.
        """
        if not rest:
            if method != "GET":
                raise WhiskError(405, "HTTP method not allowed, supported methods: GET")
            docs = self.store.list_entities(type_, ns)
            if q.get("count", "false").lower() == "true":
                return json_response(200, {type_ + "s": len(docs)})
            skip, limit = page(q)
            return json_response(200, [shape(d) for d in docs[skip:skip + limit]])
        if len(rest) != 1:
            raise not_found()
        existing = self.store.get_entity(type_, ns, rest[0])
        if method == "GET":
            if existing is None:
                raise not_found()
            return json_response(200, existing)
        if method == "PUT":
            refuse_overwrite(existing, q)
        return rest[0], existing

    # -- triggers ----------------------------------------------------------------

    def handle_triggers(self, method: str, ns: str, rest: list[str], q: dict[str, str], body: bytes,
                        tid: str) -> Response:
        got = self._read("trigger", method, ns, rest, q, _trigger_summary)
        if isinstance(got, Response):
            return got
        name, existing = got
        if method == "PUT":
            doc = build_trigger(ns, name, json_object(body), existing)
            self.store.put_entity("trigger", ns, name, doc)
            return json_response(200, doc)
        if method == "DELETE":
            if existing is None or not self.store.delete_entity("trigger", ns, name):
                raise not_found()
            return json_response(200, existing)
        if method == "POST":
            payload = json_payload(body, (dict,), "a JSON object")
            aid = self.fire(ns, name, payload, tid)  # type: ignore[arg-type]
            if aid is None:
                return Response(204, [], b"")
            return json_response(202, {"activationId": aid}, [("x-openwhisk-activation-id", aid)])
        raise WhiskError(405, "HTTP method not allowed, supported methods: GET, PUT, DELETE, POST")

    def fire(self, ns: str, name: str, payload: dict[str, Any], tid: str | None = None) -> str | None:
        """Fire ``ns/name``; returns the trigger activation id, or None when no rule is active.

        Raises WhiskError 404 when the trigger does not exist, 429 past the namespace's fires per minute.
        """
        self._charge(ns)  # as OpenWhisk: the entitlement check comes before the trigger is read
        trigger = self.store.get_entity("trigger", ns, name)
        if trigger is None:
            raise not_found()
        active = {r: link for r, link in (trigger.get("rules") or {}).items() if link.get("status") == "active"}
        if not active:
            return None
        args = {**{p["key"]: p.get("value") for p in trigger["parameters"]}, **payload}
        aid, tid = new_id(), tid or new_id()
        start = ent.now_ms()
        logs = []
        for rule, link in sorted(active.items()):
            action_path = f"{link['action']['path']}/{link['action']['name']}"
            entry: dict[str, Any] = {"rule": rule, "action": action_path}
            try:
                target = self.lookup(*parse_name("/" + action_path, ns))
                if target is None:
                    raise not_found()
                inv = self.invoker.submit(ns, target, args, transaction_id=tid, blocking=False, cause=aid)
                entry.update(statusCode=0, success=True, activationId=inv.activation_id)
            except WhiskError as err:  # the other rules still run, as in OpenWhisk
                entry.update(statusCode=err.status, success=False, error=err.message)
            logs.append(json.dumps(entry, separators=(",", ":")))
        end = ent.now_ms()
        record = {
            "namespace": ns, "name": name, "subject": ns, "activationId": aid,
            "version": trigger["version"], "publish": False, "start": start, "end": end, "duration": end - start,
            "response": response_of("success", args), "logs": logs,
            "annotations": [{"key": "path", "value": f"{ns}/{name}"}, {"key": "kind", "value": "trigger"}],
        }
        self.store.put_activation(record, done=True)
        return aid

    # -- rules -------------------------------------------------------------------

    def handle_rules(self, method: str, ns: str, rest: list[str], q: dict[str, str], body: bytes) -> Response:
        got = self._read("rule", method, ns, rest, q, _rule_summary)
        if isinstance(got, Response):
            return got
        name, existing = got
        if method == "PUT":
            return json_response(200, self._put_rule(ns, name, json_object(body), existing))
        if method == "DELETE":
            if existing is None or not self.store.delete_entity("rule", ns, name):
                raise not_found()
            self._link(existing, None)
            return json_response(200, existing)
        if method == "POST":
            if existing is None:
                raise not_found()
            status = json_object(body).get("status")
            if status not in STATUSES:
                raise bad_request("Rule status must be 'active' or 'inactive'.")
            if status != existing["status"]:
                doc = {**existing, "status": status, "updated": ent.now_ms()}
                self.store.put_entity("rule", ns, name, doc)
                self._link(doc, status)
            return json_response(200, {})
        raise WhiskError(405, "HTTP method not allowed, supported methods: GET, PUT, DELETE, POST")

    def _put_rule(self, ns: str, name: str, body: dict[str, Any], existing: dict[str, Any] | None) -> dict:
        for field in ("trigger", "action"):
            if not isinstance(body.get(field), str) or not body[field].strip():
                if existing is None:
                    raise bad_request(f"The request content was malformed:\n'{field}' is required.")
                body[field] = "/" + existing[field]["path"] + "/" + existing[field]["name"]
        t_ns, t_pkg, t_name = parse_name(body["trigger"], ns)
        if t_pkg is not None or t_ns != ns:
            raise bad_request(f"The trigger '{body['trigger']}' must be a trigger of namespace {ns}.")
        if self.store.get_entity("trigger", ns, t_name) is None:
            raise not_found()
        a_ns, a_pkg, a_name = parse_name(body["action"], ns)
        if self.lookup(a_ns, a_pkg, a_name) is None:
            raise not_found()
        if existing is not None:
            self._link(existing, None)  # the old trigger forgets the rule
        annots = ent.check_kv_list(body.get("annotations"), "annotations") if "annotations" in body else None
        doc = {
            "namespace": ns, "name": name,
            "version": ent.up_patch(existing["version"]) if existing else str(body.get("version") or "0.0.1"),
            "publish": bool(body.get("publish", False)),
            "annotations": annots if annots is not None else (existing["annotations"] if existing else []),
            "status": "active",  # a created or updated rule is active (CTRL/Rules.scala)
            "trigger": {"path": ns, "name": t_name},
            "action": {"path": _path(a_ns, a_pkg), "name": a_name},
            "updated": ent.now_ms(),
        }
        self.store.put_entity("rule", ns, name, doc)
        self._link(doc, "active")
        return doc

    def _link(self, rule: dict[str, Any], status: str | None) -> None:
        """Record (or with None remove) the rule in its trigger's ``rules`` map."""
        ns, t_name = rule["trigger"]["path"], rule["trigger"]["name"]
        trigger = self.store.get_entity("trigger", ns, t_name)
        if trigger is None:
            return
        rules = dict(trigger.get("rules") or {})
        key = f"{rule['namespace']}/{rule['name']}"
        if status is None:
            rules.pop(key, None)
        else:
            rules[key] = {"action": rule["action"], "status": status}
        self.store.put_entity("trigger", ns, t_name, {**trigger, "rules": rules})


def build_trigger(ns: str, name: str, body: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
    """The trigger document of a PUT (ENT/WhiskTrigger.scala); an update keeps its rules."""
    params = ent.check_kv_list(body.get("parameters"), "parameters") if "parameters" in body else None
    annots = ent.check_kv_list(body.get("annotations"), "annotations") if "annotations" in body else None
    return {
        "namespace": ns, "name": name,
        "version": ent.up_patch(existing["version"]) if existing else str(body.get("version") or "0.0.1"),
        "publish": bool(body.get("publish", existing.get("publish", False) if existing else False)),
        "parameters": params if params is not None else (existing["parameters"] if existing else []),
        "annotations": annots if annots is not None else (existing["annotations"] if existing else []),
        "limits": {},
        "rules": dict(existing.get("rules") or {}) if existing else {},
        "updated": ent.now_ms(),
    }


def _trigger_summary(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc[k] for k in ("namespace", "name", "version", "publish", "annotations", "updated")}


def _rule_summary(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc[k] for k in ("namespace", "name", "version", "publish", "annotations", "status",
                                "trigger", "action", "updated")}

