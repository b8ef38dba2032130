"""radcloud.core.openwhisk: how long an invoke waits out a busy namespace."""

from __future__ import annotations

from radcloud.core.openwhisk import BUSY_BUDGET_S, DEADLINE_MARGIN_S, INVOKE_BACKOFF_MAX_S, OpenWhisk, busy_budget_s
from radcloud.core.settings import Settings


def test_inside_an_action_the_budget_is_cut_to_what_its_deadline_leaves():
    now = 1_700_000_000.0
    env = {"__OW_DEADLINE": str(int((now + 60) * 1000))}
    assert busy_budget_s(env, now=lambda: now) == BUSY_BUDGET_S  # the container is held meanwhile
    soon = {"__OW_DEADLINE": str(int((now + 25) * 1000))}
    assert busy_budget_s(soon, now=lambda: now) == 25 - DEADLINE_MARGIN_S
    late = {"__OW_DEADLINE": str(int((now + 3) * 1000))}
    assert busy_budget_s(late, now=lambda: now) == 1.0  # never zero: one try and a short wait


def test_outside_an_action_the_default_budget():
    assert busy_budget_s({}) == BUSY_BUDGET_S


def test_the_client_carries_the_budget_into_its_retry_policy():
    settings = Settings.load(environ={"RADCLOUD_OW_API_HOST": "http://127.0.0.1:1", "RADCLOUD_OW_API_KEY": "u:k"})
    client = OpenWhisk.from_settings(settings, environ={})
    assert client.busy_budget_s == BUSY_BUDGET_S
    assert client.session.get_adapter("http://x").max_retries.budget_s == BUSY_BUDGET_S
    # a refused invoke is sent again within INVOKE_BACKOFF_MAX_S: the slot a shard waits for is taken at once
    assert client.session.get_adapter("http://x").max_retries.backoff_max == INVOKE_BACKOFF_MAX_S <= 0.5


def test_a_fire_refused_as_too_many_is_too_many_requests_naming_the_limit():
    import pytest

    from radcloud.core.errors import TooManyRequests

    class Refusing:
        status_code, text = 429, ""

        def json(self):
            return {"error": "Too many requests in the last minute (count: 61, allowed: 60)."}

    client = OpenWhisk("http://whisk.invalid", "u:p")
    client.session.post = lambda *a, **kw: Refusing()
    with pytest.raises(TooManyRequests, match="count: 61, allowed: 60.*triggersFiresPerminute"):
        client.fire("radcloud-study-stable", {})
