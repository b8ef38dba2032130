"""radcloud.access.audit and the login/audit actions: entries, paging, admin-only reading."""

import json

import pytest

from radcloud.access import audit, auth
from radcloud.api.action import Request
from radcloud.core.errors import BadRequest
from radcloud.core.settings import Settings
from radcloud.access.users import UserStore
from action_loader import load_action
from fast_hasher import FAST_HASHER

SECRET = "t" * 40
PW = "correct horse battery"


@pytest.fixture
def redis(redis_client):
    return redis_client


def web(redis_server, method="post", headers=None, **params):
    return {"__ow_method": method, "__ow_headers": {"x-forwarded-for": "10.1.2.3", **(headers or {})},
            "__ow_path": "", "token_secret": SECRET, "redis_url": redis_server, **params}


def test_record_holds_who_what_when_where(redis):
    request = Request(params={}, headers={"x-forwarded-for": "10.1.2.3, 172.16.0.1"}, web=True)
    entry_id = audit.record(redis, auth.Principal("alice", "clinician"), "query", request,
                            patient_ids=["4711", "4712"], study_uid="1.2.3", job_id=None)
    (got_id, fields), = redis.xrange(audit.STREAM)
    assert got_id == entry_id
    assert fields["who"] == "alice" and fields["role"] == "clinician"
    assert fields["action"] == "query" and fields["client"] == "10.1.2.3, 172.16.0.1"  # claim, then the edge's peer
    assert request.peer == "172.16.0.1"  # what failed logins are counted by: a caller cannot choose it
    assert Request(params={}, web=True).peer == "unknown"
    assert fields["when"].endswith("+00:00") and fields["outcome"] == "ok"
    assert json.loads(fields["what"]) == {"patient_ids": ["4711", "4712"], "study_uid": "1.2.3"}


def test_page_newest_first_with_cursor(redis):
    for i in range(7):
        audit.record(redis, auth.Principal("u", "clinician"), "query", None, study_uid=str(i))
    first = audit.page(redis, limit=3)
    assert [e["what"]["study_uid"] for e in first["entries"]] == ["6", "5", "4"]
    assert first["total"] == 7
    second = audit.page(redis, before=first["next"], limit=3)
    assert [e["what"]["study_uid"] for e in second["entries"]] == ["3", "2", "1"]
    last = audit.page(redis, before=second["next"], limit=3)
    assert [e["what"]["study_uid"] for e in last["entries"]] == ["0"]
    assert last["next"] is None


def test_page_exact_multiple_ends_with_no_next(redis):
    for i in range(4):
        audit.record(redis, None, "query", None, n=i)
    first = audit.page(redis, limit=2)
    second = audit.page(redis, before=first["next"], limit=2)
    assert len(second["entries"]) == 2 and second["next"] is None


def test_page_filters(redis):
    for i in range(6):
        audit.record(redis, auth.Principal("alice" if i % 2 else "bob", "clinician"),
                     "retrieve" if i % 3 == 0 else "query", None, n=i)
    assert [e["what"]["n"] for e in audit.page(redis, who="alice")["entries"]] == ["5", "3", "1"]
    assert [e["what"]["n"] for e in audit.page(redis, action="retrieve", who="bob")["entries"]] == ["0"]


@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"limit": 10_000}, {"before": "drop table"}])
def test_page_rejects_bad_input(redis, kwargs):
    with pytest.raises(BadRequest):
        audit.page(redis, **kwargs)


def test_login_action_sets_cookie_and_audits(redis, redis_server):
    UserStore(redis, FAST_HASHER).add("alice", "clinician", PW)
    login = load_action("login")
    result = login.main(web(redis_server, username="alice", password=PW))
    assert result["statusCode"] == 200
    token = result["body"]["token"]
    cookie = result["headers"]["Set-Cookie"]
    assert cookie.startswith(f"token={token};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Max-Age" not in cookie and "Expires" not in cookie   # a session cookie: gone with the browser
    bad = login.main(web(redis_server, username="alice", password="wrong wrong"))
    assert bad["error"]["statusCode"] == 401
    entries = audit.page(redis)["entries"]
    assert [(e["action"], e["outcome"]) for e in entries] == [("login", "unauthorized"), ("login", "ok")]
    assert PW not in json.dumps(entries)


def test_log_out_everywhere_ends_every_session_of_that_user(redis, redis_server):
    store = UserStore(redis, FAST_HASHER)
    store.add("alice", "clinician", PW)
    store.add("bob", "clinician", PW)
    login = load_action("login")
    first, second, bobs = (login.main(web(redis_server, username=u, password=PW))["body"]["token"]
                           for u in ("alice", "alice", "bob"))
    guard = auth.Guard(store, [SECRET])
    assert guard.identify("get", {"authorization": f"Bearer {first}"}).name == "alice"
    # the cookie alone cannot do it (a DELETE changes state), nor no credentials at all
    for headers in ({"cookie": f"token={second}"}, {}):
        refused = login.main(web(redis_server, method="delete", headers=headers, everywhere=True))
        assert refused["error"]["statusCode"] == 401
    assert guard.identify("get", {"authorization": f"Bearer {first}"}).name == "alice"
    done = login.main(web(redis_server, method="delete", headers={"authorization": f"Bearer {second}"},
                          everywhere=True))
    assert done["statusCode"] == 200 and "Max-Age=0" in done["headers"]["Set-Cookie"]
    for token in (first, second):   # both of alice's sessions are over, bob's is not
        with pytest.raises(auth.Unauthorized):
            guard.identify("get", {"authorization": f"Bearer {token}"})
    assert guard.identify("get", {"authorization": f"Bearer {bobs}"}).name == "bob"
    assert audit.page(redis)["entries"][0]["action"] == "logout-everywhere"


def test_login_action_throttles_with_429(redis, redis_server, monkeypatch):
    UserStore(redis, FAST_HASHER).add("alice", "clinician", PW)
    login = load_action("login")
    # Unbound settings come from the environment, never from a web request's args.
    monkeypatch.setenv("RADCLOUD_LOGIN_BACKOFF_BASE_S", "600")  # the 4th attempt must wait 600 s
    answers = [login.main(web(redis_server, username="alice", password="wrong wrong",
                              login_backoff_base_s=0))["error"]  # a caller cannot lower it
               for _ in range(4)]
    assert [a["statusCode"] for a in answers] == [401, 401, 401, 429]
    assert 0 < int(answers[-1]["headers"]["Retry-After"]) <= 600


def test_a_forged_x_forwarded_for_does_not_reset_the_address_throttle(redis, redis_server, monkeypatch):
    login = load_action("login")
    monkeypatch.setenv("RADCLOUD_LOGIN_ADDRESS_BUDGET", "5")
    codes = []
    for k in range(6):  # a new user name and a new claimed origin each time
        forged = {"x-forwarded-for": f"203.0.113.{k}, 10.1.2.3"}  # the edge's peer stays 10.1.2.3
        answer = login.main(web(redis_server, headers=forged, username=f"user{k}", password="wrong wrong"))
        codes.append(answer["error"]["statusCode"])
    assert codes[-1] == 429 and set(codes[:-1]) == {401}


def test_audit_action_is_admin_only(redis, redis_server):
    store = UserStore(redis, FAST_HASHER)
    store.add("alice", "clinician", PW)
    store.add("root", "admin", PW)
    audit.record(redis, auth.Principal("alice", "clinician"), "query", None, patient_ids=["4711"])
    action = load_action("audit")
    s = Settings.load({"token_secret": SECRET}, environ={})
    clinician = {"authorization": "Bearer " + auth.issue_token(s, store.get("alice"))}
    admin = {"authorization": "Bearer " + auth.issue_token(s, store.get("root"))}
    refused = action.main(web(redis_server, "get", clinician))
    assert refused["error"]["statusCode"] == 403 and "4711" not in json.dumps(refused)
    assert action.main(web(redis_server, "get"))["error"]["statusCode"] == 401
    ok = action.main(web(redis_server, "get", admin, limit="10"))
    assert ok["statusCode"] == 200
    assert ok["body"]["entries"][0]["what"] == {"patient_ids": ["4711"]}
    assert audit.page(redis, limit=1)["entries"][0]["action"] == "read_audit"


# -- the automatic entry of radcloud.api.action.run ----------------------------------------

def test_targets_of_a_query_include_what_it_answered():
    params = {"PatientID": ["RC1", "RC2"], "StudyDate": {"from": "2025-01-01"}, "level": "study"}
    result = {"items": [{"PatientID": "RC1", "StudyInstanceUID": "1.2.3"}, {"PatientID": "RC1", "StudyInstanceUID": "1.2.4"}]}
    got = audit.targets_of("query", params, "", result)
    assert got == {"patient_ids": ["RC1", "RC2"], "matched_patient_ids": ["RC1"],
                   "matched_study_uids": ["1.2.3", "1.2.4"], "matches": "2"}


def test_targets_of_results_and_dispatch():
    assert audit.targets_of("results", {"name": "a.png"}, "/j123/url", {})["job_id"] == ["j123"]
    got = audit.targets_of("dispatch", {"plugin": "dcm2png", "inputs": {"retrieve": "r1"}}, "", {"job_id": "j9"})
    assert got == {"plugin": ["dcm2png"], "job_id": ["j9"]}


def test_run_audits_patient_data_actions_only(redis, redis_server, monkeypatch):
    from radcloud.api.action import run

    store = UserStore(redis, FAST_HASHER)
    store.add("alice", "clinician", PW)
    s = Settings.load({"token_secret": SECRET}, environ={})
    headers = {"authorization": "Bearer " + auth.issue_token(s, store.get("alice"))}

    def handler(request, settings, principal):
        return {"items": [{"PatientID": "RC100002", "StudyInstanceUID": "1.2.3"}]}

    monkeypatch.setenv("__OW_ACTION_NAME", "/guest/radcloud/query")
    assert run(web(redis_server, "post", headers, PatientID="RC100002"), handler)["statusCode"] == 200
    (entry,) = audit.page(redis)["entries"]
    assert (entry["who"], entry["action"], entry["client"]) == ("alice", "query", "10.1.2.3")
    assert entry["what"]["matched_patient_ids"] == ["RC100002"]
    monkeypatch.setenv("__OW_ACTION_NAME", "/guest/radcloud/status")
    run(web(redis_server, "get", headers), handler)
    assert audit.page(redis)["total"] == 1


def test_web_sequence_steps_are_audited_as_the_caller(redis, redis_server, monkeypatch):
    """pull-and-run's retrieve and dispatch are direct invocations acting for the web caller."""
    from radcloud.api.action import run

    store = UserStore(redis, FAST_HASHER)
    store.add("carol", "clinician", PW)
    s = Settings.load({"token_secret": SECRET}, environ={})
    headers = {"authorization": "Bearer " + auth.issue_token(s, store.get("carol"))}
    monkeypatch.setenv("__OW_ACTION_NAME", "/guest/radcloud/query")
    first = run(web(redis_server, "post", headers, PatientID="RC7", run={"plugin": "noop"}),
                lambda r, st, p: {"items": [{"PatientID": "RC7", "StudyInstanceUID": "1.2.7"}], "run": r.params["run"]})
    # OpenWhisk hands the first answer (plus the bound settings) to the next component;
    # a caller's own _client/_principal inside the body are ignored.
    first["body"].update(_client="6.6.6.6", _principal={"name": "admin", "role": "admin"})
    monkeypatch.setenv("__OW_ACTION_NAME", "/guest/radcloud/retrieve")
    second = run({**first, "redis_url": redis_server},
                 lambda r, st, p: {"retrieve_id": "r7", "state": "running", "run": r.params["run"]})
    monkeypatch.setenv("__OW_ACTION_NAME", "/guest/radcloud/dispatch")
    third = run({**second, "redis_url": redis_server}, lambda r, st, p: {"job_id": "j7", "state": "staging"})
    assert third["statusCode"] == 200
    entries = {e["action"]: e for e in audit.page(redis)["entries"]}
    assert set(entries) == {"query", "retrieve", "dispatch"}
    assert {(e["who"], e["client"]) for e in entries.values()} == {("carol", "10.1.2.3")}
    assert entries["retrieve"]["what"] == {"patient_ids": ["RC7"], "study_uids": ["1.2.7"], "retrieve_id": ["r7"],
                                          "via": "sequence"}
    assert entries["dispatch"]["what"] == {"job_id": ["j7"], "plugin": ["noop"], "retrieve_id": ["r7"],
                                           "via": "sequence"}
    # Plain direct invocations (system work, or a trusted caller naming a user) stay unaudited.
    run({"redis_url": redis_server, "job_id": "j8"}, lambda r, st, p: {"job_id": "j8"})
    run({"redis_url": redis_server, "_principal": {"name": "carol", "role": "clinician"}}, lambda r, st, p: {})
    assert audit.page(redis)["total"] == 3


def test_unwritable_audit_withholds_the_data(redis, redis_server, monkeypatch):
    """If the trail cannot be written, the caller gets an error, not unaudited data."""
    from radcloud.api.action import run

    store = UserStore(redis, FAST_HASHER)
    store.add("alice", "clinician", PW)
    s = Settings.load({"token_secret": SECRET}, environ={})
    headers = {"authorization": "Bearer " + auth.issue_token(s, store.get("alice"))}
    redis.set(audit.STREAM, "not a stream")  # XADD now fails with WRONGTYPE
    monkeypatch.setenv("__OW_ACTION_NAME", "/guest/radcloud/query")
    result = run(web(redis_server, "post", headers), lambda r, st, p: {"items": [{"PatientID": "RC100002"}]})
    assert result["error"]["statusCode"] == 500 and "RC100002" not in json.dumps(result)


@pytest.mark.parametrize("action,method,path,params,audited", [
    ("retrieve", "post", "", {"StudyInstanceUID": "1.2.3"}, True),
    ("retrieve", "get", "", {"retrieve_id": "r1"}, False),
    ("results", "get", "/j1", {}, True),
    ("results", "get", "/j1/thumbnail", {"name": "a.png"}, False),
    ("status", "get", "/j1", {}, False),
    ("query", "post", "", {"PatientID": "RC1"}, True),
])
def test_polls_are_not_audited(redis, action, method, path, params, audited):
    request = Request(params=params, method=method, path=path, web=True)
    entry = audit.after_request(redis, action, auth.Principal("alice", "clinician"), request, {})
    assert (entry is not None) == audited


@pytest.mark.parametrize("args, status, code", [
    ({"redis_url": ""}, 500, "config"),                       # deployed with an empty package input
    ({}, 500, "config"),                                      # no settings: the default Redis does not answer
    ({"redis_url": "redis://127.0.0.1:1/0"}, 503, "unavailable"),  # configured, but down
])
def test_audit_without_its_settings_is_a_config_error_not_internal(args, status, code, monkeypatch):
    monkeypatch.delenv("RADCLOUD_REDIS_URL", raising=False)
    # The deployment's environment: how long to wait for Redis before giving up (default 5 s).
    monkeypatch.setenv("RADCLOUD_USER_STORE_RETRY_S", "0.3")
    error = load_action("audit").main(args)["error"]
    assert (error["statusCode"], error["code"]) == (status, code), error
    assert "redis_url" in error["message"]
