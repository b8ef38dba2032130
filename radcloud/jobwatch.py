"""Watching jobs without starving compute: a small long-poll budget, then adaptive polling.

On OpenWhisk every call of the ``status`` action is an activation, and a
namespace may have only so many in flight (30 by default; 429 beyond). A
long-poll that blocks for its whole wait holds one of those slots, so 30
people watching jobs would leave no slot for any shard. Two rules keep
watchers' share small, whatever their number (docs/jobs.md):

* **Long-polls are leased.** At most ``slots`` (default 1) status calls per namespace
  block at once (a Redis sorted set of leases, each expiring on its own so an
  activation killed mid-wait cannot keep one), each for at most
  ``hold_s``. A call that gets no lease answers at once.
* **Everyone else polls, at an adaptive pace.** Every answer carries
  ``poll_after_ms``: when to ask again. It is the number of watchers
  (estimated from the calls counted in the last second times the interval
  they were told) divided by ``rate`` — the status calls per second the
  namespace budgets for watchers — kept between 1 s and 15 s. 50 watchers at
  the default 20/s poll every 2.5 s; one watcher, every second (or at once
  with a lease, waking within milliseconds of a change).

* **Compute first.** When radcloud's own invokes (shards, finalisers) were
  refused as busy in the last ``BUSY_S`` seconds (:meth:`WatchBudget.mark_busy`,
  called by the OpenWhisk client on every 429/503 it retries), no lease is
  given and every watcher is told to come back in ``POLL_MAX_S``: while
  shards queue for slots, a status call is an activation they wait behind.

* **A job whose shards wait to start is asked about less**: at least every
  ``WAITING_POLL_S`` (5 s) while any of its shards is pending or invoked.

Watchers then hold about ``slots + rate × (time one status call takes)``
slots: 2 leases plus well under one slot of short calls here, and almost
none while the namespace is full.

Watching only reads: failing shards that can no longer report and replacing
a dead finaliser is :mod:`radcloud.work.reconcile`'s, on the write side and
on a schedule (the ``reconcile`` action), never inside a status read.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from radcloud.work.lifecycle import JOB, SHARD_WAITING

HOLD_S = 20.0           # a leased long-poll blocks at most this long
RECHECK_S = 2.0         # ... in slices, so a busy namespace is noticed
POLL_MIN_S, POLL_MAX_S = 1.0, 15.0
BUSY_S = 10  # how long a refused invoke keeps watchers slow
WAITING_POLL_S = 5.0  # at least this while the watched job has shards waiting to start

_LEASE_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class WatchBudget:
    """Long-poll leases and the adaptive poll interval of one namespace, kept in Redis."""

    def __init__(self, redis: Any, *, slots: int = 1, rate: float = 20.0, hold_s: float = HOLD_S,
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
        """Count this call; how long a watcher should wait before its next one.

        The interval of second ``s`` is set once, from second ``s-1``: its
        calls times the interval watchers were told then ≈ how many watch.
        """
        s = int(self.clock())
        pipe = self.r.pipeline(transaction=False)
        pipe.incr(f"{self._calls}:{s}").expire(f"{self._calls}:{s}", 5)
        pipe.get(f"{self._calls}:{s - 1}").get(f"{self._interval}:{s - 1}").get(f"{self._interval}:{s}")
        pipe.exists(self._busy)
        _, _, calls, told, now, busy = pipe.execute()
        if busy:
            return POLL_MAX_S
        if now is not None:
            return float(now)
        watchers = int(calls or 0) * float(told or POLL_MIN_S)
        interval = round(min(POLL_MAX_S, max(POLL_MIN_S, watchers / self.rate)), 2)
        self.r.set(f"{self._interval}:{s}", interval, nx=True, ex=30)
        return interval


def watch(services: Any, budget: WatchBudget, job_id: str, *, since: int | None, wait_s: float
          ) -> dict[str, Any]:
    """The job, after waiting (with a lease) up to ``wait_s`` for a version above ``since``.

    Returns the job with ``poll_after_ms``: when the caller should ask again.
    """
    jobs = services.jobs
    job = jobs.get(job_id)
    if wait_s > 0 and since is not None and job["version"] <= since and not JOB.is_final(job["state"]):
        token = budget.lease()
        if token is not None:
            try:
                deadline = time.monotonic() + min(wait_s, budget.hold_s)
                while True:
                    left = deadline - time.monotonic()
                    job = jobs.wait(job_id, since, min(RECHECK_S, max(0.0, left)))
                    if job["version"] > since or JOB.is_final(job["state"]) or left <= RECHECK_S:
                        break
                    if budget.busy():  # shards wait for slots: give this one back now
                        break
            finally:
                budget.release(token)
    interval = budget.poll_after_s()
    if any(s.get("state") in SHARD_WAITING for s in job.get("shards") or []):
        # Its shards wait for a container: asking again soon shows nothing new and
        # is one more activation they would queue behind.
        interval = max(interval, WAITING_POLL_S)
    return {**job, "poll_after_ms": int(interval * 1000)}
