"""The data that crosses the runtime <-> controller boundary (see docs/localwhisk.md).

The controller builds an ``ActionCode`` and ``Limits`` from the stored action and
gets a ``RunOutcome`` back; the field names follow OpenWhisk's activation record
so the controller can copy them without translation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SUCCESS = "success"
APPLICATION_ERROR = "application error"
DEVELOPER_ERROR = "action developer error"
WHISK_ERROR = "whisk internal error"


@dataclass(frozen=True)
class ActionCode:
    fqn: str  # "/guest/pkg/action", becomes __OW_ACTION_NAME
    version: str
    kind: str  # "python:3.11" | "python:3.10" | "python:3.12" | "blackbox"
    code: str  # source text, or base64 zip when binary
    binary: bool
    main: str = "main"
    image: str | None = None  # blackbox only: mapped to a local image spec
    init_env: dict[str, str] = field(default_factory=dict)
    provide_api_key: bool = True
    network: bool = True  # blackbox sandbox: share the host network or not
    digest: str = ""  # warm containers are reused only for the same fqn + digest


@dataclass(frozen=True)
class Limits:
    timeout_ms: int = 60000
    memory_mb: int = 256
    logs_mb: int = 10
    concurrency: int = 1
    instances: int | None = None  # most containers the action may have at once (None: no own cap)


@dataclass
class RunOutcome:
    status: str  # one of SUCCESS, APPLICATION_ERROR, DEVELOPER_ERROR, WHISK_ERROR
    result: dict | list
    logs: list[str]
    start_ms: int
    end_ms: int
    duration_ms: int
    init_time_ms: int | None
    wait_time_ms: int
    timeout: bool
