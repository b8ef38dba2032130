"""Invoking actions: activation records, the namespace concurrency cap, the worker pool.

Every invoke gets a 32-hex activation id and a record persisted *before* it
runs (``done=0``), so a crash leaves evidence that the next start turns into a
"whisk internal error" record (:meth:`Invoker.recover`). Runs happen on a
thread pool because ``runtime.run`` blocks; a blocking caller waits on the
future up to its timeout and gets 202 otherwise, exactly like OpenWhisk.

Which finished records are kept follows OpenWhisk's activation store
(``ActivationStore.storeAfterCheck``): ``whisk.activation.store-blocking-result-level``
and ``store-non-blocking-result-level``, each ``STORE_ALWAYS`` (OpenWhisk's
default), ``STORE_FAILURES`` or ``STORE_FAILURES_NOT_APPLICATION_ERRORS``
(:class:`StorePolicy`). A record not kept is deleted when the activation ends,
logs and all, as OpenWhisk never writes it: a blocking caller still gets the
answer, a later ``GET /activations/<id>`` is 404.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from localwhisk import entities as ent
from localwhisk.errors import too_many
from localwhisk.runtime.model import ActionCode, Limits
from localwhisk.store import Store

log = logging.getLogger(__name__)

STATUS_CODES = {"success": 0, "application error": 1, "action developer error": 2, "whisk internal error": 3}
HTTP_STATUS = {"success": 200, "application error": 502, "action developer error": 502, "whisk internal error": 500}
RESTART_MESSAGE = "The activation did not complete because localwhisk stopped while it was running."
STORE_LEVELS = ("STORE_ALWAYS", "STORE_FAILURES", "STORE_FAILURES_NOT_APPLICATION_ERRORS")
# OpenWhisk's environment overrides of whisk.activation.store-(non-)blocking-result-level (pureconfig names).
STORE_ENV = {"blocking": "CONFIG_whisk_activation_storeBlockingResultLevel",
             "non_blocking": "CONFIG_whisk_activation_storeNonBlockingResultLevel"}


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Target:
    """What to run: the action document, its package (or None) and its full path."""

    namespace: str               # the namespace that owns the action ("guest")
    package: dict[str, Any] | None
    action: dict[str, Any]

    @property
    def path(self) -> str:       # "guest/pkg/name" (the activation's `path` annotation)
        pkg = self.package["name"] + "/" if self.package else ""
        return f"{self.namespace}/{pkg}{self.action['name']}"

    @property
    def default_params(self) -> dict[str, Any]:
        pkg = self.package["parameters"] if self.package else []
        return {p["key"]: p.get("value") for p in ent.kv_merge(pkg, self.action["parameters"]) if not p.get("init")}


@dataclass(frozen=True)
class StorePolicy:
    """Which finished activations are stored, per OpenWhisk's two result levels."""

    blocking: str = "STORE_ALWAYS"
    non_blocking: str = "STORE_ALWAYS"

    def __post_init__(self) -> None:
        for name in ("blocking", "non_blocking"):
            if getattr(self, name) not in STORE_LEVELS:
                raise ValueError(f"{STORE_ENV[name]}={getattr(self, name)!r}: use one of {', '.join(STORE_LEVELS)}")

    @classmethod
    def from_env(cls, environ: Any, **overrides: str | None) -> "StorePolicy":
        """Levels from OpenWhisk's environment names; non-None ``overrides`` win."""
        levels = {k: environ.get(v) or "STORE_ALWAYS" for k, v in STORE_ENV.items()}
        levels.update({k: v for k, v in overrides.items() if v})
        return cls(**levels)

    def keeps(self, response: dict[str, Any], *, blocking: bool) -> bool:
        level = self.blocking if blocking else self.non_blocking
        if level == "STORE_ALWAYS":
            return True
        if level == "STORE_FAILURES":
            return response["status"] != "success"
        return response["status"] in ("action developer error", "whisk internal error")


@dataclass
class Invocation:
    activation_id: str
    future: Future


def response_of(status: str, result: Any) -> dict[str, Any]:
    size = len(json.dumps(result, separators=(",", ":"), ensure_ascii=False).encode())
    return {"status": status, "success": status == "success", "result": result, "size": size}


class Invoker:
    """Runs activations on a pool; owns the per-namespace in-flight count (429)."""

    def __init__(self, runtime: Any, store: Store, *, api_keys: Callable[[str], str | None],
                 max_concurrent: int = 30, clock: Callable[[], int] = ent.now_ms,
                 store_policy: StorePolicy | None = None) -> None:
        self.runtime = runtime
        self.store = store
        self.store_policy = store_policy or StorePolicy()
        self.max_concurrent = max_concurrent
        self._api_keys = api_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}
        # One worker per allowed concurrent activation, so an admitted activation never queues here.
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent + 2, thread_name_prefix="lw-activation")
        self.sequence_runner: Callable[..., dict[str, Any]] | None = None

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def in_flight(self, namespace: str) -> int:
        return self._in_flight.get(namespace, 0)

    # -- admission ---------------------------------------------------------

    def submit(self, caller_ns: str, target: Target, args: Any, *, transaction_id: str,
               blocking: bool, cause: str | None = None) -> Invocation:
        """Admit (or 429) and start an activation in the pool. ``blocking``: the caller
        waits for the answer (decides whether the record is stored, :class:`StorePolicy`);
        ``cause``: the trigger activation that caused it (a rule's invocation)."""
        with self._lock:
            count = self._in_flight.get(caller_ns, 0)
            if count >= self.max_concurrent:
                # OpenWhisk's ConcurrentRateLimit reports the count in flight, not count + 1.
                raise too_many(count, self.max_concurrent)
            self._in_flight[caller_ns] = count + 1
        aid = new_id()
        submitted = self._clock()
        try:
            fut = self._pool.submit(self._guarded, caller_ns, target, args, aid, transaction_id, submitted,
                                    blocking, cause)
        except RuntimeError:
            self._release(caller_ns)
            raise
        return Invocation(aid, fut)

    def _release(self, ns: str) -> None:
        with self._lock:
            self._in_flight[ns] = self._in_flight.get(ns, 1) - 1

    def _guarded(self, caller_ns: str, target: Target, args: Any, aid: str, tid: str, submitted: int,
                 blocking: bool, cause: str | None = None) -> dict:
        try:
            return self.run(caller_ns, target, args, aid, tid, submitted=submitted, blocking=blocking,
                            cause=cause)
        finally:
            self._release(caller_ns)

    # -- running -------------------------------------------------------------

    def run(self, caller_ns: str, target: Target, args: Any, aid: str, tid: str, *, submitted: int,
            cause: str | None = None, topmost: bool = True, blocking: bool = True) -> dict[str, Any]:
        """Run synchronously (in the calling thread) and return the completed record."""
        if target.action["exec"]["kind"] == "sequence":
            assert self.sequence_runner is not None
            return self.sequence_runner(self, caller_ns, target, args, aid, tid,
                                        submitted=submitted, cause=cause, topmost=topmost, blocking=blocking)
        start = self._clock()
        record = self._skeleton(caller_ns, target, aid, start, cause, topmost)
        self.store.put_activation(record, done=False)
        try:
            outcome = self._run_runtime(caller_ns, target, args, aid, tid)
        except Exception as exc:  # the runtime promises not to raise; never leave a record open anyway
            log.exception("activation %s: runtime failed", aid)
            end = self._clock()
            record.update(start=start, end=end, duration=end - start,
                          response=response_of("whisk internal error", {"error": f"Runtime failure: {exc}"}))
            record["annotations"] += [{"key": "waitTime", "value": start - submitted}]
        else:
            # As ContainerProxy.initializeAndRun: a cold start's interval begins when init
            # began, so start/duration include initTime (a failed init: the init alone).
            run_start = outcome.start_ms - (outcome.init_time_ms or 0)
            record.update(start=run_start, end=outcome.end_ms, duration=outcome.end_ms - run_start,
                          response=response_of(outcome.status, outcome.result), logs=list(outcome.logs))
            record["annotations"] += [
                {"key": "waitTime", "value": outcome.wait_time_ms + max(0, start - submitted)},
                {"key": "timeout", "value": bool(outcome.timeout)},
            ]
            if outcome.init_time_ms is not None:
                record["annotations"].append({"key": "initTime", "value": outcome.init_time_ms})
        self.finish(record, blocking=blocking)
        return record

    def finish(self, record: dict[str, Any], *, blocking: bool) -> None:
        """Store the completed record, or drop the in-flight one, as the store policy says."""
        if self.store_policy.keeps(record["response"], blocking=blocking):
            self.store.put_activation(record, done=True)
        else:
            self.store.delete_activation(record["activationId"])

    def _run_runtime(self, caller_ns: str, target: Target, args: Any, aid: str, tid: str) -> Any:
        action = target.action
        exec_ = action["exec"]
        init_env = {p["key"]: p["value"] if isinstance(p.get("value"), str)
                    else json.dumps(p.get("value"), separators=(",", ":"))
                    for p in ent.kv_merge(target.package["parameters"] if target.package else [],
                                          action["parameters"]) if p.get("init")}
        code = ActionCode(
            fqn="/" + target.path, version=action["version"], kind=exec_["kind"],
            code=exec_.get("code", ""), binary=bool(exec_.get("binary")), main=exec_.get("main") or "main",
            image=exec_.get("image"), init_env=init_env,
            provide_api_key=ent.truthy(ent.annotation(action, "provide-api-key", True)),
            # localwhisk's own annotation (OpenWhisk ignores it): OpenWhisk actions have
            # network, so only an explicit falsy value gives the sandbox its own empty one.
            network=ent.truthy(ent.annotation(action, "sandbox-network", True)),
            digest=ent.code_digest(action),
        )
        lim = action["limits"]
        limits = Limits(timeout_ms=lim["timeout"], memory_mb=lim["memory"], logs_mb=lim["logs"],
                        concurrency=lim.get("concurrency", 1), instances=lim.get("instances"))
        if isinstance(args, dict):
            value: Any = {**target.default_params, **args}
        else:  # an array payload replaces the arguments without merging (§3)
            value = args
        return self.runtime.run(code, limits, value, activation_id=aid, transaction_id=tid,
                                namespace=caller_ns, api_key=self._api_keys(caller_ns),
                                deadline_ms=self._clock() + lim["timeout"])

    def _skeleton(self, caller_ns: str, target: Target, aid: str, start: int, cause: str | None,
                  topmost: bool) -> dict:
        action = target.action
        annotations = [
            {"key": "path", "value": target.path},
            {"key": "kind", "value": action["exec"]["kind"]},
            {"key": "limits", "value": dict(sorted(action["limits"].items()))},
        ]
        if cause and not topmost:  # a sequence's component; a rule's invocation has a cause only
            annotations.append({"key": "causedBy", "value": "sequence"})
        record = {
            "namespace": caller_ns, "name": action["name"], "subject": caller_ns,
            "activationId": aid, "version": action["version"], "publish": False,
            "start": start, "end": 0, "duration": 0, "logs": [], "annotations": annotations,
            "response": response_of("whisk internal error", {"error": RESTART_MESSAGE}),
        }
        if cause:
            record["cause"] = cause
        return record

    # -- restart recovery ------------------------------------------------------

    def recover(self) -> int:
        """Finish activations a previous process left in flight as whisk internal errors."""
        stale = self.store.in_flight()
        now = self._clock()
        for record in stale:
            record["end"] = max(now, record["start"])
            record["duration"] = record["end"] - record["start"]
            record["response"] = response_of("whisk internal error", {"error": RESTART_MESSAGE})
            self.store.put_activation(record, done=True)
        if stale:
            log.warning("finished %d activations left in flight by a previous run", len(stale))
        return len(stale)


def wait(invocation: Invocation, timeout_ms: int) -> dict[str, Any] | None:
    """The completed record, or None if it is still running after ``timeout_ms``."""
    try:
        return invocation.future.result(timeout=timeout_ms / 1000)
    except TimeoutError:
        return None


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """The list form of a record (ENT/WhiskActivation.scala summary)."""
    out = {k: record[k] for k in ("namespace", "name", "version", "subject", "activationId",
                                  "start", "end", "duration", "publish", "annotations") if k in record}
    out["statusCode"] = STATUS_CODES.get(record["response"]["status"], 3)
    if "cause" in record:
        out["cause"] = record["cause"]
    return out
