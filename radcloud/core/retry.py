"""How radcloud's HTTP clients ride out a busy OpenWhisk: urllib3's ``Retry``, bounded in time.

OpenWhisk answers **429** when a namespace has as many activations in flight
as it may (``Too many concurrent requests in flight (count: N, allowed: M)``)
and **503** when it is overloaded; neither sends ``Retry-After``, but a proxy
or gateway in front of it may. Every radcloud client that calls OpenWhisk or
the web actions (the CLI, actions invoking actions, the test harness) uses
:func:`session`, so they all back off the same way:

Only OpenWhisk's own refusals are retried. An answer an activation gave
carries the ``x-openwhisk-activation-id`` header: a 429 or 503 with it is
the action's decision (the login lockout, "the job store is unreachable")
and is returned at once, for the caller to show.

* **OpenWhisk's 429 is retried for every method**, POST included: OpenWhisk
  refuses it in the entitlement check, before an activation exists, so
  nothing was done and sending it again cannot do anything twice;
* **OpenWhisk's 503** (overloaded) and read errors only for idempotent
  methods (GET, HEAD, PUT, DELETE, OPTIONS), or for POSTs the caller says are
  idempotent: a proxy in front of OpenWhisk may answer 503 after forwarding;
* connection errors (the request never left) for every method, a few times;
  502 never (an action crashed: that is its answer);
* the wait honours ``Retry-After`` when present, otherwise exponential
  backoff with jitter, and every wait is cut to what is left of the budget:
  after ``budget_s`` seconds the last answer is returned as it is (the caller
  turns a 429 into its usual error), so no call retries forever.

The backoff itself is urllib3's; this module only adds the time budget and
the per-status method rule.
"""

from __future__ import annotations

import http.cookiejar

import random
import time
from collections.abc import Callable, Collection
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.util.retry import Retry

NOT_ACCEPTED = 429  # refused before anything ran: safe to resend any method
OVERLOADED = frozenset({503})  # may follow a forwarded request: idempotent methods only
ACTIVATION_HEADER = "x-openwhisk-activation-id"  # set on every answer an activation gave
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class BudgetRetry(Retry):
    """urllib3 ``Retry`` with a total time budget and 429 retried for every method.

    The budget starts at the first retry of a request (urllib3 makes a new
    ``Retry`` per attempt through :meth:`new`; the deadline is carried along).
    ``clock`` is injectable for tests.
    """

    def __init__(self, *, budget_s: float = 60.0, deadline: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_busy: Callable[[int], None] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.budget_s, self.deadline, self.clock, self.on_busy = budget_s, deadline, clock, on_busy

    def new(self, **kw: Any) -> "BudgetRetry":
        kw.setdefault("budget_s", self.budget_s)
        kw.setdefault("clock", self.clock)
        kw.setdefault("on_busy", self.on_busy)
        kw.setdefault("deadline", self.deadline if self.deadline is not None else self.clock() + self.budget_s)
        return super().new(**kw)

    def left_s(self) -> float:
        return self.budget_s if self.deadline is None else max(0.0, self.deadline - self.clock())

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if status_code == NOT_ACCEPTED:
            return True
        return super().is_retry(method, status_code, has_retry_after)

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                  error: Exception | None = None, _pool: Any = None, _stacktrace: Any = None) -> "BudgetRetry":
        if response is not None and response.headers.get(ACTIVATION_HEADER):
            # An activation answered (e.g. the login lockout's 429): its answer, not a busy namespace.
            raise MaxRetryError(_pool, url, ResponseError(f"{response.status} from the action"))  # type: ignore[arg-type]
        if response is not None and self.on_busy is not None:
            try:
                self.on_busy(response.status)  # a notification: its failure must not fail the call
            except Exception:  # noqa: BLE001
                pass
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def is_exhausted(self) -> bool:
        return super().is_exhausted() or (self.deadline is not None and self.clock() >= self.deadline)

    def get_retry_after(self, response: Any) -> float | None:
        after = super().get_retry_after(response)
        return None if after is None else min(after, self.left_s())

    def get_backoff_time(self) -> float:
        # urllib3 retries the first time at once; under a full namespace a
        # little jitter first spreads the clients that were refused together.
        backoff = super().get_backoff_time() or random.uniform(0, self.backoff_jitter)
        return min(backoff, self.left_s())


def policy(*, budget_s: float = 60.0, idempotent_post: bool = False, connect: int = 3,
           clock: Callable[[], float] = time.monotonic,
           on_busy: Callable[[int], None] | None = None, backoff_max_s: float = 8.0) -> BudgetRetry:
    """The retry policy: OpenWhisk's 429 always; its 503 and read errors for idempotent methods;
    ``budget_s`` in all, no wait longer than ``backoff_max_s`` (unless ``Retry-After`` says so)."""
    methods: Collection[str] = IDEMPOTENT | ({"POST"} if idempotent_post else set())
    return BudgetRetry(budget_s=budget_s, clock=clock, on_busy=on_busy, total=None, connect=connect, read=2, redirect=0,
                       status=None, other=0, allowed_methods=frozenset(methods),
                       status_forcelist=OVERLOADED, backoff_factor=min(0.25, backoff_max_s), backoff_max=backoff_max_s,
                       backoff_jitter=0.5, raise_on_status=False, raise_on_redirect=False,
                       respect_retry_after_header=True, retry_after_max=int(budget_s) + 1)


def session(*, budget_s: float = 60.0, idempotent_post: bool = False, pool: int = 10,
            on_busy: Callable[[int], None] | None = None, backoff_max_s: float = 8.0) -> requests.Session:
    """A ``requests.Session`` whose HTTP and HTTPS calls follow :func:`policy`.

    ``on_busy(status)`` is told of every busy answer retried (radcloud.work.jobwatch
    uses it to slow watchers down while shards wait for slots).
    """
    s = requests.Session()
    # An API client authenticates each call with its bearer token or key; a
    # cookie the UI's login sets must not ride along on later calls (it would
    # authenticate a call made "without credentials").
    s.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    adapter = HTTPAdapter(max_retries=policy(budget_s=budget_s, idempotent_post=idempotent_post, on_busy=on_busy,
                                             backoff_max_s=backoff_max_s),
                          pool_connections=pool, pool_maxsize=pool)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s
