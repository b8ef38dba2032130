"""The socket-free core: ``Controller.handle(method, path, query, headers, body) -> Response``.

Implements the OpenWhisk REST API subset (ref §1) plus web actions (§2) on
plain values, so every rule is unit-tested without HTTP; ``localwhisk.server``
only adapts it to ASGI. Routes mirror CTRL/*.scala; statuses and messages are
OpenWhisk's (see ``errors``).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping
from urllib.parse import parse_qsl, unquote

from localwhisk import alarms as feeds
from localwhisk import entities as ent
from localwhisk.activations import HTTP_STATUS, Invoker, StorePolicy, Target, new_id, summary, wait
from localwhisk.auth import Authenticator
from localwhisk.errors import (BAD_AUTH, NOT_AUTHENTICATED, NOT_AUTHORIZED, RESERVED_PARAMS, WhiskError,
                               bad_request, conflict, not_found, refuse_overwrite, too_large)
from localwhisk.params import epoch_param, json_object, json_payload, page
from localwhisk.response import Response, error_response, json_response
from localwhisk.sequences import SequenceRunner, check_components, fqn
from localwhisk.store import Store
from localwhisk.triggers import FIRES_PER_MINUTE, Triggers
from localwhisk.webactions import WebActions

log = logging.getLogger(__name__)

PAYLOAD_MAX = 1024 * 1024          # activation.payload.max
MAX_BLOCKING_WAIT_MS = 60000       # max-wait-for-blocking-activation
REST_CORS = [("Access-Control-Allow-Origin", "*"),
             ("Access-Control-Allow-Methods", "GET, DELETE, POST, PUT, HEAD"),
             ("Access-Control-Allow-Headers", "Authorization, Origin, X-Requested-With, Content-Type, Accept, User-Agent")]


class Controller:
    """Everything of localwhisk except the runtime and the HTTP server."""

    def __init__(self, runtime: Any, store: Store, auth: Authenticator, *, max_concurrent: int = 30,
                 web_wait_ms: int = MAX_BLOCKING_WAIT_MS, store_policy: StorePolicy | None = None,
                 fires_per_minute: int = FIRES_PER_MINUTE) -> None:
        self.store = store
        self.auth = auth
        self.runtime = runtime
        self.invoker = Invoker(runtime, store, api_keys=auth.key_of, max_concurrent=max_concurrent,
                               store_policy=store_policy)
        self.invoker.sequence_runner = SequenceRunner(self.lookup)
        self.web = WebActions(self.lookup, auth, self.invoker, wait_ms=web_wait_ms)
        self.triggers = Triggers(store, self.invoker, self.lookup, fires_per_minute=fires_per_minute)
        self.alarms = feeds.Alarms(store, auth, self.triggers.fire)
        self.recovered = self.invoker.recover()

    def close(self) -> None:
        self.alarms.stop()
        self.invoker.shutdown()

    # -- entry point -------------------------------------------------------------

    def handle(self, method: str, path: str, query: str | Mapping[str, str] = "",
               headers: Mapping[str, str] | None = None, body: bytes = b"") -> Response:
        """Answer one request. ``query`` is the raw query string (or a mapping); never raises."""
        tid = new_id()
        method = method.upper()
        hdrs = {k.lower(): v for k, v in (headers or {}).items()}
        raw_query = query if isinstance(query, str) else "&".join(f"{k}={v}" for k, v in query.items())
        try:
            if len(body) > PAYLOAD_MAX:
                raise too_large(len(body), PAYLOAD_MAX)
            if path.startswith("/api/v1/web/"):
                return self.web.handle(method, path[len("/api/v1/web/"):], raw_query, hdrs, body, tid)
            return self._rest(method, path, dict(parse_qsl(raw_query, keep_blank_values=True)), hdrs, body, tid)
        except WhiskError as err:
            return error_response(err, tid)
        except Exception:  # every request gets an answer, in OpenWhisk's shape
            log.exception("request %s %s failed", method, path)
            return error_response(WhiskError(500, "An internal error occurred."), tid)

    def _rest(self, method: str, path: str, q: dict[str, str], headers: dict[str, str], body: bytes,
              tid: str) -> Response:
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        if method == "OPTIONS":
            return Response(200, list(REST_CORS), b"")
        if not parts:
            if method != "GET":
                raise WhiskError(405, "HTTP method not allowed, supported methods: GET")
            return json_response(200, self.info())
        if parts[:2] != ["api", "v1"]:
            raise not_found()
        if len(parts) == 2:
            return json_response(200, {"api_version": "1.0.0", "api_version_path": "v1",
                                       "description": "localwhisk REST API", "build": "localwhisk"})
        caller = self._authenticate(headers)
        if parts[2] != "namespaces":
            raise not_found()
        if len(parts) == 3:
            return json_response(200, [caller])
        ns = caller if parts[3] == "_" else parts[3]
        if ns == feeds.SYSTEM_NS and parts[4:6] in (["actions", feeds.PACKAGE], ["packages", feeds.PACKAGE]):
            return self._system_feed(method, caller, parts[4], parts[6:], q, body)
        if ns != caller:
            raise WhiskError(403, NOT_AUTHORIZED)
        if len(parts) == 4:
            raise not_found()
        collection, rest = parts[4], parts[5:]
        if collection == "actions":
            return self._actions(method, ns, rest, q, body, tid)
        if collection == "packages":
            return self._packages(method, ns, rest, q, body)
        if collection == "activations":
            return self._activations(method, ns, rest, q)
        if collection == "triggers":
            return self.triggers.handle_triggers(method, ns, rest, q, body, tid)
        if collection == "rules":
            return self.triggers.handle_rules(method, ns, rest, q, body)
        if collection == "feeds" and method == "GET" and not rest:
            return json_response(200, [])
        raise not_found()

    def _system_feed(self, method: str, caller: str, collection: str, rest: list[str], q: dict[str, str],
                     body: bytes) -> Response:
        """``/whisk.system/alarms``: the built-in feeds, readable and invocable by every namespace
        (a public package in OpenWhisk). Invoking one runs its lifecycle event in-process."""
        if collection == "packages":
            if method != "GET" or rest:
                raise WhiskError(405, "HTTP method not allowed, supported methods: GET")
            return json_response(200, feeds.package_doc())
        if len(rest) != 1 or rest[0] not in feeds.FEEDS:
            raise not_found()
        if method == "GET":
            return json_response(200, feeds.feed_action(rest[0]))
        if method != "POST":
            raise WhiskError(405, "HTTP method not allowed, supported methods: GET, POST")
        start = ent.now_ms()
        status, result = self.alarms.invoke(caller, rest[0], json_object(body))
        record = feeds.feed_record(caller, rest[0], status, result, start)
        self.store.put_activation(record, done=True)
        id_header = [("x-openwhisk-activation-id", record["activationId"])]
        if q.get("blocking", "false").lower() != "true":
            return json_response(202, {"activationId": record["activationId"]}, id_header)
        if q.get("result", "false").lower() == "true":
            return json_response(HTTP_STATUS[status], result, id_header)
        return json_response(HTTP_STATUS[status], record, id_header)

    def info(self) -> dict[str, Any]:
        """``GET /`` (CTRL/Controller.scala): what wskdeploy reads to learn the runtimes."""
        return {
            "description": "OpenWhisk (localwhisk)",
            "support": {"github": "https://github.com/apache/openwhisk/issues"},
            "api_paths": ["/api/v1"],
            "limits": {"concurrent_actions": self.invoker.max_concurrent, "sequence_length": 50,
                       "triggers_per_minute": self.triggers.fires_per_minute,
                       "min_action_duration": 100, "max_action_duration": 300000,
                       "min_action_memory": 128 * 2**20, "max_action_memory": 512 * 2**20,
                       "min_action_logs": 0, "max_action_logs": 10 * 2**20},
            "runtimes": ent.runtimes_manifest(),
        }

    def _authenticate(self, headers: dict[str, str]) -> str:
        header = headers.get("authorization")
        if not header:
            raise WhiskError(401, NOT_AUTHENTICATED)
        ns = self.auth.namespace_for(header)
        if ns is None:
            raise WhiskError(401, BAD_AUTH)
        return ns

    # -- lookups -----------------------------------------------------------------

    def lookup(self, ns: str, pkg: str | None, name: str) -> Target | None:
        package = None
        if pkg:
            package = self.store.get_entity("package", ns, pkg)
            if package is None:
                return None
        action = self.store.get_entity("action", ns, f"{pkg}/{name}" if pkg else name)
        return Target(ns, package, action) if action else None

    # -- actions -----------------------------------------------------------------

    def _actions(self, method: str, ns: str, rest: list[str], q: dict[str, str], body: bytes,
                 tid: str) -> Response:
        if not rest:
            if method != "GET":
                raise WhiskError(405, "HTTP method not allowed, supported methods: GET")
            return self._list(self.store.list_entities("action", ns), q, ent.action_summary)
        if len(rest) > 2:
            raise not_found()
        pkg, name = (rest[0], rest[1]) if len(rest) == 2 else (None, rest[0])
        key = f"{pkg}/{name}" if pkg else name
        if method == "GET":
            doc = self.store.get_entity("action", ns, key)
            if doc is None:
                raise not_found()
            return json_response(200, ent.without_code(doc) if q.get("code") == "false" else doc)
        if method == "PUT":
            return self._put_action(ns, pkg, name, key, q, body)
        if method == "DELETE":
            doc = self.store.get_entity("action", ns, key)
            if doc is None or not self.store.delete_entity("action", ns, key):
                raise not_found()
            self._forget(fqn(ns, pkg, name))
            return json_response(200, doc)
        if method == "POST":
            return self._invoke(ns, pkg, name, q, body, tid)
        raise WhiskError(405, "HTTP method not allowed, supported methods: GET, PUT, DELETE, POST")

    def _put_action(self, ns: str, pkg: str | None, name: str, key: str, q: dict[str, str],
                    body: bytes) -> Response:
        content = json_object(body)
        if pkg is not None and self.store.get_entity("package", ns, pkg) is None:
            raise not_found()
        existing = self.store.get_entity("action", ns, key)
        refuse_overwrite(existing, q)
        doc = ent.build_action(ns, pkg, name, content, existing, namespace_limit=self.invoker.max_concurrent)
        if doc["exec"]["kind"] == "sequence":
            doc["exec"]["components"] = check_components(doc["exec"]["components"], ns, fqn(ns, pkg, name),
                                                         self.lookup)
            doc["parameters"] = []  # sequences take no parameters of their own (`_actions` replaces them)
        self.store.put_entity("action", ns, key, doc)
        self._forget(fqn(ns, pkg, name))
        return json_response(200, doc)

    def _forget(self, action_fqn: str) -> None:
        forget = getattr(self.runtime, "forget", None)
        if forget is not None:
            forget(action_fqn)

    def _invoke(self, ns: str, pkg: str | None, name: str, q: dict[str, str], body: bytes, tid: str) -> Response:
        blocking = q.get("blocking", "false").lower() == "true"
        result_only = q.get("result", "false").lower() == "true"
        wait_ms = MAX_BLOCKING_WAIT_MS
        if "timeout" in q:
            try:
                wait_ms = int(q["timeout"])
            except ValueError:
                wait_ms = -1
            if not 1 <= wait_ms <= MAX_BLOCKING_WAIT_MS:
                raise bad_request(f"Timeout must be number of milliseconds up to {MAX_BLOCKING_WAIT_MS}.")
        payload = json_payload(body)
        target = self.lookup(ns, pkg, name)
        if target is None:
            raise not_found()
        if isinstance(payload, dict) and ent.truthy(ent.annotation(target.action, "final")):
            defined = target.default_params
            if any(k in defined for k in payload):
                raise bad_request(RESERVED_PARAMS)
        inv = self.invoker.submit(ns, target, payload, transaction_id=tid, blocking=blocking)
        id_header = [("x-openwhisk-activation-id", inv.activation_id)]
        record = wait(inv, wait_ms) if blocking else None
        if record is None:
            return json_response(202, {"activationId": inv.activation_id}, id_header)
        status = HTTP_STATUS[record["response"]["status"]]
        if result_only or isinstance(record["response"]["result"], list):
            # An array result comes back bare even without result=true (CTRL/Actions.scala).
            return json_response(status, record["response"]["result"], id_header)
        # Blocking replies carry no logs; fetching the activation gets them (OW:docs/rest_api.md).
        return json_response(status, {**record, "logs": []}, id_header)

    # -- packages ----------------------------------------------------------------

    def _packages(self, method: str, ns: str, rest: list[str], q: dict[str, str], body: bytes) -> Response:
        if not rest:
            if method != "GET":
                raise WhiskError(405, "HTTP method not allowed, supported methods: GET")
            return self._list(self.store.list_entities("package", ns), q, ent.package_summary)
        if len(rest) != 1:
            raise not_found()
        name = rest[0]
        existing = self.store.get_entity("package", ns, name)
        if method == "GET":
            if existing is None:
                raise not_found()
            actions = [{"name": a["name"], "version": a["version"], "annotations": a["annotations"]}
                       for a in self.store.list_entities("action", ns, package=name)]
            return json_response(200, {**existing, "actions": actions, "feeds": []})
        if method == "PUT":
            refuse_overwrite(existing, q)
            doc = ent.build_package(ns, name, json_object(body), existing)
            self.store.put_entity("package", ns, name, doc)
            return json_response(200, doc)
        if method == "DELETE":
            if existing is None:
                raise not_found()
            contents = self.store.list_entities("action", ns, package=name)
            if contents and q.get("force", "false").lower() != "true":
                raise conflict(f"Package not empty (contains {len(contents)} "
                               f"{'entity' if len(contents) == 1 else 'entities'}). "
                               "Set force param or delete package contents.")
            for a in contents:
                self.store.delete_entity("action", ns, f"{name}/{a['name']}")
                self._forget(fqn(ns, name, a["name"]))
            self.store.delete_entity("package", ns, name)
            return json_response(200, existing)
        raise WhiskError(405, "HTTP method not allowed, supported methods: GET, PUT, DELETE")

    # -- activations ---------------------------------------------------------------

    def _activations(self, method: str, ns: str, rest: list[str], q: dict[str, str]) -> Response:
        if method != "GET":
            raise WhiskError(405, "HTTP method not allowed, supported methods: GET")
        if not rest:
            # As OpenWhisk's Activations.scala and its store tests (ActivationStoreBehaviorBase):
            # since/upto are inclusive bounds on `start` (epoch ms); count honours skip;
            # docs=true gives the full records and is refused together with count.
            name = q.get("name", "").strip() or None
            if name is not None and len(name.strip("/").split("/")) > 2:
                raise bad_request(f"Parameter may be a 'simple' name or 'package-name/simple' name: {name}")
            since, upto = epoch_param(q, "since"), epoch_param(q, "upto")
            count = q.get("count", "false").lower() == "true"
            docs = q.get("docs", "false").lower() == "true"
            skip, limit = page(q)
            if count and docs:
                raise bad_request("The parameter 'docs' is not permitted with 'count'.")
            if count:
                total = self.store.count_activations(ns, name=name, since=since, upto=upto)
                return json_response(200, {"activations": max(0, total - skip)})
            records = self.store.list_activations(ns, name=name, since=since, upto=upto, skip=skip, limit=limit)
            return json_response(200, records if docs else [summary(r) for r in records])
        found = self.store.get_activation(rest[0])
        if found is None or not found[1] or found[0]["namespace"] != ns or len(rest) > 2:
            raise not_found()
        record = found[0]
        if len(rest) == 1:
            return json_response(200, record)
        if rest[1] == "logs":
            return json_response(200, {"logs": record["logs"]})
        if rest[1] == "result":
            return json_response(200, record["response"])
        raise not_found()

    # -- listing ---------------------------------------------------------------------

    def _list(self, docs: list[dict[str, Any]], q: dict[str, str], shape: Any) -> Response:
        if q.get("count", "false").lower() == "true":
            return json_response(200, {"actions" if shape is ent.action_summary else "packages": len(docs)})
        skip, limit = page(q)
        return json_response(200, [shape(d) for d in docs[skip:skip + limit]])
