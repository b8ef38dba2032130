"""localwhisk's action runtime: OpenWhisk's actionloop protocol in local subprocesses.

- ``model``     the types shared with the controller (ActionCode, Limits, RunOutcome)
- ``launcher``  the action-side loop (stdlib only, runs inside each container)
- ``container`` one launcher process: init, run, deadline, logs, result rules
- ``pool``      ``Runtime``: warm pools per action, stem cells, limits, reaping
- ``sandbox``   docker (blackbox) actions: image mapping and bubblewrap
- ``memory``    a memory cgroup per container (v2 or v1), as OpenWhisk's docker --memory
- ``memwatch``  the fallback where no cgroup is writable: an RSS watcher per process tree
- ``messages``  OpenWhisk's exact error texts and log line format
"""

from localwhisk.runtime.model import (
    APPLICATION_ERROR,
    DEVELOPER_ERROR,
    SUCCESS,
    WHISK_ERROR,
    ActionCode,
    Limits,
    RunOutcome,
)
from localwhisk.runtime.pool import Runtime
from localwhisk.runtime.sandbox import ImageSpec

__all__ = [
    "APPLICATION_ERROR",
    "DEVELOPER_ERROR",
    "SUCCESS",
    "WHISK_ERROR",
    "ActionCode",
    "ImageSpec",
    "Limits",
    "RunOutcome",
    "Runtime",
]
