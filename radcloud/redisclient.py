"""redis-py clients for the actions: one per (URL, options), reused while the container is warm.

Each use has its own options (a job long-poll waits up to 60 s, so its socket
timeout is above that; the user store answers in milliseconds or not at all),
but one cache holds them all, so a warm container keeps one connection pool
per use instead of reconnecting on every activation.
"""

from __future__ import annotations

import threading
from typing import Any

from radcloud.settings import Settings

USER_STORE = {"socket_timeout": 5, "socket_connect_timeout": 2}
JOBS = {"decode_responses": True, "socket_timeout": 75, "socket_connect_timeout": 3, "health_check_interval": 30}
PROGRESS = {"decode_responses": True, "socket_timeout": 10, "socket_connect_timeout": 5}

_clients: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
_lock = threading.Lock()


def client(settings: Settings, options: dict[str, Any]) -> Any:
    """The shared ``redis.Redis`` for ``settings.redis_url`` with these ``options``."""
    url = settings.redis_url.reveal()
    key = (url, tuple(sorted(options.items())))
    with _lock:
        found = _clients.get(key)
        if found is None:
            import redis

            found = _clients[key] = redis.Redis.from_url(url, **options)
        return found
