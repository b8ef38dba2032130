"""radcloud.core.retry: which answers are retried for which methods, Retry-After, the time budget."""

from __future__ import annotations

import pytest
from urllib3 import HTTPResponse
from urllib3.exceptions import MaxRetryError, ProtocolError

from radcloud.core.retry import policy


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def answer(status: int, **headers: str) -> HTTPResponse:
    return HTTPResponse(body=b"", status=status, headers=headers, preload_content=False)


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
def test_429_is_retried_for_every_method_because_nothing_was_accepted(method):
    assert policy().is_retry(method, 429)


def test_overload_is_retried_only_for_idempotent_methods():
    assert policy().is_retry("GET", 503) and policy().is_retry("DELETE", 503)
    assert not policy().is_retry("POST", 503)
    assert policy(idempotent_post=True).is_retry("POST", 503)


@pytest.mark.parametrize("status", [200, 400, 401, 404, 409, 500, 502])
def test_answers_that_are_not_overload_are_not_retried(status):
    assert not policy().is_retry("GET", status)


def test_a_read_error_after_a_post_was_sent_is_not_retried():
    with pytest.raises(ProtocolError):
        policy().increment("POST", "/x", error=ProtocolError("reset"))
    assert policy().increment("GET", "/x", error=ProtocolError("reset")) is not None


def test_retry_after_is_honoured_but_cut_to_the_budget():
    clock = Clock()
    retry = policy(budget_s=10, clock=clock).increment("GET", "/x", response=answer(429, **{"Retry-After": "3"}))
    assert retry.get_retry_after(answer(429, **{"Retry-After": "3"})) == 3
    clock.t += 8
    assert retry.get_retry_after(answer(429, **{"Retry-After": "3"})) == pytest.approx(2)
    assert retry.get_retry_after(answer(429)) is None  # OpenWhisk sends none: backoff then


def test_backoff_is_jittered_grows_and_is_cut_to_the_budget():
    clock = Clock()
    retry = policy(budget_s=30, clock=clock)
    waits = []
    for _ in range(6):
        retry = retry.increment("POST", "/x", response=answer(429))
        waits.append(retry.get_backoff_time())
    assert 0 <= waits[0] <= 0.5 and all(0 < w <= 8.5 for w in waits[1:]) and waits[-1] > waits[1]
    clock.t += 29.9
    assert retry.get_backoff_time() <= 0.1 + 1e-9


def test_the_budget_bounds_retries_in_time_not_count():
    clock = Clock()
    retry = policy(budget_s=5, clock=clock)
    for _ in range(50):  # many quick 429s inside the budget are fine
        retry = retry.increment("POST", "/x", response=answer(429))
    clock.t += 5
    with pytest.raises(MaxRetryError):
        retry.increment("POST", "/x", response=answer(429))


def test_connection_refused_is_retried_a_few_times_for_any_method():
    from urllib3.exceptions import NewConnectionError

    retry = policy(connect=2)
    err = NewConnectionError(None, "refused")
    retry = retry.increment("POST", "/x", error=err).increment("POST", "/x", error=err)
    with pytest.raises(MaxRetryError):
        retry.increment("POST", "/x", error=err)


@pytest.mark.parametrize("method, status", [("POST", 429), ("GET", 503)])
def test_what_an_action_answered_itself_is_its_answer_not_a_busy_namespace(method, status):
    # OpenWhisk refuses before an activation exists: no activation id header.
    assert policy().increment(method, "/x", response=answer(status)) is not None
    with pytest.raises(MaxRetryError):  # the login lockout's 429, "job store unreachable" 503
        policy().increment(method, "/x", response=answer(status, **{"x-openwhisk-activation-id": "a" * 32}))


def test_every_busy_answer_retried_is_told_and_a_failing_listener_changes_nothing():
    seen = []
    retry = policy(on_busy=seen.append).increment("POST", "/x", response=answer(429))
    retry.increment("GET", "/x", response=answer(503))
    assert seen == [429, 503]

    def broken(status):
        raise RuntimeError("redis down")

    assert policy(on_busy=broken).increment("POST", "/x", response=answer(429)) is not None
