"""redis-py clients for the actions: one per (URL, options), reused while the container is warm.

Each use has its own options (a job long-poll waits up to 60 s, so its socket
timeout is above that; the user store answers in milliseconds or not at all),
but one cache holds them all, so a warm container keeps one connection pool
per use instead of reconnecting on every activation.

Riding out a Redis restart is decided here, once, for every command of every
use: redis-py's own :class:`redis.retry.Retry` reconnects and repeats a
command that met a refused or reset connection (a restart, or ``LOADING``
while Redis reads its AOF back) with exponential backoff, for at most
``retry_budget_s`` seconds. Only connection errors are retried (a refused
password is one to redis-py, but no restart fixes it: it fails at once): a
socket *timeout* means Redis is hung, not restarting, and retrying it would
multiply a 75 s long-poll timeout. A command repeated after its reply was
lost may run twice; the job model's writes are guarded Lua scripts, so a
repeat meets the state the first one left (``Conflict``), never a double count.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from radcloud.core.settings import Settings

log = logging.getLogger(__name__)

# ``retry_budget_s``: how long a command waits for Redis to come back (backoff sleeps).
USER_STORE = {"socket_timeout": 5, "socket_connect_timeout": 2}  # + the setting user_store_retry_s (radcloud.access.auth)
JOBS = {"decode_responses": True, "socket_timeout": 75, "socket_connect_timeout": 3, "health_check_interval": 30,
        "retry_budget_s": 30}
PROGRESS = {"decode_responses": True, "socket_timeout": 10, "socket_connect_timeout": 5, "retry_budget_s": 30}
BACKOFF_BASE_S = 0.1  # first wait 0.2 s, doubling ...
BACKOFF_CAP_S = 2.0   # ... to at most 2 s between attempts

_clients: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
_lock = threading.Lock()


def client(settings: Settings, options: dict[str, Any]) -> Any:
    """The shared ``redis.Redis`` for ``settings.redis_url`` with these ``options``
    (redis-py keyword arguments, plus ``retry_budget_s``)."""
    url = settings.redis_url.reveal()
    key = (url, tuple(sorted(options.items())))
    with _lock:
        found = _clients.get(key)
        if found is None:
            import redis

            kwargs = dict(options)
            budget = float(kwargs.pop("retry_budget_s", 0))
            found = _clients[key] = redis.Redis.from_url(url, **kwargs, **restart_policy(budget))
        return found


def restart_policy(budget_s: float) -> dict[str, Any]:
    """redis-py keyword arguments that retry connection errors for at most ``budget_s`` seconds."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    return {"retry": _restart_retry_class()(budget_s), "retry_on_error": [RedisConnectionError]}


def retry_budget_s(redis_client: Any) -> float:
    """How long a client's commands wait for Redis to come back (0: they do not)."""
    retry = redis_client.connection_pool.connection_kwargs.get("retry")
    return float(getattr(retry, "budget_s", 0.0))


_RETRY_CLASS: Any = None


def _restart_retry_class() -> Any:
    """redis-py's ``Retry`` bounded by time rather than by count (made once, on first use).

    redis-py applies one ``Retry`` at two levels: opening the socket (where a
    refusal is the builtin ``ConnectionRefusedError``) and the command (where
    a reset is redis' ``ConnectionError``). Counted retries would nest and
    multiply; a deadline per call bounds both: the inner one gives up by its
    deadline, and the outer one, which started earlier, has passed its own.
    """
    global _RETRY_CLASS
    if _RETRY_CLASS is not None:
        return _RETRY_CLASS
    import builtins
    import time

    from redis.backoff import ExponentialBackoff
    from redis.exceptions import AuthenticationError, AuthorizationError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.retry import Retry

    # redis-py's ConnectionError subclasses that no restart fixes: a wrong or missing
    # password fails at once instead of after the whole budget.
    refused = (AuthenticationError, AuthorizationError)

    class RestartRetry(Retry):
        def __init__(self, budget_s: float) -> None:
            super().__init__(ExponentialBackoff(cap=BACKOFF_CAP_S, base=BACKOFF_BASE_S), retries=-1,
                             # A restarting server refuses (TCP) or has no socket file yet (unix).
                             supported_errors=(RedisConnectionError, builtins.ConnectionError,
                                               FileNotFoundError))
            self.budget_s = budget_s

        def __eq__(self, other: Any) -> bool:
            return isinstance(other, RestartRetry) and other.budget_s == self.budget_s

        __hash__ = Retry.__hash__

        def call_with_retry(self, do: Any, fail: Any, is_retryable: Any = None) -> Any:
            self._backoff.reset()
            give_up = time.monotonic() + self.budget_s
            failures = 0
            while True:
                try:
                    return do()
                except self._supported_errors as error:
                    if is_retryable and not is_retryable(error) or isinstance(error, refused):
                        raise
                    failures += 1
                    fail(error)
                    left = give_up - time.monotonic()
                    if left <= 0:
                        raise
                    log.warning("Redis unreachable (%s); retrying for %.0f s more", type(error).__name__, left)
                    time.sleep(min(self._backoff.compute(failures), left))

    _RETRY_CLASS = RestartRetry
    return RestartRetry
