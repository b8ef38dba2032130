"""Routing rules: which arriving studies go to which pipeline.

A rule matches the routing attributes the arrivals watcher fires with
(:mod:`radcloud.arrivals.watch`) — never patient attributes — and names a
*pipeline* of plugin steps with their parameters and options::

    {"name": "ct-chest-lungs", "enabled": true,
     "match": {"modality": "CT", "body_part": "CHEST*", "series_description": "*lung*"},
     "pipeline": [{"plugin": "lung-seg", "params": {}, "options": {"push_to_pacs": true}}]}

A pipeline is an ordered list of plugin steps (at most
:data:`radcloud.work.pipelines.MAX_STEPS`), each step's DICOM outputs the
next step's inputs. :func:`route_arrival` (the ``route`` action, the rule of
``radcloud-study-stable``) stages the matched series and starts the pipeline
on them as one tracked job whose steps are jobs (:mod:`radcloud.work.pipelines`);
:class:`RuleStore` keeps the rules in Redis.

Matching is per series: a rule matches a study when at least one of its
series matches every glob the rule gives (``fnmatch``, case-insensitive;
``calling_aet`` and ``study_description`` are study-level); a rule with no
``match`` matches every series. The series that matched are what its
pipeline runs on. A rule is validated when it is saved (:func:`validate`):
an unknown plugin, a bad parameter or an unknown match key is refused with
a message naming the step and the field, so nothing fails later at 3 a.m.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import time
from collections.abc import Mapping
from typing import Any

from radcloud.core.errors import BadRequest, NotFound, RadcloudError, TooManyRequests, Unavailable, UpstreamError
from radcloud.work.pipelines import validate_steps

SERIES_KEYS = ("modality", "body_part", "series_description")
STUDY_KEYS = ("study_description", "calling_aet")
MATCH_KEYS = SERIES_KEYS + STUDY_KEYS
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _glob(pattern: str, value: Any) -> bool:
    return fnmatch.fnmatchcase(str(value or "").upper(), str(pattern).upper())


def matching_series(rule: Mapping[str, Any], arrival: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The series of ``arrival`` that ``rule`` matches ([] when the rule does not apply)."""
    if not rule.get("enabled", True):
        return []
    match = rule.get("match") or {}
    for key in STUDY_KEYS:
        if key in match and not _glob(match[key], arrival.get(key)):
            return []
    return [s for s in arrival.get("series") or []
            if all(_glob(match[k], s.get(k)) for k in SERIES_KEYS if k in match)]


def route(rules: list[Mapping[str, Any]], arrival: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], list]]:
    """``(rule, matched series)`` for every enabled rule that matches, in the rules' order."""
    out = []
    for rule in rules:
        series = matching_series(rule, arrival)
        if series:
            out.append((rule, series))
    return out


def validate(rule: Any, registry: Any) -> dict[str, Any]:
    """Check a rule before it is saved; returns it normalised (params with defaults filled).

    ``registry`` is a :class:`radcloud.run.registry.Registry` (anything with ``get(name)``).

    Raises:
        BadRequest: the field that is wrong and what to send instead.
    """
    if not isinstance(rule, Mapping):
        raise BadRequest("a routing rule must be an object {name, match, pipeline, enabled}", field="rule")
    name = rule.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadRequest("name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
                         field="name")
    unknown = set(rule) - {"name", "match", "pipeline", "enabled", "description"}
    if unknown:
        raise BadRequest(f"unknown rule field(s) {sorted(unknown)}; a rule has name, match, pipeline, enabled, "
                         "description", field=sorted(unknown)[0])
    match = rule.get("match") or {}
    if not isinstance(match, Mapping):
        raise BadRequest(f"match must be an object of globs over {', '.join(MATCH_KEYS)}", field="match")
    for key, pattern in match.items():
        if key not in MATCH_KEYS:
            raise BadRequest(f"match key {key!r} is not a routing attribute; use {', '.join(MATCH_KEYS)} "
                             "(patient attributes are never routed on)", field=f"match.{key}")
        if not isinstance(pattern, str) or not pattern.strip():
            raise BadRequest(f"match.{key} must be a non-empty glob such as 'CT' or 'CHEST*'", field=f"match.{key}")
    enabled = rule.get("enabled", True)
    if not isinstance(enabled, bool):
        raise BadRequest("enabled must be true or false", field="enabled")
    checked = validate_steps(rule.get("pipeline"), registry)
    out = {"name": name, "match": dict(match), "pipeline": checked, "enabled": enabled}
    if isinstance(rule.get("description"), str):
        out["description"] = rule["description"][:200]
    return out


# -- stored rules and the router ------------------------------------------------------

RULES, RUNS, CLAIM = "radcloud:routing:rules", "radcloud:routing:runs", "radcloud:routing:arrival:"
PENDING = "radcloud:routing:pending"  # arrival id -> {arrival, attempts, next_at, reason}: not routed yet
CLAIM_TTL_S = 30 * 24 * 3600  # an arrival id is remembered this long (a re-send after that routes again)
LEASE_S = 180                 # a route run holds an arrival this long (the route action's timeout is 120 s)
RUNS_KEPT = 1000
MAX_ATTEMPTS = 30             # a transient refusal is retried this often (backoff up to BACKOFF_MAX_S) ...
BACKOFF_MAX_S = 300           # ... then the run is recorded failed with the last reason
REDRIVE_BUDGET_S = 20.0       # a re-drive starts no arrival after this (reconcile's timeout is 60 s)
# A busy namespace (429/503 after the invoker's own backoff), a service that is down or answers
# badly: the arrival waits in PENDING and is routed again; any other error is the rule's own fault.
TRANSIENT = (TooManyRequests, Unavailable, UpstreamError)


class RuleStore:
    """Routing rules in Redis (hash name -> JSON), validated on save; the runs they started (a capped list)."""

    def __init__(self, redis: Any, registry: Any) -> None:
        self.redis = redis          # redis.Redis, decode_responses=True
        self.registry = registry    # radcloud.run.registry.Registry

    def save(self, rule: Any) -> dict[str, Any]:
        checked = validate(rule, self.registry)
        self.redis.hset(RULES, checked["name"], json.dumps(checked))
        return checked

    def list(self) -> list[dict[str, Any]]:
        return [json.loads(v) for _, v in sorted(self.redis.hgetall(RULES).items())]

    def get(self, name: str) -> dict[str, Any]:
        raw = self.redis.hget(RULES, name)
        if raw is None:
            raise NotFound(f"no routing rule named {name!r} (radcloud routes list shows them)", field="name")
        return json.loads(raw)

    def delete(self, name: str) -> dict[str, Any]:
        rule = self.get(name)
        self.redis.hdel(RULES, name)
        return rule

    def set_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        """Takes effect at once: the router reads the rules for every arrival."""
        rule = {**self.get(name), "enabled": bool(enabled)}
        self.redis.hset(RULES, name, json.dumps(rule))
        return rule

    # An arrival is routed exactly once, eventually: ``claim`` takes a lease (one route run at a
    # time; a second fire of the same arrival is a duplicate), the arrival is kept in PENDING
    # until ``finish`` makes the claim final; ``release`` (a transient refusal) drops the lease
    # and leaves it pending for :func:`redrive`. Each rule whose pipeline started is recorded
    # under the arrival (``started``), so a re-drive never starts it twice. A run that died
    # holding the lease leaves the arrival pending: it is due again once the lease has expired.

    def claim(self, arrival_id: str) -> bool:
        """True when this run may route the arrival: not routed yet, and no other run holds it."""
        return bool(self.redis.set(CLAIM + arrival_id, "routing", nx=True, ex=LEASE_S))

    def hold(self, arrival: Mapping[str, Any], now: float) -> dict[str, Any]:
        """Keep ``arrival`` pending (due again after the lease, should this run die); its entry."""
        raw = self.redis.hget(PENDING, arrival["arrival_id"])
        entry = json.loads(raw) if raw else {"arrival": dict(arrival), "attempts": 0, "first_at": round(now, 3)}
        entry.update(next_at=round(now + LEASE_S, 3))
        self.redis.hset(PENDING, arrival["arrival_id"], json.dumps(entry))
        return entry

    def drop_if_routed(self, arrival_id: str) -> None:
        """A fire of an arrival routed already (the watcher repeating one after a crash) leaves nothing pending."""
        if _text(self.redis.get(CLAIM + arrival_id)) == "routed":
            self.redis.hdel(PENDING, arrival_id)

    def started(self, arrival_id: str) -> set[str]:
        """The rules whose pipeline already started for this arrival."""
        return {_text(k) for k in self.redis.hkeys(CLAIM + arrival_id + ":rules")}

    def rule_started(self, arrival_id: str, rule: str, pipeline: str) -> None:
        pipe = self.redis.pipeline()
        pipe.hset(CLAIM + arrival_id + ":rules", rule, pipeline)
        pipe.expire(CLAIM + arrival_id + ":rules", CLAIM_TTL_S)
        pipe.execute()

    def finish(self, arrival_id: str) -> None:
        """The arrival is routed: the claim is final and it leaves PENDING."""
        pipe = self.redis.pipeline()
        pipe.set(CLAIM + arrival_id, "routed", ex=CLAIM_TTL_S)
        pipe.hdel(PENDING, arrival_id)
        pipe.execute()

    def release(self, entry: dict[str, Any], reason: str, now: float) -> None:
        """A transient refusal: the arrival stays pending (due after a backoff) and the lease is dropped."""
        entry = {**entry, "attempts": entry["attempts"] + 1, "reason": reason[:300]}
        entry["next_at"] = round(now + min(BACKOFF_MAX_S, 2 ** entry["attempts"]), 3)
        pipe = self.redis.pipeline()
        pipe.hset(PENDING, entry["arrival"]["arrival_id"], json.dumps(entry))
        pipe.delete(CLAIM + entry["arrival"]["arrival_id"])
        pipe.execute()

    def pending(self) -> list[dict[str, Any]]:
        """The arrivals not routed yet, oldest first (the routing action's GET and :func:`redrive` read them)."""
        return pending_entries(self.redis)

    def record_run(self, run: dict[str, Any]) -> None:
        pipe = self.redis.pipeline()
        pipe.lpush(RUNS, json.dumps(run))
        pipe.ltrim(RUNS, 0, RUNS_KEPT - 1)
        pipe.execute()

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        return [json.loads(r) for r in self.redis.lrange(RUNS, 0, max(0, limit - 1))]


def pipeline_id(arrival_id: str, rule: str, since: float) -> str:
    """The id of the pipeline rule ``rule`` starts for an arrival, known before it is started.

    A route run that dies between starting the pipeline and recording it (:meth:`RuleStore.rule_started`)
    leaves no record of it; the next attempt starts the pipeline under the same id and finds it
    (:meth:`radcloud.work.pipelines.Pipelines.start`) instead of starting a second. The lease on the
    arrival keeps two attempts from running at once. ``since`` is when the arrival became pending
    (its entry's ``first_at``, kept by every attempt): the same instances sent again after the claim
    has expired (30 days) are a new routing, with a new pipeline, even if the old one is still kept.
    """
    key = f"radcloud-pipeline|{arrival_id}|{rule}|{since:.3f}"
    return "p" + hashlib.sha256(key.encode()).hexdigest()[:31]


def route_arrival(arrival: Mapping[str, Any], store: RuleStore, invoker: Any, pipelines: Any, *,
                  owner: str = "service", package: str = "radcloud", clock: Any = time.time) -> dict[str, Any]:
    """Start the pipeline of every enabled rule that matches ``arrival`` (the ``route`` action).

    For each match: ``retrieve`` stages the matched series (blocking: its id comes back at
    once), then ``pipelines`` (:class:`radcloud.work.pipelines.Pipelines`) starts the rule's
    pipeline on them; its first step's dispatch waits in its own activation for staging
    (``wait_staged``). A duplicate arrival id (routed, or being routed) starts nothing.

    A transient refusal (:data:`TRANSIENT`: the namespace at its concurrency limit, a service
    down) of a rule's retrieve or pipeline start leaves the arrival pending, its lease
    released: :func:`redrive` routes it again later and starts only the rules not started
    yet. After :data:`MAX_ATTEMPTS` the run is recorded failed with the last reason.
    """
    arrival_id = str(arrival.get("arrival_id") or "")
    if not re.fullmatch(r"[0-9a-f]{32}", arrival_id):
        raise BadRequest("arrival_id (32 hex) is required: the arrivals watcher's trigger sends it",
                         field="arrival_id")
    if not store.claim(arrival_id):
        store.drop_if_routed(arrival_id)
        return {"arrival_id": arrival_id, "duplicate": True, "runs": []}
    entry = store.hold(arrival, clock())
    done = store.started(arrival_id)
    runs, retry = [], ""
    for rule, series in route(store.list(), arrival):
        if rule["name"] in done:
            continue  # started by an earlier attempt
        run: dict[str, Any] = {"at": round(clock(), 3), "arrival_id": arrival_id, "rule": rule["name"],
                               "study_uid": arrival.get("study_uid", ""),
                               "series": [s.get("series_uid", "") for s in series],
                               "steps": [step["plugin"] for step in rule["pipeline"]]}
        try:
            staged = _staged(entry, rule["name"], series, invoker, package)
            entry.setdefault("staged", {})[rule["name"]] = staged  # kept should the pipeline's start be refused
            pipeline = pipelines.start(rule["pipeline"], {"retrieve": staged["retrieve_id"]}, owner,
                                       name=rule["name"],
                                       job_id=pipeline_id(arrival_id, rule["name"], float(entry["first_at"])))
            store.rule_started(arrival_id, rule["name"], pipeline)
            run.update(state="started", retrieve_id=staged["retrieve_id"], pipeline=pipeline)
        except TRANSIENT as exc:
            if entry["attempts"] + 1 < MAX_ATTEMPTS:
                retry = retry or f"rule {rule['name']}: {exc.message}"
                continue  # routed again later; the next rule still runs now
            run.update(state="failed", reason=f"gave up after {MAX_ATTEMPTS} attempts: {exc.message}")
        except RadcloudError as exc:  # the next rule still runs; this one says why it did not
            run.update(state="failed", reason=exc.message)
        store.record_run(run)
        runs.append(run)
    if retry:
        store.release(entry, retry, clock())
    else:
        store.finish(arrival_id)
    return {"arrival_id": arrival_id, "duplicate": False, "runs": runs, "pending": retry}


def pending_entries(redis: Any) -> list[dict[str, Any]]:
    """The arrivals not routed yet, oldest first: ``{arrival, attempts, first_at, next_at, reason}``."""
    return sorted((json.loads(v) for v in redis.hvals(PENDING)), key=lambda e: e.get("first_at", 0))


def expect(redis: Any, arrival: Mapping[str, Any], now: float) -> None:
    """The arrivals watcher is about to fire ``arrival``: it is pending until a route run takes it.

    OpenWhisk answers a fire 202 even when the rule's invoke is refused (the namespace's
    concurrency) or its activation dies before the route action claimed the arrival; then
    nobody routes it, unless it waits here: due for :func:`redrive` once a lease has passed.
    """
    entry = {"arrival": dict(arrival), "attempts": 0, "first_at": round(now, 3),
             "next_at": round(now + LEASE_S, 3), "reason": "fired; no route run has taken it yet"}
    redis.hsetnx(PENDING, arrival["arrival_id"], json.dumps(entry))


def unexpect(redis: Any, arrival_id: str) -> None:
    """The fire was refused (the watcher fires it again) or no rule is active: not pending here,
    unless a route run took it meanwhile."""
    raw = redis.hget(PENDING, arrival_id)
    if raw and json.loads(raw).get("attempts") == 0 and redis.get(CLAIM + arrival_id) is None:
        redis.hdel(PENDING, arrival_id)


def redrive(store: RuleStore, invoker: Any, pipelines: Any, *, owner: str = "service",
            package: str = "radcloud", clock: Any = time.time, limit: int = 20,
            budget_s: float = REDRIVE_BUDGET_S) -> int:
    """Route again up to ``limit`` pending arrivals that are due (reconcile runs this); how many.

    Starts no arrival after ``budget_s`` (each blocks on a retrieve): the calling activation
    must not reach its timeout in the middle of one.
    """
    count, until = 0, time.monotonic() + budget_s
    for entry in store.pending():
        if count >= limit or time.monotonic() > until:
            break
        if float(entry.get("next_at") or 0) > clock():
            continue
        answer = route_arrival(entry["arrival"], store, invoker, pipelines, owner=owner, package=package,
                               clock=clock)
        count += not answer["duplicate"]
    return count


def pending_view(entries: list[Mapping[str, Any]], now: float) -> list[dict[str, Any]]:
    """The pending arrivals as the routing GET, ``radcloud routes runs`` and the Automations page show
    them: ids, attempts, when due, the last reason (``reason_plain``: in plain words), and
    ``summary``, the same in plain words."""
    from radcloud.work.reasons import plain

    out = []
    for e in entries:
        attempts, due_in = int(e.get("attempts") or 0), float(e.get("next_at") or 0) - now
        when = f"in {_duration(due_in)}" if due_in > 0.5 else "now (a route run or reconcile takes it)"
        if attempts == 0:
            summary = f"not routed yet: fired, no route run has taken it; routed again {when} if none does"
        else:
            summary = (f"waiting: {attempts} attempt(s) of {MAX_ATTEMPTS} refused (busy or a service down); "
                       f"tried again {when}")
        out.append({"arrival_id": e["arrival"]["arrival_id"], "study_uid": e["arrival"].get("study_uid", ""),
                    "attempts": attempts, "next_at": e.get("next_at"), "due_in_s": round(max(0.0, due_in), 1),
                    "reason": e.get("reason", ""), "reason_plain": plain(e.get("reason")), "summary": summary})
    return out


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min {seconds % 60:02d} s"


def run_by_hand(store: RuleStore, pipelines: Any, name: str, inputs: Mapping[str, Any], owner: str, *,
                clock: Any = time.time) -> dict[str, Any]:
    """Start rule ``name``'s pipeline on ``inputs`` (a dispatch ``inputs``: a retrieve, series,
    prefixes or a job's outputs) now, whether the rule is enabled or not; the run is recorded
    beside the router's, with who started it."""
    rule = store.get(name)  # NotFound names it
    run: dict[str, Any] = {"at": round(clock(), 3), "arrival_id": "", "rule": name, "by": owner,
                           "study_uid": "", "series": [], "steps": [s["plugin"] for s in rule["pipeline"]]}
    run.update(state="started", pipeline=pipelines.start(rule["pipeline"], inputs, owner, name=name))
    store.record_run(run)
    return run


def _staged(entry: dict[str, Any], rule: str, series: list, invoker: Any, package: str) -> dict[str, Any]:
    """``retrieve``'s answer for the rule's series: invoked blocking, or — when an earlier attempt's
    blocking wait ran out (OpenWhisk answers 202 ``{activationId}``: the retrieve still runs) — that
    activation's result, so a re-drive never stages the same series twice.

    Raises TRANSIENT while that activation runs; the activation id is kept in ``entry``.
    """
    if rule in entry.get("staged", {}):  # staged by an earlier attempt whose pipeline start was refused
        return entry["staged"][rule]
    waiting = entry.setdefault("retrieves", {})
    if rule in waiting:
        record = invoker.activation(waiting[rule])
        if record is None:
            raise UpstreamError(f"retrieve activation {waiting[rule]} is still running")
        del waiting[rule]
        staged = (record.get("response") or {}).get("result")
        if isinstance(staged, dict) and "retrieve_id" in staged:
            return staged
        raise _retrieve_refused(staged)
    staged = invoker.invoke(f"{package}/retrieve", {"orthanc_series": [s["orthanc_series"] for s in series]},
                            blocking=True, result=True)
    if isinstance(staged, dict) and "retrieve_id" in staged:
        return staged
    if isinstance(staged, dict) and set(staged) == {"activationId"}:
        waiting[rule] = staged["activationId"]
        raise UpstreamError(f"retrieve activation {staged['activationId']} outlasted the blocking wait "
                            "(the namespace's containers are busy); its result is read on the next attempt")
    raise _retrieve_refused(staged)


def _text(value: Any) -> Any:
    """A Redis reply as text: the route action's client (radcloud.access.auth) does not decode."""
    return value.decode() if isinstance(value, bytes) else value


def _retrieve_refused(answer: Any) -> RadcloudError:
    """Retrieve's answer without a retrieve id: transient (busy, a service down, no answer) or the rule's fault."""
    err = answer.get("error") if isinstance(answer, dict) else None
    status = err.get("statusCode") if isinstance(err, dict) else None
    message = f"retrieve answered without a retrieve_id: {_error_of(answer)}"
    if isinstance(status, int) and status < 500 and status != 429:
        return RadcloudError(message)  # it refused these series: routing again would not help
    return UpstreamError(message)


def _error_of(answer: Any) -> str:
    if isinstance(answer, dict) and isinstance(answer.get("error"), (dict, str)):
        err = answer["error"]
        return str(err.get("message", err) if isinstance(err, dict) else err)[:200]
    return str(answer)[:200]


def with_pipeline_state(runs: list[dict[str, Any]], jobs: Any) -> list[dict[str, Any]]:
    """The runs with their pipeline's state and steps now (``radcloud.work.jobs.JobStore`` ``jobs``)."""
    from radcloud.work.pipelines import steps_view
    from radcloud.work.reasons import plain

    out = []
    for run in runs:
        if run.get("reason"):  # the router's own refusal; the raw one stays for "Technical details"
            run = {**run, "reason_plain": plain(run["reason"])}
        if run.get("pipeline"):
            try:
                job = jobs.get(run["pipeline"])
                run = {**run, "pipeline_state": job["state"], "pipeline_reason": job.get("reason") or "",
                       "pipeline_reason_plain": plain(job.get("reason")),
                       "step_states": steps_view(job)}
            except NotFound:
                pass  # expired: the run's own record stays
        out.append(run)
    return out
