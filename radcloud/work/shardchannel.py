"""How a shard that runs off-site (a Slurm job) reaches radcloud, holding none of its secrets.

A batch job's script and environment are kept by slurmctld, copied to the
node, shown by ``scontrol`` and readable by the cluster's admins: no S3 key,
Redis URL or token secret may travel in them. A job is given instead:

* a **shard ticket** (:func:`radcloud.access.auth.issue_shard_ticket`): a token for
  one shard, expiring with the shard's deadline, that names its output
  prefix and the digest of its input keys;
* the URL of the ``shard_report`` web action, where the ticket is the bearer.

On the node, :class:`RemoteReporter` and :class:`RemoteStore` are what the
shard runner (:func:`radcloud.run.shard.run_shard`) is given in place of the
Redis reporter and the S3 store. Both talk to ``shard_report``, which
:func:`apply` serves hospital-side: the events (running, started, progress,
log, finished) go through the same :class:`radcloud.work.reporter.RedisShardReporter`
an action uses (the finaliser, the PACS push, the next stage all run
hospital-side), every answer says whether the job was cancelled, and the job
gets presigned URLs (``presign_ttl_s``): GET for its own inputs only, PUT for
keys under its output prefix and its re-identification map only. A URL
outlives nothing: the job asks for the inputs' when it starts and for the
outputs' when it uploads them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import time
from collections.abc import Mapping, Sequence
from typing import Any

from radcloud.core.errors import BadRequest, Forbidden, Unavailable, UpstreamError

log = logging.getLogger(__name__)

ACTION = "shard_report"
MAX_EVENTS = 50
MAX_LINES = 500  # log lines in one call (the runner sends them in batches)
FLUSH_S = 1.0  # the node sends buffered log lines (and asks about cancel) at most this often
_EVENTS = ("running", "started", "progress", "log", "finished")


def report_url(settings: Any) -> str:
    """Where a job reports: ``slurm_report_url``, else this deployment's ``shard_report`` web action."""
    if settings.slurm_report_url:
        return settings.slurm_report_url
    host = settings.ow_api_host or os.environ.get("__OW_API_HOST", "")
    namespace = os.environ.get("__OW_NAMESPACE", "").strip("/").split("/")[0] or settings.ow_namespace
    if not host or namespace in ("", "_"):
        from radcloud.core.errors import ConfigError

        raise ConfigError("no URL for Slurm jobs to report to: set slurm_report_url (RADCLOUD_SLURM_REPORT_URL) "
                          f"to this deployment's {ACTION} web action as the cluster reaches it",
                          field="slurm_report_url")
    return f"{host.rstrip('/')}/api/v1/web/{namespace}/{settings.ow_package}/{ACTION}"


# -- hospital side: the shard_report action ------------------------------------------------
def apply(services: Any, ticket: Mapping[str, Any], body: Mapping[str, Any], *, ttl_s: int) -> dict[str, Any]:
    """Serve one call of a ticket's bearer: record its events, answer cancel and the URLs asked for.

    ``ticket``: the verified claims (:func:`radcloud.access.auth.shard_ticket_claims`). ``body``:
    ``{"events": [{"type": "running"|"started"|"progress"|"log"|"finished", ...}], "get": [input keys],
    "put": [output keys], "activation_id": the Slurm job id, "restarts": its SLURM_RESTART_COUNT}``.
    """
    from radcloud.access.auth import inputs_digest
    from radcloud.work.reporter import RedisShardReporter
    from radcloud.work import lifecycle as L

    job_id, shard_id = str(ticket["job"]), str(ticket["shard"])
    events = body.get("events") or []
    if not isinstance(events, list) or len(events) > MAX_EVENTS:
        raise BadRequest(f"'events' must be a list of at most {MAX_EVENTS} events", field="events")
    shard = services.jobs.shard(job_id, shard_id)
    activation = body.get("activation_id")
    shard = _requeued(services.jobs, job_id, shard, activation, body.get("restarts"))
    reporter = RedisShardReporter(services.jobs, job_id, finaliser=services.finaliser,
                                  activation_id=str(activation) if activation else None)
    reporter.resume(shard_id, running=shard.get("state") not in (*L.SHARD_WAITING, *L.SHARD_FINAL),
                    plugin_started=bool(shard.get("plugin_started_at")))
    for event in events:
        kind = event.get("type") if isinstance(event, Mapping) else None
        if kind == "running":
            reporter.running(shard_id, dict(event.get("info") or {}))
        elif kind == "started":
            reporter.started(shard_id, dict(event.get("info") or {}))
        elif kind == "progress":
            reporter.progress(shard_id, int(event.get("done") or 0), int(event.get("total") or 0))
        elif kind == "log":
            for line in list(event.get("lines") or [])[:MAX_LINES]:
                reporter.log(shard_id, str(line))
        elif kind == "finished":
            reporter.finished(shard_id, _own_outputs(dict(event.get("outcome") or {}), ticket))
        else:
            raise BadRequest(f"unknown event type {kind!r} (one of: {', '.join(_EVENTS)})", field="events")
    answer: dict[str, Any] = {"cancelled": services.jobs.is_cancelled(job_id)}
    if body.get("get") is not None:
        keys = [str(k) for k in body.get("get") or []]
        if inputs_digest(keys) != ticket["in"]:
            raise Forbidden("the input keys asked for are not this shard's; a ticket gives URLs for its own only")
        answer["get"] = {k: services.store.presign_get(k, ttl_s) for k in keys}
    if body.get("put") is not None:
        keys = [str(k) for k in body.get("put") or []]
        foreign = [k for k in keys if not _may_write(k, ticket)]
        if foreign:
            raise Forbidden(f"{len(foreign)} output key(s) outside this shard's output prefix "
                            f"{ticket['out']!r}; a ticket gives URLs for its own outputs only")
        answer["put"] = {k: services.store.presign_put(k, ttl_s) for k in keys}
    return answer


def _requeued(jobs: Any, job_id: str, shard: Mapping[str, Any], activation: Any, restarts: Any) -> Mapping[str, Any]:
    """A batch job the cluster requeued runs again under the same handle and reports into the same
    shard: its first call from a new run (``restarts``, Slurm's ``SLURM_RESTART_COUNT``) counts one more
    attempt and starts the shard's plugin anew; a call from a run that was requeued since is refused
    (409), so the shard gets one outcome, the latest run's."""
    from radcloud.core.errors import Conflict
    from radcloud.work import lifecycle as L

    try:
        restarts = int(restarts or 0)
    except (TypeError, ValueError):
        raise BadRequest("'restarts' must be an integer (the job's SLURM_RESTART_COUNT)", field="restarts") from None
    if not activation or str(activation) != str(shard.get("activation_id")):
        return shard
    seen = shard.get("requeued") if isinstance(shard.get("requeued"), Mapping) else {}
    known = int(seen.get("restarts") or 0) if str(seen.get("handle")) == str(activation) else 0  # a retry's new job: 0
    if restarts < known:
        raise Conflict(f"run {restarts} of Slurm job {activation} was requeued since (run {known} is the shard's); "
                       "its calls are refused so the shard gets the latest run's outcome only", field="restarts")
    if restarts == known or shard.get("state") not in L.SHARD.sources("requeued"):
        return shard
    attempt = int(shard.get("attempt") or 1) + restarts - known
    try:
        jobs.update_shard(job_id, str(shard["id"]), {"requeued": {"handle": str(activation), "restarts": restarts},
                                                      "attempt": attempt, "plugin_started_at": None},
                          allowed=L.SHARD.sources("requeued"), event="requeued",
                          data={"handle": str(activation), "restarts": restarts, "attempt": attempt})
    except Conflict:
        pass  # ended meanwhile: the events below are refused as for any ended shard
    log.info("job %s shard %s: Slurm job %s requeued, attempt %d", job_id, shard["id"], activation, attempt)
    return jobs.shard(job_id, str(shard["id"]))


def _may_write(key: str, ticket: Mapping[str, Any]) -> bool:
    from radcloud.run.shard import reid_map_key

    if any(part in ("", ".", "..") for part in key.split("/")):
        return False
    out = str(ticket["out"]).rstrip("/") + "/"
    own_map = reid_map_key(str(ticket["job"]), str(ticket["shard"]))[: -len(".json")]
    return key.startswith(out) or (key.startswith(own_map) and key.endswith(".json"))


def _own_outputs(outcome: dict[str, Any], ticket: Mapping[str, Any]) -> dict[str, Any]:
    """An outcome's outputs limited to the shard's own keys (a results list never names another's)."""
    outputs = [o for o in outcome.get("outputs") or [] if isinstance(o, Mapping) and _may_write(str(o.get("key")), ticket)]
    return {**outcome, "outputs": outputs}


# -- node side: the runner's reporter and store --------------------------------------------
class Channel:
    """Calls to ``shard_report`` with the ticket; errors name the action and what to do."""

    def __init__(self, url: str, ticket: str, *, activation_id: str | None = None, restarts: int = 0,
                 timeout_s: float = 30.0, session: Any = None) -> None:
        """``restarts``: how often the cluster requeued this batch job (``SLURM_RESTART_COUNT``): said in
        every call, so a requeued run reports into the same shard as one more attempt."""
        self.url, self._ticket, self.activation_id, self.timeout_s = url, ticket, activation_id, timeout_s
        self.restarts = restarts
        self._http = session

    @property
    def http(self) -> Any:
        """The retrying session, made at the first call that needs it (after the first report, see :meth:`first`)."""
        if self._http is None:
            from radcloud.core import retry

            # Every call may be sent again: events are idempotent where it matters (a second outcome is refused).
            self._http = retry.session(budget_s=self.timeout_s * 2, idempotent_post=True)
        return self._http

    def _body(self, events: Sequence[Mapping[str, Any]], asks: Mapping[str, Any]) -> dict[str, Any]:
        return {"events": list(events), "activation_id": self.activation_id, "restarts": self.restarts, **asks}

    def call(self, events: Sequence[Mapping[str, Any]] = (), **asks: Any) -> dict[str, Any]:
        import requests

        try:
            resp = self.http.post(self.url, json=self._body(events, asks),
                                  headers={"Authorization": f"Bearer {self._ticket}"}, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise self._unreachable(exc) from None
        try:
            data = resp.json()
        except ValueError:
            data = None
        return self._answer(resp.status_code, data)

    def first(self, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The job's first report, sent once with the standard library: importing ``requests`` (and
        urllib3) is half of the runner's start on the node (measured: ~0.15 of ~0.27 s of CPU), and this
        call is the moment the job is seen running (``bench/slurm_bench.py`` visible). No retry and a
        short timeout: a failure is the caller's to log, the next call (``requests``, retried) says it
        again. (A site whose report URL needs a CA bundle given to ``requests`` only fails this call.)"""
        import json
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            self.url, data=json.dumps(self._body(events, {})).encode(), method="POST",
            headers={"Authorization": f"Bearer {self._ticket}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=min(self.timeout_s, 10.0)) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except OSError as exc:  # URLError, timeouts, refused connections
            raise self._unreachable(exc) from None
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        return self._answer(status, data)

    def _unreachable(self, exc: BaseException) -> Unavailable:
        return Unavailable(f"radcloud's {ACTION} at {self.url} cannot be reached from this node "
                           f"({type(exc).__name__}); check slurm_report_url")

    @staticmethod
    def _answer(status: int, data: Any) -> dict[str, Any]:
        if status != 200 or not isinstance(data, dict):
            said = (data or {}).get("error") if isinstance(data, dict) else None
            raise UpstreamError(f"radcloud's {ACTION} answered HTTP {status}"
                                + (f": {str(said)[:200]}" if said else ""))
        return data


class RemoteReporter:
    """The shard runner's reporter (:mod:`radcloud.run.shard`) over the channel; log lines go in batches."""

    def __init__(self, channel: Channel, *, clock: Any = time.monotonic) -> None:
        self.channel, self.clock = channel, clock
        self._lines: list[str] = []
        self._sent = float("-inf")
        self._cancel = False

    def _send(self, *events: Mapping[str, Any]) -> None:
        batch = ([{"type": "log", "lines": self._lines}] if self._lines else []) + list(events)
        self._lines = []
        self._sent = self.clock()
        self._cancel = bool(self.channel.call(batch).get("cancelled")) or self._cancel

    def running(self, shard_id: str, info: dict[str, Any]) -> None:
        # Sent at once, alone, before requests is imported (Channel.first): the moment the job is seen
        # running is this call's (issue 18's <= 1 s).
        self._sent = self.clock()
        self._cancel = bool(self.channel.first([{"type": "running", "info": info}]).get("cancelled")) or self._cancel

    def started(self, shard_id: str, info: dict[str, Any]) -> None:
        self._send({"type": "started", "info": info})

    def progress(self, shard_id: str, done: int, total: int) -> None:
        if done >= total or self.clock() - self._sent >= FLUSH_S:
            self._send({"type": "progress", "done": done, "total": total})

    def log(self, shard_id: str, line: str) -> None:
        self._lines.append(line)
        if len(self._lines) >= MAX_LINES or self.clock() - self._sent >= FLUSH_S:
            self._send()

    def finished(self, shard_id: str, outcome: dict[str, Any]) -> None:
        self._send({"type": "finished", "outcome": outcome})

    def cancelled(self) -> bool:
        if not self._cancel and self.clock() - self._sent >= FLUSH_S:
            self._send()
        return self._cancel


class _Stored:
    def __init__(self, key: str, size: int, md5: str) -> None:
        self.key, self.size, self.md5 = key, size, md5


class RemoteStore:
    """The shard runner's object store on the node: presigned URLs from the channel, asked when needed."""

    def __init__(self, channel: Channel, inputs: Sequence[str], *, timeout_s: float = 120.0) -> None:
        self.channel, self.inputs, self.timeout_s = channel, list(inputs), timeout_s
        self._http: Any = None
        self._get: dict[str, str] | None = None
        self._put: dict[str, str] = {}

    @property
    def http(self) -> Any:
        """Made when the first input is fetched: not before the job's first report (:meth:`Channel.first`)."""
        if self._http is None:
            from radcloud.core import retry

            self._http = retry.session(budget_s=self.timeout_s)
        return self._http

    def get_to_file(self, key: str, path: str) -> None:
        from radcloud.run.shard import _fetch_url

        if self._get is None:  # every input's URL in one call, when the first is needed
            self._get = dict(self.channel.call(get=self.inputs).get("get") or {})
        if key not in self._get:
            raise BadRequest(f"{key!r} is not an input of this shard")
        _fetch_url(self._get[key], path, session=self.http)

    def prepare_uploads(self, keys: Sequence[str]) -> None:
        """The URLs of every output in one call, just before they are uploaded."""
        if keys:
            self._put.update(self.channel.call(put=list(keys)).get("put") or {})

    def put_file(self, key: str, path: str, content_type: str | None = None) -> _Stored:
        import base64

        import requests

        if key not in self._put:
            self.prepare_uploads([key])
        digest = hashlib.md5()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        headers = {"Content-Type": content_type or "application/octet-stream",
                   "Content-MD5": base64.b64encode(digest.digest()).decode()}
        try:
            with open(path, "rb") as fh:
                resp = self.http.put(self._put.pop(key), data=fh, headers=headers, timeout=self.timeout_s)
        except requests.RequestException as exc:  # the URL (its signature) stays out of the message
            raise UpstreamError(f"could not upload {posixpath.basename(key)} with its presigned URL "
                                f"({type(exc).__name__}); check that the node reaches the object store") from None
        if resp.status_code >= 300:
            raise UpstreamError(f"the object store refused the upload of {posixpath.basename(key)} "
                                f"(HTTP {resp.status_code}); an expired URL answers 403: retry the shard")
        return _Stored(key, os.path.getsize(path), digest.hexdigest())


def run(environ: dict[str, str]) -> dict[str, Any]:
    """Run the shard in ``RADCLOUD_SHARD_SPEC`` through the channel (what a Slurm job does)."""
    import json

    from radcloud.run.registry import Registry
    from radcloud.run.shard import run_shard

    spec = json.loads(environ.pop("RADCLOUD_SHARD_SPEC", "") or "null")
    ticket = environ.pop("RADCLOUD_SHARD_TICKET", "")
    url = environ.get("RADCLOUD_REPORT_URL", "")
    if not isinstance(spec, dict) or not isinstance(spec.get("inputs", []), list):
        raise ValueError("RADCLOUD_SHARD_SPEC is missing or not a JSON object")
    if not ticket or not url:
        raise ValueError("RADCLOUD_SHARD_TICKET and RADCLOUD_REPORT_URL must be set (the Slurm executor sets them)")
    started = time.time()
    limit_s = int(environ.get("RADCLOUD_SLURM_TIME_LIMIT_S") or 0)
    channel = Channel(url, ticket, activation_id=environ.get("SLURM_JOB_ID"),
                      restarts=int(environ.get("SLURM_RESTART_COUNT") or 0))
    return run_shard(spec, store=RemoteStore(channel, spec.get("inputs") or []), reporter=RemoteReporter(channel),
                     registry=Registry(), default_timeout_s=int(environ.get("RADCLOUD_SHARD_TIMEOUT_S") or 300),
                     deadline=started + limit_s if limit_s else None)
