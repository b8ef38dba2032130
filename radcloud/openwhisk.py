"""A small client of the OpenWhisk REST API, for actions that invoke actions.

Inside an action OpenWhisk provides ``__OW_API_HOST`` and ``__OW_API_KEY``
(Settings picks them up). radcloud uses only invoke and activation lookup:
fan-out is non-blocking invokes whose activation ids are recorded, and the
"never stuck" check asks whether an activation has ended.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import requests

from radcloud.errors import ConfigError, TooManyRequests, UpstreamError
from radcloud.settings import Settings

log = logging.getLogger(__name__)


class OpenWhisk:
    """Invoke actions and read activations of one namespace."""

    def __init__(self, api_host: str, api_key: str, namespace: str = "_", *,
                 session: requests.Session | None = None, timeout_s: float = 70.0) -> None:
        if not api_host or not api_key:
            raise ConfigError("OpenWhisk API host and key are needed to invoke actions "
                              "(ow_api_host/ow_api_key, or __OW_API_HOST/__OW_API_KEY)")
        host = api_host if "://" in api_host else f"https://{api_host}"
        self.base = f"{host.rstrip('/')}/api/v1/namespaces/{namespace}"
        user, _, password = api_key.partition(":")
        self.session = session or requests.Session()
        self.session.auth = (user, password)
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings: Settings) -> "OpenWhisk":
        return cls(settings.ow_api_host, settings.ow_api_key.reveal(), settings.ow_namespace)

    def invoke(self, action: str, params: dict[str, Any], *, blocking: bool = False,
               result: bool = False, retries_429: int = 9) -> dict[str, Any]:
        """Invoke ``pkg/action``. Non-blocking returns ``{"activationId": ...}``.

        A 429 (namespace concurrency cap) is retried with backoff a bounded
        number of times (about 9 s in all: a burst of jobs holds the slots
        for seconds, and 1.5 s failed shards of 20 concurrent jobs), then
        raised as TooManyRequests.
        """
        url = f"{self.base}/actions/{action.strip('/')}"
        query = {"blocking": str(blocking).lower(), "result": str(result).lower()}
        delay = 0.05
        for attempt in range(retries_429 + 1):
            try:
                resp = self.session.post(url, params=query, json=params, timeout=self.timeout_s)
            except requests.RequestException as exc:
                raise UpstreamError(f"OpenWhisk at {self.base} unreachable: {type(exc).__name__}") from None
            if resp.status_code == 429 and attempt < retries_429:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            break
        if resp.status_code == 429:
            raise TooManyRequests(f"OpenWhisk refused to invoke {action}: too many requests")
        if resp.status_code in (200, 202, 502):
            body = resp.json()
            if resp.status_code == 502 and result:
                return body if isinstance(body, dict) else {"error": body}
            return body
        raise UpstreamError(f"OpenWhisk invoke of {action} answered {resp.status_code}: {resp.text[:200]}")

    def activation(self, activation_id: str) -> dict[str, Any] | None:
        """The activation record, or None while it runs (OpenWhisk answers 404)."""
        try:
            resp = self.session.get(f"{self.base}/activations/{activation_id}", timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise UpstreamError(f"OpenWhisk at {self.base} unreachable: {type(exc).__name__}") from None
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise UpstreamError(f"OpenWhisk activation lookup answered {resp.status_code}")
        return resp.json()
