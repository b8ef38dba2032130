"""Watching jobs without starving compute: answers at once, at an adaptive pace.

On OpenWhisk every call of the ``status`` action is an activation, and a
namespace may have only so many in flight (30 by default; 429 beyond). An
activation also needs a container, and an invoker has only so many: a status
call that finds no warm one of its own evicts another action's (a shard's)
and pays a cold start on the CPU the shards need. Rules that keep watchers'
share small, whatever their number (docs/jobs.md):

* **The status action has few containers.** It is deployed with
  ``limits.instances: 1`` (deploy/manifest.yaml; OpenWhisk 2.0's per-action
  container limit, which localwhisk honours): all watchers share one warm
  container, and status calls queue for it rather than evict shards.
* **Answers come at once; long-polls are off by default.** A long-poll would
  hold that one container. ``slots`` (``RADCLOUD_WATCH_SLOTS``, default 0)
  status calls per namespace may still block at once, leased in Redis (each
  lease expires on its own, so an activation killed mid-wait cannot keep
  one), each for at most ``hold_s`` — for a deployment that gives the status
  action more instances than slots.
* **Everyone polls at an adaptive pace.** Every answer carries
  ``poll_after_ms``: when to ask again. It is the number of watchers
  (estimated from the calls counted in the last second times the interval
  they were told) divided by ``rate`` — the status calls per second the
  namespace budgets for watchers — kept between 0.5 s and 15 s. 50 watchers
  at the default 20/s poll every 2.5 s; one watcher, every 0.5 s.
* **Compute first.** When radcloud's own invokes (shards, finalisers) were
  refused as busy in the last ``BUSY_S`` seconds (:meth:`WatchBudget.mark_busy`,
  called by the OpenWhisk client on every 429/503 it retries), no lease is
  given and every watcher is told to come back in ``POLL_BUSY_S`` (5 s):
  while shards queue for slots, a status call is an activation they wait behind.
* **A job whose shards wait to start is asked about less** when more than
  ``CROWD`` watchers are watching: at least every ``WAITING_POLL_S`` (5 s)
  while any of its shards is pending or invoked. A lone watcher (the CLI, a
  test) keeps its 0.5 s.

Watchers then hold about ``rate × (time one status call takes)`` slots and
one container: well under one slot here, and almost none while the
namespace is full.

:func:`unstick` is the "never stuck" check (fail shards that can no longer
report, replace a dead finaliser); the status action and the pfcon status
both run it before answering about an unfinished job.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from radcloud.jobs import FINAL_STATES

HOLD_S = 20.0           # a leased long-poll blocks at most this long
RECHECK_S = 2.0         # ... in slices, so a dead shard or a busy namespace is noticed
ACTIVATION_CHECK_MS = 2000
POLL_MIN_S, POLL_MAX_S = 0.5, 15.0
POLL_BUSY_S = 5.0  # what every watcher is told while radcloud's own invokes are refused
BUSY_S = 10  # how long a refused invoke keeps watchers slow
WAITING_POLL_S = 5.0  # at least this while the watched job has shards waiting to start, when crowded
CROWD = 2.0  # more watchers than this (estimated) in the namespace: crowded

_LEASE_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class WatchBudget:
    """Long-poll leases and the adaptive poll interval of one namespace, kept in Redis."""

    def __init__(self, redis: Any, *, slots: int = 0, rate: float = 20.0, hold_s: float = HOLD_S,
                 prefix: str = "radcloud", clock: Callable[[], float] = time.time) -> None:
        self.r, self.slots, self.rate, self.hold_s = redis, slots, max(rate, 0.1), hold_s
        self.clock = clock
        self._leases, self._calls, self._interval = (f"{prefix}:watch:leases", f"{prefix}:watch:calls",
                                                      f"{prefix}:watch:interval")
        self._busy = f"{prefix}:watch:busy"
        self._lease_lua = redis.register_script(_LEASE_LUA)

    def mark_busy(self, status: int = 429) -> None:
        """OpenWhisk refused one of radcloud's own invokes: slow watchers down for ``BUSY_S``."""
        self.r.set(self._busy, status, ex=BUSY_S)

    def busy(self) -> bool:
        return bool(self.r.exists(self._busy))

    def lease(self) -> str | None:
        """A long-poll lease (release it when done), or None when all ``slots`` are taken
        or shards are waiting for slots."""
        if self.slots <= 0 or self.busy():
            return None
        now, token = self.clock(), uuid.uuid4().hex
        # A lease outlives its hold by a margin, then expires by itself.
        got = self._lease_lua(keys=[self._leases], args=[now, self.slots, now + self.hold_s + 10, token,
                                                         int(self.hold_s) + 60])
        return token if int(got) else None

    def release(self, token: str) -> None:
        self.r.zrem(self._leases, token)

    def poll_after_s(self) -> float:
        """Count this call; how long a watcher should wait before its next one."""
        return self.pace()[0]

    def pace(self) -> tuple[float, bool]:
        """Count this call; (how long a watcher should wait before its next one, crowded).

        The interval of second ``s`` is set once, from second ``s-1``: its
        calls times the interval watchers were told then ≈ how many watch.
        ``crowded``: more than ``CROWD`` watchers, by that estimate or by the
        calls of this second so far (a burst of new watchers shows there first).
        """
        s = int(self.clock())
        pipe = self.r.pipeline(transaction=False)
        pipe.incr(f"{self._calls}:{s}").expire(f"{self._calls}:{s}", 5)
        pipe.get(f"{self._calls}:{s - 1}").get(f"{self._interval}:{s - 1}").get(f"{self._interval}:{s}")
        pipe.exists(self._busy)
        calls_now, _, calls, told, now, busy = pipe.execute()
        watchers = int(calls or 0) * float(told or POLL_MIN_S)
        crowded = max(watchers, int(calls_now) * POLL_MIN_S) > CROWD
        if busy:
            return POLL_BUSY_S, crowded
        if now is not None:
            return float(now), crowded
        interval = round(min(POLL_MAX_S, max(POLL_MIN_S, watchers / self.rate)), 2)
        self.r.set(f"{self._interval}:{s}", interval, nx=True, ex=30)
        return interval, crowded


def unstick(jobs: Any, job_id: str, *, activation: Callable[[str], Any] | None = None,
            finaliser: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Never stuck: fail shards that cannot report any more; replace a dead finaliser.

    ``activation(id)`` reads an OpenWhisk activation record (None while it
    runs); ``finaliser(job_id)`` finishes the job. Returns the job as it is then.
    """
    job = jobs.get(job_id)
    if job["state"] in FINAL_STATES:
        return job
    if job["state"] != "finishing":
        # Deadlines are checked on every call (no I/O); activation records, one
        # OpenWhisk GET per open shard, at most every ACTIVATION_CHECK_MS per job.
        check = activation is not None and jobs.r.set(jobs.key(job_id, "reconciled"), 1, nx=True,
                                                      px=ACTIVATION_CHECK_MS)
        if jobs.reconcile(job_id, activation if check else None) and finaliser:
            finaliser(job_id)
    elif jobs.claim_finaliser(job_id) and finaliser:
        finaliser(job_id)
    return jobs.get(job_id)


def watch(services: Any, budget: WatchBudget, job_id: str, *, since: int | None, wait_s: float
          ) -> dict[str, Any]:
    """The job, after waiting (with a lease) up to ``wait_s`` for a version above ``since``.

    Returns the job with ``poll_after_ms``: when the caller should ask again.
    """
    jobs = services.jobs
    activation = services.activation if services.invoker is not None else None
    job = unstick(jobs, job_id, activation=activation, finaliser=services.finaliser)
    if wait_s > 0 and since is not None and job["version"] <= since and job["state"] not in FINAL_STATES:
        token = budget.lease()
        if token is not None:
            try:
                deadline = time.monotonic() + min(wait_s, budget.hold_s)
                while True:
                    left = deadline - time.monotonic()
                    job = jobs.wait(job_id, since, min(RECHECK_S, max(0.0, left)))
                    if job["version"] > since or job["state"] in FINAL_STATES or left <= RECHECK_S:
                        break
                    if budget.busy():  # shards wait for slots: give this one back now
                        break
                    unstick(jobs, job_id, activation=activation, finaliser=services.finaliser)
            finally:
                budget.release(token)
    interval, crowded = budget.pace()
    if crowded and any(s.get("state") in ("pending", "invoked") for s in job.get("shards") or []):
        # Its shards wait for a container: with many watchers, asking again soon shows
        # nothing new and is one more activation they would queue behind. (A lone
        # watcher's two calls a second cost nothing; it sees its shards start sooner.)
        interval = max(interval, WAITING_POLL_S)
    return {**job, "poll_after_ms": int(interval * 1000)}
