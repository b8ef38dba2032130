"""Wiring: the job-side collaborators of an action, built from Settings.

Actions (dispatch, status, results, the plugin shard action) ask for a
:class:`JobServices`; tests build one from fakes instead. Clients are made
lazily and reused while the action container is warm.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from radcloud.core import redisclient
from radcloud.core.errors import Unavailable
from radcloud.core.settings import Settings

def jobs_redis(settings: Settings) -> Any:
    """The job store's Redis client: decoded strings, a socket timeout above the longest long-poll."""
    return redisclient.client(settings, redisclient.JOBS)


@dataclasses.dataclass
class JobServices:
    jobs: Any
    cache: Any
    store: Any = None         # radcloud.store.storage.ObjectStore
    registry: Any = None      # radcloud.run.registry.Registry
    staging: Any = None       # radcloud.work.staging.ManifestStaging
    invoker: Any = None       # radcloud.core.openwhisk.OpenWhisk (invoke + activation)
    executor: Any = None      # radcloud.work.executors.Executor running shards (default: the action
                              # executor over ``invoker``)
    settings: Any = None      # to build other executors a unit names (executor_for)
    results: Any = None       # radcloud.work.jobresults.Results
    push: Any = None          # (job, manifest) -> dict, stores a derived series in the PACS
    package: str = "radcloud"
    shard_timeout_s: int = 300
    presign_ttl_s: int = 900
    deid_secret: Any = None   # Settings.deid_secret (dispatch checks it is set; shards pass it on)
    watch_slots: int = 0      # status long-polls allowed at once, for a lone watcher (radcloud.work.jobwatch; off)
    watch_rate: float = 20.0  # status calls per second budgeted for polling watchers

    @property
    def finaliser(self) -> Any:
        from radcloud.work.reporter import Finaliser

        return Finaliser(self.jobs, results=self.results, cache=self.cache, push=self.push,
                         pipelines=self.pipelines())

    def pipelines(self) -> Any:
        """Pipelines (radcloud.work.pipelines): their steps are dispatched through ``invoker``."""
        from radcloud.work.pipelines import Pipelines

        return Pipelines(self.jobs, self.invoker, package=self.package)

    def shard_executor(self) -> Any:
        """The executor new shards are submitted through (None when nothing can run them)."""
        if self.executor is None and self.invoker is not None:
            from radcloud.work.executors import as_executor

            return as_executor(self.invoker, self.package)
        return self.executor

    def executor_named(self, name: str) -> Any:
        """The executor called ``name`` (reconcile asks the one that ran each unit), or None."""
        default = self.shard_executor()
        if default is not None and default.name == name:
            return default
        if self.settings is None:
            return None
        from radcloud.work.executors import executor_for

        cache = self.__dict__.setdefault("_executors", {})
        if name not in cache:
            cache[name] = executor_for(name, self.settings)
        return cache[name]

    def dispatcher(self) -> Any:
        from radcloud.work.dispatch import Dispatcher

        router = None
        if self.settings is not None:
            from radcloud.work import routing

            router = routing.chooser(self.settings)
        return Dispatcher(self.jobs, self.cache, self.registry, self.staging, self.shard_executor(),
                          package=self.package, shard_timeout_s=self.shard_timeout_s,
                          finaliser=self.finaliser, deid_secret=self.deid_secret,
                          executors=self.executor_named, router=router)

    def watch_budget(self) -> Any:
        from radcloud.work.jobwatch import WatchBudget

        return WatchBudget(self.jobs.r, slots=self.watch_slots, rate=self.watch_rate,
                           prefix=getattr(self.jobs, "prefix", "radcloud"))

    @classmethod
    def from_settings(cls, settings: Settings, *, need_invoker: bool = False) -> "JobServices":
        from radcloud.work.cache import ResultCache
        from radcloud.work.jobs import JobStore
        from radcloud.run.registry import Registry
        from radcloud.work.jobresults import Results, pacs_pusher
        from radcloud.work.staging import ManifestStaging
        from radcloud.store.storage import ObjectStore

        redis = jobs_redis(settings)
        jobs = JobStore(redis)
        store = ObjectStore.from_settings(settings)
        invoker = executor = None
        if need_invoker or (settings.ow_api_host and settings.ow_api_key):
            from radcloud.work.jobwatch import WatchBudget
            from radcloud.core.openwhisk import OpenWhisk, busy_budget_s
            from radcloud.work.executors import executor_for

            # Invokes refused as busy slow the watchers down (radcloud.work.jobwatch: compute first).
            invoker = OpenWhisk.from_settings(settings, on_busy=WatchBudget(redis).mark_busy)
            # Shards run through the configured executor (RADCLOUD_EXECUTOR, "action" by default);
            # a busy namespace is waited out as long as before, then the shard stays pending.
            clients = ({"on_busy": WatchBudget(redis).mark_busy, "busy_budget_s": busy_budget_s()}
                       if settings.executor == "action" else {})
            executor = executor_for(settings.executor, settings, **clients)
        return cls(jobs=jobs, cache=ResultCache(redis, jobs), store=store, registry=Registry(),
                   staging=ManifestStaging(store, redis), invoker=invoker, executor=executor, settings=settings,
                   results=Results(store, redis, jobs), push=pacs_pusher(settings, store),
                   package=settings.ow_package, shard_timeout_s=settings.shard_timeout_s,
                   presign_ttl_s=settings.presign_ttl_s, deid_secret=settings.deid_secret,
                   watch_slots=settings.watch_slots, watch_rate=settings.watch_rate)


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Redis down is a 503 naming the job store, not an anonymous 500."""
    import redis

    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise Unavailable(f"the job store (Redis) is unreachable ({type(exc).__name__}); retry shortly") from None
