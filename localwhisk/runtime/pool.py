"""The container pool: what OpenWhisk's invoker ContainerPool does, on one machine.

Warm containers are kept per (action fqn, code digest) and run one activation at
a time (OpenWhisk's Python runtime has concurrency 1). A global cap bounds the
number of live processes; when it is reached, a stem cell or else an idle
container of another action (least recently used) is evicted, otherwise the
caller queues. Stem cells are launchers started without code (OpenWhisk's prewarmed
containers): a cold start takes one and only has to stage the code and import it.
Idle containers are reaped after ``idle_ttl_s``. ``preload`` names modules stem
cells import up front (numpy takes ~200 ms to import here; a preloaded stem cell
turns that part of a cold start into a dictionary lookup).

Stem cells come in pools, ``prewarm`` each, one per kind of process: one for the
Python kinds, one per mapped docker image (``ImageSpec.stem_key``: interpreter,
PYTHONPATH, env, preload, and whether bubblewrap shares the network -- all fixed
when the process starts). Images with ``ImageSpec.prewarm`` get their pool at
start; any other image gets one after its first cold start. An image's stem
cells preload the global ``preload`` plus ``ImageSpec.preload``. Preloaded modules
are imported before the action's init parameters reach ``os.environ``, so a module
that reads its configuration at import time must not be preloaded.

Timing fields, as the controller records them:
- ``wait_time_ms``: queued for a free container slot;
- ``init_time_ms``: cold start only: process start (unless a stem cell was
  taken), staging the code, importing it, the ack;
- ``start_ms``/``end_ms``/``duration_ms``: the run itself, after init (the
  controller moves the record's ``start`` back by ``init_time_ms``, so that its
  ``duration`` includes init, as OpenWhisk's ContainerProxy does).

Memory: each container is one memory cgroup (``memory.py``) limited to the
action's ``limits.memory`` -- resident memory of every process in it, as Docker's
``--memory`` in OpenWhisk -- with no address-space cap. A stem cell is held to
``stem_memory_mb`` until an action takes it; its limit then becomes the action's.
One BLAS thread per container (an OpenWhisk container gets a CPU share, not the
machine; override with an init parameter).
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import sys
import threading
import time
from pathlib import Path

from localwhisk.runtime import memory as mem
from localwhisk.runtime import messages as msg
from localwhisk.runtime import sandbox as sbx
from localwhisk.runtime.container import LAUNCHER, Container, Reply
from localwhisk.runtime.model import DEVELOPER_ERROR, WHISK_ERROR, ActionCode, Limits, RunOutcome

log = logging.getLogger(__name__)

STEM_MEMORY_MB = 512  # OpenWhisk's default maximum action memory
PYTHON_STEM = ("python",)  # the stem pool of the python:3.x kinds
QUEUE_LIMIT_S = 300.0  # longest a run waits for a slot: OpenWhisk's maximum action timeout
STARVING_S = 5.0  # a run of an action without containers waited this long: it may evict any idle one
RECENT_S = 10.0  # an idle container used this recently is not evicted for an action that has containers


class Runtime:
    """Runs actions in warm launcher processes; blocking and thread-safe."""

    def __init__(self, *, api_host: str, state_dir: Path, prewarm: int = 1, max_containers: int = 8,
                 idle_ttl_s: float = 600.0, sandbox: str = "auto",
                 images: dict[str, sbx.ImageSpec] | None = None,
                 preload: tuple[str, ...] = (), memory: str | mem.Limiter = "auto",
                 stem_memory_mb: int = STEM_MEMORY_MB) -> None:
        if sandbox not in ("auto", "bwrap", "none"):
            raise ValueError(f"sandbox={sandbox!r} is not one of auto, bwrap, none")
        self.api_host = api_host
        self.prewarm = prewarm
        self.max_containers = max(1, max_containers)
        self.idle_ttl_s = idle_ttl_s
        # "auto" picks cgroup2, cgroup1 or the RSS watcher (memory.detect); a Limiter is injected as is
        self.memory = memory if isinstance(memory, mem.Limiter) else mem.detect(memory)
        self.stem_memory_mb = stem_memory_mb
        log.info("container memory limits: %s%s", self.memory.kind,
                 f" ({self.memory.reason})" if self.memory.reason else "")
        self.preload = tuple(preload)  # modules stem cells import before they get code
        self.images = dict(sbx.DEFAULT_IMAGES if images is None else images)
        self._sandbox_mode = sandbox
        self._root = Path(state_dir) / "containers"
        shutil.rmtree(self._root, ignore_errors=True)  # leftovers of a previous process
        self._root.mkdir(parents=True, exist_ok=True)
        self._cv = threading.Condition()
        self._idle: dict[tuple[str, str], list[Container]] = {}
        self._busy: dict[tuple[str, str], int] = {}
        # runs queued for a slot, per (fqn, digest): when each started waiting, and the action's instances
        self._waiting: dict[tuple[str, str], list[float]] = {}
        self._caps: dict[tuple[str, str], int | None] = {}
        self._stems: dict[tuple, list[Container]] = {}
        self._starting: dict[tuple, int] = {}  # stem cells being started, per pool
        # pool key -> (image spec or None for the python kinds, network, label for stats)
        self._stem_pools: dict[tuple, tuple[sbx.ImageSpec | None, bool, str]] = {}
        if prewarm > 0:
            self._stem_pools[PYTHON_STEM] = (None, True, "python")
            if sandbox != "bwrap" or sbx.bwrap_available():  # else _placement refuses images
                for name, spec in self.images.items():
                    if spec.prewarm:
                        self._stem_pools.setdefault(self._stem_key(spec, True), (spec, True, name))
        self._count = 0  # live or reserved container slots, stem cells included
        self._epoch: dict[str, int] = {}
        self._all: set[Container] = set()
        self._ids = itertools.count(1)
        self._closed = False
        self._memory_closed = False  # by one caller only: shutdown and the last release can race
        self._wake = threading.Event()
        self._keeper = threading.Thread(target=self._housekeeping, name="localwhisk-pool", daemon=True)
        self._keeper.start()

    # -- public API -----------------------------------------------------------

    def run(self, action: ActionCode, limits: Limits, value: dict | list, *, activation_id: str,
            transaction_id: str, namespace: str, api_key: str | None, deadline_ms: int) -> RunOutcome:
        """Run ``action`` once; never raises for action faults (see RunOutcome.status)."""
        t0 = time.monotonic()
        spec, error = self._placement(action)
        if error:
            return _outcome(Reply(*error), 0, None)
        key = (action.fqn, action.digest)
        stem_key = self._learn_stem_pool(action, spec)
        acquired = self._acquire(key, stem_key, started=t0, instances=limits.instances)
        wait_ms = int((time.monotonic() - t0) * 1000)
        if acquired is None:
            return _outcome(Reply(WHISK_ERROR, {"error": msg.RESOURCE_ERROR}), wait_ms, None)
        container, epoch = acquired
        try:
            return self._run_in(container, key, epoch, action, spec, limits, value, wait_ms, {
                "namespace": namespace, "action_name": action.fqn, "action_version": action.version,
                "activation_id": activation_id, "transaction_id": transaction_id,
                "deadline": str(deadline_ms),
                **({"api_key": api_key} if action.provide_api_key and api_key else {}),
            })
        except Exception:  # a bug here must not take the controller's worker thread down
            log.exception("activation %s: runtime failure", activation_id)
            return _outcome(Reply(WHISK_ERROR, {"error": msg.RESOURCE_ERROR}), wait_ms, None)

    def _run_in(self, container: Container | None, key, epoch: int, action: ActionCode,
                spec: sbx.ImageSpec | None, limits: Limits, value, wait_ms: int, per_run: dict) -> RunOutcome:
        """Init (cold) and run in the acquired slot, then give the slot back, whatever happens."""
        init_ms = None
        log_limit = limits.logs_mb * 1024 * 1024
        try:
            if container is None or not container.initialized:
                t_init = time.monotonic()
                try:
                    container = container or self._spawn(spec, self._network(action), (), action.fqn)
                except OSError as ex:
                    log.error("cannot start a container for %s: %s", action.fqn, ex)
                    return _outcome(Reply(WHISK_ERROR, {"error": msg.RESOURCE_ERROR}), wait_ms, None)
                env = {k: v if isinstance(v, str) else json.dumps(v) for k, v in action.init_env.items()}
                env.update({"__OW_" + k.upper(): v for k, v in per_run.items()})
                reply = container.init(action, env, limits.timeout_ms, limits.memory_mb * 1024 * 1024,
                                       log_limit)
                init_ms = int((time.monotonic() - t_init) * 1000)
                if reply.status:
                    return _outcome(reply, wait_ms, init_ms)
            start_ms = time.time_ns() // 1_000_000
            reply = container.run({"value": value, **per_run}, limits.timeout_ms, log_limit)
            end_ms = time.time_ns() // 1_000_000
            return _outcome(reply, wait_ms, init_ms, start_ms, end_ms)
        except BaseException:
            if container is not None:
                container.kill()
                container.alive = False  # _release destroys it
            raise
        finally:
            self._release(key, container, epoch)

    def forget(self, fqn: str) -> None:
        """The action changed or was deleted: drop its idle containers, retire busy ones."""
        with self._cv:
            self._epoch[fqn] = self._epoch.get(fqn, 0) + 1
            doomed = [c for key in [k for k in self._idle if k[0] == fqn] for c in self._idle.pop(key)]
            self._count -= len(doomed)
            self._cv.notify_all()
        self._destroy_all(doomed)

    def stats(self) -> dict:
        with self._cv:
            actions: dict[str, dict[str, int]] = {}
            for (fqn, _), lst in self._idle.items():
                if lst:
                    actions.setdefault(fqn, {"warm": 0, "busy": 0})["warm"] += len(lst)
            for (fqn, _), n in self._busy.items():
                if n:
                    actions.setdefault(fqn, {"warm": 0, "busy": 0})["busy"] += n
            stems = {self._stem_pools[k][2]: len(lst) for k, lst in self._stems.items() if lst}
            return {"containers": self._count, "max_containers": self.max_containers,
                    "prewarm": sum(stems.values()), "stems": stems, "sandbox": self.sandbox_kind(),
                    "memory": self.memory.kind,
                    "actions": actions}

    def shutdown(self) -> None:
        """Kill every container, busy ones included (their runs end as developer errors)."""
        with self._cv:
            self._closed = True
            victims = [c for lst in [*self._idle.values(), *self._stems.values()] for c in lst]
            busy = [c for c in self._all if c not in victims]
            self._idle.clear()
            self._stems.clear()
            # busy runs and stem cells being started give their slots back themselves
            self._count = sum(self._busy.values()) + sum(self._starting.values())
            self._cv.notify_all()
        self._wake.set()
        for container in busy:
            container.kill()  # its run thread sees the exit and destroys it
        self._destroy_all(victims)
        self._keeper.join(timeout=5)
        with self._cv:  # killed runs release their slots quickly; the process may exit right after
            self._cv.wait_for(lambda: not self._busy and not any(self._starting.values()), timeout=3.0)
        self._close_memory()

    def _close_memory(self) -> None:
        """After shutdown, once no run holds a slot: remove the runtime's cgroup."""
        with self._cv:
            if not self._closed or self._busy or any(self._starting.values()) or self._memory_closed:
                return  # the last busy run calls this again on release
            self._memory_closed = True
        self.memory.close()

    def sandbox_kind(self) -> str:
        """"bwrap" or "plain": how blackbox actions are run here."""
        if self._sandbox_mode == "none":
            return "plain"
        return "bwrap" if sbx.bwrap_available() else "plain"

    # -- slots ----------------------------------------------------------------

    def _network(self, action: ActionCode) -> bool:
        """Whether the action's process shares the host network (only bubblewrap can refuse)."""
        return action.network or self.sandbox_kind() != "bwrap"

    @staticmethod
    def _stem_key(spec: sbx.ImageSpec | None, network: bool) -> tuple:
        return PYTHON_STEM if spec is None else spec.stem_key(network)

    def _learn_stem_pool(self, action: ActionCode, spec: sbx.ImageSpec | None) -> tuple:
        """The stem pool this action's cold starts take from; a new one is kept from now on.

        The replacement of a taken stem cell (and the first one of a new pool) starts
        when the run is released, not now, so it does not compete with this cold start.
        """
        network = True if spec is None else self._network(action)
        stem_key = self._stem_key(spec, network)
        if self.prewarm > 0 and stem_key not in self._stem_pools:
            with self._cv:
                label = (action.image or "python") + ("" if network else " (no network)")
                self._stem_pools.setdefault(stem_key, (spec, network, label))
        return stem_key

    def _placement(self, action: ActionCode):
        """(image spec or None for a python kind, error or None)."""
        if action.kind.startswith("python:"):
            return None, None
        if action.kind != "blackbox":
            return None, (DEVELOPER_ERROR, {"error": f"The runtime kind '{action.kind}' is not supported by localwhisk."})
        spec = sbx.resolve(action.image, self.images)
        if spec is None:
            return None, (DEVELOPER_ERROR, {"error": msg.image_unknown(action.image or "", list(self.images))})
        if self._sandbox_mode == "bwrap" and not sbx.bwrap_available():
            return None, (WHISK_ERROR, {"error": msg.RESOURCE_ERROR})
        return spec, None

    def _acquire(self, key, stem_key: tuple, started: float, instances: int | None = None):
        """Returns (warm container or stem cell or None for "spawn one", epoch) or None.

        ``instances`` (the action's ``limits.instances``): the most containers this
        action may have, warm or busy; at the cap a run waits for one of them (as
        OpenWhisk's scheduler queues the activation), and an idle one of an older
        version of the action is replaced. It never takes a container from another action.
        """
        with self._cv:
            # Counted while it waits: a released container goes to a run of its own action
            # rather than to another action's run that would evict it (see _evictable).
            self._waiting.setdefault(key, []).append(started)
            self._caps[key] = instances
            try:
                got = self._take(key, stem_key, started, instances)
            finally:
                self._waiting[key].remove(started)
                if not self._waiting[key]:
                    del self._waiting[key], self._caps[key]
            if got is None:
                return None
            container, epoch, victim = got
            self._busy[key] = self._busy.get(key, 0) + 1
        if victim is not None:
            self._destroy_all([victim])
        return container, epoch

    def _take(self, key, stem_key: tuple, started: float, instances: int | None):
        """(container or None, epoch, victim to destroy or None), or None past the queue limit (lock held)."""
        while True:
            if self._closed or time.monotonic() - started > QUEUE_LIMIT_S:
                return None
            epoch = self._epoch.get(key[0], 0)
            idle = self._idle.get(key)
            if idle and not self._deprived(key):
                return idle.pop(), epoch, None
            if instances is not None and self._containers_of(key[0]) >= max(1, instances):
                victim = self._idle_other_version(key)
                if victim is None:
                    self._cv.wait(timeout=1.0)
                    continue
                return None, epoch, victim  # the old version's slot becomes this run's
            if self._stems.get(stem_key):
                # It already holds a slot. Its replacement starts when this run is
                # released: starting a Python process now would compete for the CPU
                # with this very cold start.
                return self._stems[stem_key].pop(), epoch, None
            if self._count < self.max_containers:
                self._count += 1
                return None, epoch, None
            victim = self._evictable(key, starving=self._starving(key))
            if victim is not None:
                return None, epoch, victim  # its slot becomes ours
            self._cv.wait(timeout=1.0)

    def _starving(self, key) -> bool:
        """A run of ``key`` has waited ``STARVING_S`` and the action has no container (lock held)."""
        waits = self._waiting.get(key)
        return bool(waits) and time.monotonic() - min(waits) > STARVING_S and not self._containers_of(key[0])

    def _deprived(self, key) -> bool:
        """Another action with runs waiting is owed one of ``key``'s containers (lock held): it holds
        two fewer, or it is starving. ``key``'s own run then leaves its idle container to that
        action's run, which evicts it (_evictable); without this, the action with the most
        queued runs won every released container and an interactive action's run (a dispatch)
        waited for the whole queue."""
        mine = self._containers_of(key[0])
        for other in self._waiting:
            if other[0] == key[0]:
                continue
            theirs, cap = self._containers_of(other[0]), self._caps.get(other)
            if cap is not None and theirs >= max(1, cap):
                continue  # at its instances cap: it cannot take one
            if theirs + 2 <= mine or self._starving(other):
                return True
        return False

    def _containers_of(self, fqn: str) -> int:
        """Live containers of one action, warm or busy, all versions (lock held)."""
        return (sum(len(lst) for k, lst in self._idle.items() if k[0] == fqn)
                + sum(n for k, n in self._busy.items() if k[0] == fqn))

    def _idle_other_version(self, key) -> Container | None:
        """Remove and return an idle container of the same action with other code (lock held)."""
        for other, lst in self._idle.items():
            if other[0] == key[0] and other != key and lst:
                container = lst.pop(0)
                if not lst:
                    del self._idle[other]
                return container
        return None

    def _evictable(self, key=None, starving: bool = False) -> Container | None:
        """Remove and return a stem cell, else the least recently used idle container (lock held).

        For a run of ``key``, an idle container whose own action has runs waiting is taken
        only from an action holding at least two more containers than ``key``'s (a fair
        share), or when this run is ``starving`` (``STARVING_S`` without any). Evicting it
        otherwise made a queue of several actions (six plugins' shards at once) thrash: each
        released container went to another action's waiting run, and every run started cold
        (80 launchers for the real-file matrix's 90 shards, ~0.9 s of CPU each).

        A run of an action that has containers does not evict one used in the last
        ``RECENT_S``: it waits for its own. A job's queued shards otherwise evicted the
        containers of the status and reconcile calls polling it between two polls, and each
        poll started cold (~1 s of CPU) to be evicted again.

        Stem cells go first: there is a stem pool per mapped image (radcloud maps nine
        with the default cap of 8), so they can fill the whole pool; evicting warm
        containers first then made every run of an interactive path a full cold start
        (each evicting the previous action's container). A warm container saves the
        whole init, a stem cell only the process start. OpenWhisk's invoker prewarms
        a few containers per runtime kind, not per image, and has room for both.
        """
        fullest = max(self._stems.values(), key=len, default=None)
        if fullest:
            return fullest.pop(0)
        mine = self._containers_of(key[0]) if key is not None else 0
        recent = time.monotonic() - RECENT_S
        oldest_key, oldest = None, None
        for other, lst in self._idle.items():
            if not lst or (oldest is not None and lst[0].last_used >= oldest.last_used):
                continue
            if mine and lst[0].last_used > recent:
                continue  # in use (a page's polls): this run waits for one of its own action's instead
            if (key is not None and not starving and other in self._waiting
                    and self._containers_of(other[0]) < mine + 2):
                continue  # its own queued run takes it warm
            oldest_key, oldest = other, lst[0]
        if oldest is not None:
            self._idle[oldest_key].pop(0)
            if not self._idle[oldest_key]:
                del self._idle[oldest_key]
            return oldest
        return None

    def _release(self, key, container: Container | None, epoch: int) -> None:
        keep = False
        with self._cv:
            self._busy[key] -= 1
            if not self._busy[key]:
                del self._busy[key]
            if (container is not None and container.alive and not self._closed
                    and self._epoch.get(key[0], 0) == epoch):
                self._idle.setdefault(key, []).append(container)
                keep = True
            else:
                self._count -= 1
            if self._stems_missing():
                self._wake.set()
            self._cv.notify_all()
        if container is not None and not keep:
            self._destroy_all([container])
        if self._closed:
            self._close_memory()

    # -- processes ------------------------------------------------------------

    def _stems_missing(self) -> bool:
        """Some stem pool is below ``prewarm`` (lock held)."""
        return any(len(self._stems.get(k, ())) + self._starting.get(k, 0) < self.prewarm
                   for k in self._stem_pools)

    def _spawn(self, spec: sbx.ImageSpec | None, network: bool, preload: tuple[str, ...],
               label: str) -> Container:
        """Start a launcher: for a python kind (``spec`` None) or a mapped image, maybe sandboxed."""
        cid = f"c{next(self._ids):06d}"
        workdir = self._root / cid
        workdir.mkdir(parents=True)
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(workdir),
            "LANG": "C.UTF-8",
            "PYTHONIOENCODING": "UTF-8",
            "OPENBLAS_NUM_THREADS": "1",
            "__OW_API_HOST": self.api_host,
            "__OW_WAIT_FOR_ACK": "1",
        }
        python, prefix = sys.executable, []
        (workdir / ".tmp").mkdir()
        box = self.memory.box(cid)
        try:
            box.set_limit(self.stem_memory_mb * 1024 * 1024)  # the action's own limit is set at init
        except OSError:
            box.remove()
            raise
        if spec is None:
            env["TMPDIR"] = str(workdir / ".tmp")
        else:
            python = spec.python
            env.update(spec.env)
            if spec.pythonpath:
                env["PYTHONPATH"] = ":".join(spec.pythonpath)
            if self.sandbox_kind() == "bwrap":
                visible = [sys.prefix, Path(python).parent.parent, Path(LAUNCHER).parent, *spec.pythonpath,
                           *spec.sources]
                shown = (box.path, self.memory.mount_point) if box.path and self.memory.mount_point else None
                prefix = sbx.bwrap_argv(workdir, network=network, visible=visible, cgroup=shown)
                env["TMPDIR"] = "/tmp"
            else:
                log.warning("bubblewrap unavailable: docker action %s runs unsandboxed (memory limit only)",
                            label)
                env["TMPDIR"] = str(workdir / ".tmp")
        flags = ["-S", "-u"] if spec is not None and spec.isolated else ["-u"]
        container = Container(cid, workdir, [*prefix, python, *flags, LAUNCHER], env, preload, box=box)
        with self._cv:
            self._all.add(container)
            closed = self._closed
        if closed:  # shutdown raced with this start: the run ends as a developer error
            container.kill()
        return container

    def _destroy_all(self, containers) -> None:
        for container in containers:
            container.destroy()
            with self._cv:
                self._all.discard(container)

    def _housekeeping(self) -> None:
        """Keep ``prewarm`` stem cells and reap idle containers; stops on shutdown."""
        while not self._closed:
            self._top_up_stems()
            self._reap()
            self._wake.wait(timeout=min(1.0, max(0.05, self.idle_ttl_s / 4)))
            self._wake.clear()

    def _top_up_stems(self) -> None:
        """Fill each stem pool up to ``prewarm``, in the order the pools were made."""
        with self._cv:
            pools = list(self._stem_pools)
        for stem_key in pools:
            if not self._top_up(stem_key):
                return

    def _top_up(self, stem_key: tuple) -> bool:
        """Start stem cells for one pool; False when there is no room (or no point) for more."""
        while True:
            with self._cv:
                if self._closed:
                    return False
                if len(self._stems.get(stem_key, ())) + self._starting.get(stem_key, 0) >= self.prewarm:
                    return True
                if self._count >= self.max_containers:
                    return False
                self._count += 1
                self._starting[stem_key] = self._starting.get(stem_key, 0) + 1
                spec, network, label = self._stem_pools[stem_key]
            preload = self.preload + tuple(m for m in (spec.preload if spec else ()) if m not in self.preload)
            container = None
            try:
                container = self._spawn(spec, network, preload, f"stem cell of {label}")
            except OSError as ex:
                log.error("cannot start a stem cell of %s: %s", label, ex)
            with self._cv:
                self._starting[stem_key] -= 1
                if container is not None and not self._closed:
                    self._stems.setdefault(stem_key, []).append(container)
                    self._cv.notify_all()
                    continue
                self._count -= 1
            if container is not None:
                self._destroy_all([container])
            return False

    def _reap(self) -> None:
        cutoff = time.monotonic() - self.idle_ttl_s
        with self._cv:
            doomed = []
            for key, lst in self._idle.items():
                doomed += [c for c in lst if c.last_used < cutoff]
                lst[:] = [c for c in lst if c.last_used >= cutoff]
            for key in [k for k, lst in self._idle.items() if not lst]:
                del self._idle[key]
            self._count -= len(doomed)
            if doomed:
                self._cv.notify_all()
        self._destroy_all(doomed)


def _outcome(reply: Reply, wait_ms: int, init_ms: int | None, start_ms: int | None = None,
             end_ms: int | None = None) -> RunOutcome:
    now = time.time_ns() // 1_000_000
    start = now if start_ms is None else start_ms
    end = now if end_ms is None else end_ms
    return RunOutcome(status=reply.status or DEVELOPER_ERROR, result=reply.result, logs=reply.logs,
                      start_ms=start, end_ms=end, duration_ms=end - start, init_time_ms=init_ms,
                      wait_time_ms=wait_ms, timeout=reply.timeout)
