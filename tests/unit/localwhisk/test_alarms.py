"""The built-in alarms feeds: lifecycle events as clients send them, the cron matcher, ticks on a fake clock."""

from __future__ import annotations

import calendar
import json

import pytest
from lw_fakes import ECHO, KEY, call, make_controller, put_action

from localwhisk.alarms import Cron, FeedError

NS = "/api/v1/namespaces/_"
FEED = "/api/v1/namespaces/whisk.system/actions/alarms"


def at(text: str) -> int:
    """'2026-01-05 08:00:00' (UTC) -> epoch seconds."""
    return calendar.timegm(tuple(int(x) for x in text.replace("-", " ").replace(":", " ").split()) + (0, 0, 0))


@pytest.fixture
def ctrl():
    c = make_controller()
    put_action(c, "echo", ECHO)
    call(c, "PUT", f"{NS}/triggers/tick", {"parameters": [{"key": "from", "value": "trigger"}]})
    assert call(c, "PUT", f"{NS}/rules/on-tick", {"trigger": "/_/tick", "action": "/_/echo"}).status == 200
    yield c
    c.close()


def lifecycle(ctrl, feed, event, **params):
    body = {"lifecycleEvent": event, "triggerName": "/_/tick", "authKey": KEY, **params}
    return call(ctrl, "POST", f"{FEED}/{feed}", body, query="blocking=true")


def fires(ctrl):
    return [a for a in call(ctrl, "GET", f"{NS}/activations", query="name=tick&docs=true").json()]


@pytest.mark.parametrize("expr, when, expected", [
    ("*/5 * * * *", "2026-01-05 08:10:00", True),
    ("*/5 * * * *", "2026-01-05 08:11:00", False),
    ("*/5 * * * *", "2026-01-05 08:10:30", False),      # 5 fields: second 0 only
    ("0 9-17 * * mon-fri", "2026-01-05 12:00:00", True),  # a Monday
    ("0 9-17 * * mon-fri", "2026-01-04 12:00:00", False),  # a Sunday
    ("0 0 1 * 0", "2026-02-01 00:00:00", True),         # day 1 OR Sunday (both restricted)
    ("0 0 1 * 0", "2026-01-04 00:00:00", True),
    ("0 0 1 * 0", "2026-01-05 00:00:00", False),
    ("*/10 * * * * *", "2026-01-05 08:11:20", True),    # 6 fields: seconds first
    ("30 8 * jan,mar 7", "2026-01-04 08:30:00", True),  # 7 is Sunday too
])
def test_cron_matches(expr, when, expected):
    assert Cron(expr).matches(at(when)) is expected


@pytest.mark.parametrize("expr", ["* * *", "61 * * * *", "*/0 * * * *", "a b c d e", "5-1 * * * *"])
def test_cron_refuses_bad_expressions_with_a_reason(expr):
    with pytest.raises(FeedError, match="cron"):
        Cron(expr)


def test_alarm_lifecycle_create_read_pause_unpause_update_delete(ctrl):
    created = lifecycle(ctrl, "alarm", "CREATE", cron="*/5 * * * *", trigger_payload={"why": "cron"})
    assert created.status == 200, created.body
    assert created.json()["response"]["result"]["status"] == "created"
    read = lifecycle(ctrl, "alarm", "READ").json()["response"]["result"]
    assert read["config"]["cron"] == "*/5 * * * *" and read["status"]["active"] is True
    ctrl.alarms._checked = at("2026-01-05 08:09:58")
    assert ctrl.alarms.tick(at("2026-01-05 08:10:01")) == 1
    [fired] = fires(ctrl)
    assert fired["response"]["result"] == {"from": "trigger", "why": "cron"}
    assert lifecycle(ctrl, "alarm", "PAUSE").status == 200
    assert ctrl.alarms.tick(at("2026-01-05 08:15:00")) == 0
    assert lifecycle(ctrl, "alarm", "READ").json()["response"]["result"]["status"]["active"] is False
    assert lifecycle(ctrl, "alarm", "UNPAUSE").status == 200
    assert lifecycle(ctrl, "alarm", "UPDATE", cron="0 9 * * *").status == 200
    assert ctrl.alarms.tick(at("2026-01-05 08:20:00")) == 0
    ctrl.alarms._checked = at("2026-01-05 08:59:59")
    assert ctrl.alarms.tick(at("2026-01-05 09:00:00")) == 1
    assert lifecycle(ctrl, "alarm", "DELETE").status == 200
    assert lifecycle(ctrl, "alarm", "READ").status == 502
    assert ctrl.alarms.tick(at("2026-01-06 09:00:00")) == 0


def test_interval_and_once_feeds(ctrl):
    start = at("2026-01-05 08:00:00")
    assert lifecycle(ctrl, "interval", "CREATE", minutes=2, startDate=start * 1000).status == 200
    ctrl.alarms._checked = start + 60
    assert ctrl.alarms.tick(start + 119) == 0
    assert ctrl.alarms.tick(start + 121) == 1
    assert lifecycle(ctrl, "once", "CREATE", date="2026-01-05T08:05:00Z").status == 200  # replaces it
    assert ctrl.alarms.tick(at("2026-01-05 08:05:00")) == 1
    assert ctrl.alarms.tick(at("2026-01-05 08:05:30")) == 0
    assert lifecycle(ctrl, "once", "READ").json()["response"]["result"]["status"]["active"] is False


@pytest.mark.parametrize("feed, params, message", [
    ("alarm", {"cron": "nope"}, "cron"),
    ("alarm", {}, "cron is required"),
    ("alarm", {"cron": "* * * * *", "timezone": "Mars/Olympus_Mons"}, "IANA name"),
    ("interval", {"minutes": 5, "timezone": "Europe/Paris"}, "absolute"),
    ("interval", {"minutes": 0}, "minutes"),
    ("once", {"date": "tomorrow"}, "date"),
    ("alarm", {"cron": "* * * * *", "authKey": "a:b"}, "authKey"),
    ("alarm", {"cron": "* * * * *", "triggerName": "/_/missing"}, "does not exist"),
    ("alarm", {"cron": "* * * * *", "lifecycleEvent": "START"}, "lifecycleEvent"),
])
def test_bad_feed_requests_are_application_errors_naming_the_cause(ctrl, feed, params, message):
    body = {"lifecycleEvent": "CREATE", "triggerName": "/_/tick", "authKey": KEY, **params}
    resp = call(ctrl, "POST", f"{FEED}/{feed}", body, query="blocking=true")
    assert resp.status == 502
    assert message in resp.json()["response"]["result"]["error"]
    assert KEY not in resp.body.decode()


def test_feed_package_and_actions_are_visible_to_every_namespace(ctrl):
    pkg = call(ctrl, "GET", "/api/v1/namespaces/whisk.system/packages/alarms").json()
    assert [f["name"] for f in pkg["feeds"]] == ["alarm", "interval", "once"]
    action = call(ctrl, "GET", f"{FEED}/alarm").json()
    assert {"key": "feed", "value": True} in action["annotations"]
    assert call(ctrl, "GET", "/api/v1/namespaces/whisk.system/actions/other").status == 403


def test_a_trigger_deleted_without_its_feed_stops_the_schedule(ctrl):
    assert lifecycle(ctrl, "alarm", "CREATE", cron="* * * * * *").status == 200
    call(ctrl, "DELETE", f"{NS}/triggers/tick")
    ctrl.alarms._checked = at("2026-01-05 08:00:00")
    ctrl.alarms.tick(at("2026-01-05 08:00:01"))
    status = lifecycle(ctrl, "alarm", "READ").json()["response"]["result"]["status"]
    assert status["active"] is False and "no longer exists" in status["reason"]
    assert json.dumps(ctrl.store.list_all_entities("alarm")).find(KEY) == -1  # the key is never stored


@pytest.mark.parametrize("when, expected", [
    ("2026-01-05 07:00:00", True),    # 08:00 in Paris in winter (UTC+1)
    ("2026-01-05 08:00:00", False),
    ("2026-07-06 06:00:00", True),    # 08:00 in Paris in summer (UTC+2)
    ("2026-07-06 07:00:00", False),
])
def test_cron_reads_its_time_zone_through_daylight_saving(when, expected):
    assert Cron("0 8 * * mon", "Europe/Paris").matches(at(when)) is expected


def test_a_repeated_local_hour_fires_once_and_a_skipped_one_not_at_all():
    # Paris, 2026-10-25: 02:30 local happens twice (00:30 and 01:30 UTC); 2026-03-29: 02:30 never happens.
    half_past_two = Cron("30 2 * * *", "Europe/Paris")
    assert [half_past_two.matches(at(t)) for t in ("2026-10-25 00:30:00", "2026-10-25 01:30:00")] == [True, False]
    assert not any(half_past_two.matches(at("2026-03-29 00:00:00") + m * 60) for m in range(0, 180))


def test_an_alarm_in_a_time_zone_fires_at_its_local_time_and_reads_back_its_zone(ctrl):
    assert lifecycle(ctrl, "alarm", "CREATE", cron="0 8 * * *", timezone="America/New_York").status == 200
    assert lifecycle(ctrl, "alarm", "READ").json()["response"]["result"]["config"]["timezone"] == "America/New_York"
    ctrl.alarms._checked = at("2026-01-05 07:59:59")
    assert ctrl.alarms.tick(at("2026-01-05 08:00:01")) == 0    # 08:00 UTC is 03:00 in New York
    ctrl.alarms._checked = at("2026-01-05 12:59:59")
    assert ctrl.alarms.tick(at("2026-01-05 13:00:01")) == 1    # 08:00 EST
