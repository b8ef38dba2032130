"""Executors: one module per way of running a unit, behind :mod:`.base`'s interface.

``executor_for(name, settings)`` loads ``radcloud.work.executors.<name>`` and
calls its ``from_settings``. Adding an executor (Slurm) is one new module
with a ``from_settings(settings, **clients) -> Executor`` plus configuration
(``RADCLOUD_EXECUTOR``, or the name a plugin asks for): nothing here changes.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from radcloud.core.errors import ConfigError
from radcloud.work.executors.base import Executor, ExecutorBusy, Resources, Unit, UnitStatus

__all__ = ["Executor", "ExecutorBusy", "Resources", "Unit", "UnitStatus", "as_executor", "executor_for", "known"]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_NOT_EXECUTORS = {"base"}


def known() -> list[str]:
    """The executor modules installed here."""
    import pkgutil

    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_EXECUTORS)


def executor_for(name: str, settings: Any, **clients: Any) -> Executor:
    """The executor called ``name``, built from ``settings`` (clients injected by tests).

    Raises ConfigError naming the executors there are when ``name`` is not one.
    """
    if not isinstance(name, str) or not _NAME.match(name) or name in _NOT_EXECUTORS or name not in known():
        raise ConfigError(f"executor {name!r} is not installed; known executors: {', '.join(known())} "
                          "(set RADCLOUD_EXECUTOR to one of them)", field="executor")
    module = importlib.import_module(f"{__name__}.{name}")
    return module.from_settings(settings, **clients)


def as_executor(runner: Any, package: str = "radcloud") -> Executor:
    """``runner`` itself when it is an Executor; an OpenWhisk client (invoke +
    activation) becomes the action executor over it (how tests and older
    callers pass one)."""
    if all(hasattr(runner, m) for m in ("submit", "poll", "cancel")):
        return runner
    from radcloud.work.executors.action import ActionExecutor

    return ActionExecutor(runner, package=package)
