"""The local stack radcloud runs against: Orthanc, Redis, SeaweedFS S3 and, optionally, localwhisk.

Started and stopped by the project itself (``radcloud stack up|down``) from
a state directory; see :class:`radcloud.ops.stack.local.Stack`.

The names below load on first use (PEP 562): every ``radcloud`` command
imports this package, and the orchestrator's imports (requests, minio...)
would otherwise slow each of them down.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ALL_SERVICES": "radcloud.ops.stack.state", "DEFAULT_SERVICES": "radcloud.ops.stack.state",
    "Endpoints": "radcloud.ops.stack.endpoints", "OrthancEndpoint": "radcloud.ops.stack.endpoints",
    "StackError": "radcloud.ops.stack.errors", "Stack": "radcloud.ops.stack.local", "Ports": "radcloud.ops.stack.ports",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'radcloud.ops.stack' has no attribute {name!r}")
