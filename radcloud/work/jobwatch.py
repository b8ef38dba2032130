"""Watching jobs without starving compute: answers at once, at an adaptive pace.

On OpenWhisk every call of the ``status`` action is an activation, and a
namespace may have only so many in flight (30 by default; 429 beyond). An
activation also needs a container, and an invoker has only so many: a status
call that finds no warm one of its own evicts another action's (a shard's)
and pays a cold start on the CPU the shards need. Rules that keep watchers'
share small, whatever their number (docs/jobs.md):

* **The status action has one container.** It is deployed with
  ``limits.instances: 1`` (deploy/manifest.yaml; OpenWhisk 2.0's per-action
  container limit, which localwhisk honours): status calls queue for it
  rather than evict shards'.
* **Long-polls are off by default**: one would hold that container, and the
  calls queued behind it could not even be counted. With ``slots``
  (``RADCLOUD_WATCH_SLOTS``) > 0 and status given ``slots + 1`` instances, a
  lone watcher may long-poll: leased in Redis (each lease expires on its
  own, so an activation killed mid-wait cannot keep one), for at most
  ``hold_s``, and only while no one else watches — a call that finds a crowd
  (more than ``CROWD`` watchers) answers at once, and a lease holder gives
  its lease back within ``RECHECK_S`` of another watcher's call
  (:meth:`WatchBudget.others_came`).
* **Everyone polls at an adaptive pace.** Every answer carries
  ``poll_after_ms``: when to ask again. It is the number of watchers
  (estimated from the calls counted in the last second times the interval
  they were told) divided by ``rate`` — the status calls per second the
  namespace budgets for watchers — kept between 0.2 s and 15 s. A lone
  watcher polls every 0.2 s; 50 watchers at the default 20/s every 2.5 s.
* **Compute first.** When radcloud's own invokes (shards, finalisers) were
  refused as busy in the last ``BUSY_S`` seconds (:meth:`WatchBudget.mark_busy`,
  called by the OpenWhisk client on every 429/503 it retries), no lease is
  given and every watcher is told to come back in ``POLL_BUSY_S`` (5 s):
  while shards queue for slots, a status call is an activation they wait behind.
* **A crowd asks less about a job whose shards wait to start**: at least
  every ``WAITING_POLL_S`` (5 s) while any of its shards is pending or
  invoked.

Watchers then hold one container and about ``rate × (time one status call
takes)`` slots: well under one here, and almost none while the namespace is full.

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
RECHECK_S = 1.0         # ... in slices, so a busy namespace or another watcher is noticed
POLL_MIN_S, POLL_MAX_S = 0.2, 15.0
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
        self._counted: tuple[int, int] | None = None  # (second, count) of this caller's call
        self.was_busy = False  # the namespace was marked busy at the last pace()
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

    def others_came(self) -> bool:
        """Whether a status call was counted after this one's (:meth:`pace`): another
        watcher came. Counters live 5 s; a lease holder asks every ``RECHECK_S``."""
        if self._counted is None:
            return False
        own_s, own_n = self._counted
        now_s = int(self.clock())
        seconds = [own_s] + list(range(max(own_s + 1, now_s - 3), now_s + 1))
        counts = [int(n or 0) for n in self.r.mget([f"{self._calls}:{s}" for s in seconds])]
        return counts[0] > own_n or any(counts[1:])

    def pace(self, *, count: bool = True) -> tuple[float, bool]:
        """Count this call (unless ``count`` is false); (how long a watcher should wait
        before its next one, crowded).

        The interval of second ``s`` is set once, from second ``s-1``: its
        calls times the interval watchers were told then ≈ how many watch.
        ``crowded``: more than ``CROWD`` watchers, by that estimate or by the
        calls of this second so far (a burst of new watchers shows there first).
        """
        s = int(self.clock())
        key = f"{self._calls}:{s}"
        pipe = self.r.pipeline(transaction=False)
        (pipe.incr(key) if count else pipe.get(key)).expire(key, 5)
        pipe.get(f"{self._calls}:{s - 1}").get(f"{self._interval}:{s - 1}").get(f"{self._interval}:{s}")
        pipe.exists(self._busy)
        calls_now, _, calls, told, now, busy = pipe.execute()
        if count:
            self._counted = (s, int(calls_now))
        self.was_busy = bool(busy)
        watchers = int(calls or 0) * float(told or POLL_MIN_S)
        crowded = max(watchers, int(calls_now or 0) * POLL_MIN_S) > CROWD
        if busy:
            return POLL_BUSY_S, crowded
        if now is not None:
            return float(now), crowded
        interval = round(min(POLL_MAX_S, max(POLL_MIN_S, watchers / self.rate)), 2)
        self.r.set(f"{self._interval}:{s}", interval, nx=True, ex=30)
        return interval, crowded


def watch(services: Any, budget: WatchBudget, job_id: str, *, since: int | None, wait_s: float
          ) -> dict[str, Any]:
    """The job, after waiting (with a lease) up to ``wait_s`` for a version above ``since``.

    Returns the job with ``poll_after_ms``: when the caller should ask again.
    """
    jobs = services.jobs
    job = jobs.get(job_id)
    interval, crowded = budget.pace()
    # A lone watcher of an unfinished job may long-poll: told to come back at once (with
    # ``wait``) after a plain look or a long-poll, it is answered within ms of each change.
    lone = budget.slots > 0 and not crowded and not budget.was_busy and not JOB.is_final(job["state"])
    leased = False
    if lone and wait_s > 0 and since is not None and job["version"] <= since:
        token = budget.lease()
        leased = token is not None
        if token is not None:
            try:
                deadline = time.monotonic() + min(wait_s, budget.hold_s)
                while True:
                    left = deadline - time.monotonic()
                    job = jobs.wait(job_id, since, min(RECHECK_S, max(0.0, left)))
                    if job["version"] > since or JOB.is_final(job["state"]) or left <= RECHECK_S:
                        break
                    # Shards wait for slots, or another watcher came: give the lease (and
                    # the container it holds) back now; everyone polls from here.
                    if budget.busy() or budget.others_came():
                        leased = False  # ... and poll like them
                        break
            finally:
                budget.release(token)
            interval, crowded = budget.pace(count=False)
    if crowded and any(s.get("state") in SHARD_WAITING for s in job.get("shards") or []):
        # Its shards wait for a container: with many watchers, asking again soon shows
        # nothing new and is one more activation they would queue behind. (A lone
        # watcher's calls cost ~5 ms each; it sees its shards start sooner.)
        interval = max(interval, WAITING_POLL_S)
    if lone and (leased or wait_s <= 0 or since is None) and not crowded and not budget.was_busy:
        interval = 0.0
    return {**job, "poll_after_ms": int(interval * 1000)}
