"""A small client of the OpenWhisk REST API, for actions that invoke actions.

Inside an action OpenWhisk provides ``__OW_API_HOST`` and ``__OW_API_KEY``
(Settings picks them up). radcloud uses only invoke and activation lookup:
fan-out is non-blocking invokes whose activation ids are recorded, and the
"never stuck" check asks whether an activation has ended.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

from radcloud.core import retry
from radcloud.core.errors import ConfigError, TooManyRequests, UpstreamError
from radcloud.core.settings import Settings

log = logging.getLogger(__name__)

BUSY_BUDGET_S = 20.0  # at most; inside an action, no more than its deadline leaves (busy_budget_s)
DEADLINE_MARGIN_S = 10.0  # left to the action to record what it did after its last invoke
# A refused invoke is sent again within this (jittered): a slot freed by a finishing
# activation is taken at once, not after an exponential wait grown to seconds while the
# shard's start is what is being measured (docs/jobs.md, "Watchers and the namespace's slots").
INVOKE_BACKOFF_MAX_S = 0.5


class OpenWhisk:
    """Invoke actions and read activations of one namespace."""

    def __init__(self, api_host: str, api_key: str, namespace: str = "_", *,
                 session: requests.Session | None = None, timeout_s: float = 70.0,
                 busy_budget_s: float = BUSY_BUDGET_S, on_busy: Callable[[int], None] | None = None) -> None:
        if not api_host or not api_key:
            raise ConfigError("OpenWhisk API host and key are needed to invoke actions "
                              "(ow_api_host/ow_api_key, or __OW_API_HOST/__OW_API_KEY)")
        host = api_host if "://" in api_host else f"https://{api_host}"
        self.base = f"{host.rstrip('/')}/api/v1/namespaces/{namespace}"
        user, _, password = api_key.partition(":")
        # Invokes are POSTs: retried on 429 (refused before an activation
        # exists), and on 503 only because a second run of a shard or
        # finaliser is refused by the job's state machine (radcloud.work.jobs).
        self.session = session or retry.session(budget_s=busy_budget_s, idempotent_post=True, on_busy=on_busy,
                                                backoff_max_s=INVOKE_BACKOFF_MAX_S)
        self.session.auth = (user, password)
        self.timeout_s, self.busy_budget_s = timeout_s, busy_budget_s

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str] = os.environ,
                      on_busy: Callable[[int], None] | None = None) -> "OpenWhisk":
        return cls(settings.ow_api_host, settings.ow_api_key.reveal(), settings.ow_namespace,
                   busy_budget_s=busy_budget_s(environ), on_busy=on_busy)

    def invoke(self, action: str, params: dict[str, Any], *, blocking: bool = False,
               result: bool = False) -> dict[str, Any]:
        """Invoke ``pkg/action``. Non-blocking returns ``{"activationId": ...}``.

        A busy namespace (429, or 503) is waited out with backoff and jitter
        (:mod:`radcloud.core.retry`) for up to ``busy_budget_s``: a burst of jobs
        holds the slots for seconds. After that it is TooManyRequests, whose
        message says what was refused and what to do.
        """
        url = f"{self.base}/actions/{action.strip('/')}"
        query = {"blocking": str(blocking).lower(), "result": str(result).lower()}
        try:
            resp = self.session.post(url, params=query, json=params, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise UpstreamError(f"OpenWhisk at {self.base} unreachable: {type(exc).__name__}") from None
        if resp.status_code in (429, 503):
            raise TooManyRequests(f"OpenWhisk refused to invoke {action} for {self.busy_budget_s:.0f} s "
                                  f"(HTTP {resp.status_code}: {_error_text(resp)}); the namespace is at its "
                                  "concurrency limit: retry later, or raise the namespace's limit")
        if resp.status_code in (200, 202, 502):
            body = resp.json()
            if resp.status_code == 502 and result:
                return body if isinstance(body, dict) else {"error": body}
            return body
        raise UpstreamError(f"OpenWhisk invoke of {action} answered {resp.status_code}: {resp.text[:200]}")

    def fire(self, trigger: str, params: dict[str, Any]) -> str | None:
        """Fire a trigger; its activation id, or None when no rule is active (OpenWhisk's 204).

        Raises UpstreamError when OpenWhisk refuses (404: the trigger is not deployed).
        """
        url = self.base + f"/triggers/{trigger.strip('/')}"
        try:
            resp = self.session.post(url, json=params, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise UpstreamError(f"OpenWhisk at {self.base} unreachable: {type(exc).__name__}") from None
        if resp.status_code == 204:
            return None
        if resp.status_code == 202:
            return resp.json().get("activationId")
        if resp.status_code == 404:
            raise UpstreamError(f"OpenWhisk has no trigger {trigger}: deploy deploy/manifest.yaml (radcloud deploy)")
        if resp.status_code == 429:  # the namespace's fires per minute (or its concurrency) are used up
            raise TooManyRequests(f"OpenWhisk refused to fire trigger {trigger} ({_error_text(resp)}): the "
                                  "namespace's trigger fires per minute are used up; fire again when the minute "
                                  "rolls, or raise the limit (whisk.limits.triggersFiresPerminute)")
        raise UpstreamError(f"OpenWhisk fire of trigger {trigger} answered {resp.status_code}: {_error_text(resp)}")

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


def _error_text(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    return str(body.get("error") if isinstance(body, dict) else body)[:200]


def busy_budget_s(environ: Mapping[str, str] = os.environ, now: Callable[[], float] = time.time) -> float:
    """How long an invoke may wait out a busy namespace: ``BUSY_BUDGET_S``, cut to what
    this activation's ``__OW_DEADLINE`` (epoch ms) leaves, less a margin.

    Not longer: the invoking action holds a container and a slot while it
    waits, and those may be what the refused invoke is waiting for.
    """
    deadline = environ.get("__OW_DEADLINE")
    if not deadline:
        return BUSY_BUDGET_S
    return max(1.0, min(BUSY_BUDGET_S, float(deadline) / 1000.0 - now() - DEADLINE_MARGIN_S))
