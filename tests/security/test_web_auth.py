"""Nobody gets in without valid credentials: every web entity of the manifest, every bad credential.

The web actions and web sequences are read from deploy/manifest.yaml, and
each must be classified below (guarded, or public with the reason), so a new
web action cannot slip through untested. For each guarded one, GET and POST
with no token, an expired, forged, ``alg: none``, garbage or revoked token,
a bogus API key, a cookie on POST (CSRF) and a wrong role answer 401/403
with a JSON error naming what to do — and no patient data in the body.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest
import yaml

from rcworld import PASSWORD, RcWorld, new_secret

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
PATIENT = ("Guardtest^Hermione", "GRD770011", "19510606")

# Public on purpose — and exactly these:
#   login: it is where a token comes from (rate-limited, audited).
#   ui:    the login page and static assets (no data in them); every other
#          page redirects to the login page without a valid cookie/token.
PUBLIC = {"login", "ui"}
# Guarded by radcloud's token/API-key check (radcloud.api.action.run). A pfcon
# action has its own JWT (pfcon's API); it is held to the same 401s here.
GUARDED = {"query", "retrieve", "dispatch", "status", "results", "audit", "pull-and-run", "pfcon", "viewer", "routing",
           "shard_report"}
# Actions that refuse some roles, and a role each refuses.
REFUSES = {"audit": ("clinician", "researcher"), "routing": ("clinician", "researcher")}


def web_entities() -> dict[str, str]:
    """name -> 'action' | 'sequence' for every web-exported entity in the manifest."""
    pkg = yaml.safe_load((ROOT / "deploy" / "manifest.yaml").read_text())["project"]["packages"]["radcloud"]
    found = {}
    for kind, key in (("action", "actions"), ("sequence", "sequences")):
        for name, spec in (pkg.get(key) or {}).items():
            if str(spec.get("web", spec.get("web-export", False))).lower() in ("true", "yes", "raw"):
                found[name] = kind
    return found


def test_every_web_entity_is_classified():
    found = set(web_entities())
    assert found, "no web actions found in the manifest"
    unclassified = found - PUBLIC - GUARDED
    assert not unclassified, f"new web entities need an entry in PUBLIC or GUARDED: {sorted(unclassified)}"
    assert PUBLIC <= found  # a public action that disappeared must leave this list too
    assert GUARDED <= found, f"guarded entities gone from the manifest: {sorted(GUARDED - found)}"


def _forged(world: RcWorld, role: str = "admin", **claims) -> str:
    now = int(time.time())
    body = {"iss": "radcloud", "sub": role, "role": role, "gen": 0, "iat": now, "exp": now + 3600, **claims}
    return jwt.encode(body, new_secret(), algorithm="HS256")


def _alg_none(role: str = "admin") -> str:
    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    now = int(time.time())
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'iss': 'radcloud', 'sub': role, 'role': role, 'gen': 0, 'iat': now, 'exp': now + 3600})}."


def _expired(world: RcWorld) -> str:
    from radcloud.access.auth import issue_token
    from radcloud.access.users import UserStore

    user = UserStore(world.redis).get("admin")
    return issue_token(world.settings, user, now=time.time() - 10 * 24 * 3600)


def _bad_credentials(world: RcWorld) -> dict[str, dict[str, str]]:
    """case -> headers. Every one must be refused with 401."""
    real = jwt.decode(world.tokens["admin"], options={"verify_signature": False})
    resigned = jwt.encode({**real, "role": "admin", "sub": "clinician"}, new_secret(), algorithm="HS256")
    return {
        "none": {},
        "expired": {"Authorization": f"Bearer {_expired(world)}"},
        "forged": {"Authorization": f"Bearer {_forged(world)}"},
        "resigned-claims": {"Authorization": f"Bearer {resigned}"},
        "alg-none": {"Authorization": f"Bearer {_alg_none()}"},
        "garbage": {"Authorization": "Bearer not.a.token"},
        "basic-scheme": {"Authorization": "Basic YWRtaW46YWRtaW4="},
        "bogus-api-key": {"X-Api-Key": "rck_deadbeef_0123456789abcdef"},
        "bogus-api-key-bearer": {"Authorization": "Bearer rck_nothing"},
    }


def _assert_refused(status, body, want, where, seeded=PATIENT):
    assert status == want, f"{where}: {status} {body}"
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"{where}: {body}"
    assert body["error"].get("code") in ("unauthorized", "forbidden") and body["error"].get("message"), where
    text = json.dumps(body)
    for token in (*seeded[0].split("^"), seeded[1], seeded[2]):
        assert token.lower() not in text.lower(), f"{where}: patient data in the refusal"


@pytest.fixture(scope="module")
def seeded(world):
    return world.seed_patient(*PATIENT, [2])


@pytest.mark.parametrize("name", sorted(GUARDED))
def test_guarded_entity_refuses_bad_credentials(world, seeded, name):
    assert name in web_entities(), f"{name} is not in the manifest: update GUARDED"
    study, _series = seeded
    cases = _bad_credentials(world)
    for case, headers in cases.items():
        for method in ("GET", "POST"):
            body = {"PatientID": PATIENT[1], "StudyInstanceUID": study} if method == "POST" else None
            status, _h, answer = world.web(name, method=method, query=f"PatientID={PATIENT[1]}",
                                           body=body, headers=headers)
            _assert_refused(status, answer, 401, f"{name} {method} {case}")


def test_revoked_and_disabled_tokens_are_refused_at_once(world):
    from radcloud.access.auth import issue_token
    from fast_hasher import FAST_HASHER
    from radcloud.access.users import UserStore

    store = UserStore(world.redis, FAST_HASHER)
    user = store.get("temp-user") or store.add("temp-user", "clinician", "temporary password 1")
    token = issue_token(world.settings, user)
    assert world.web("status", token=token)[0] == 200
    store.set_password("temp-user", "temporary password 2")  # bumps the generation: old tokens die
    _assert_refused(*[world.web("status", token=token)[i] for i in (0, 2)], 401, "status after password change")
    token = issue_token(world.settings, store.get("temp-user"))
    store.disable("temp-user")
    _assert_refused(*[world.web("status", token=token)[i] for i in (0, 2)], 401, "status for a disabled user")


def test_cookie_token_is_not_enough_to_change_state(world):
    """CSRF: the token cookie works for GET pages, never for POST."""
    cookie = {"Cookie": f"token={world.tokens['admin']}"}
    status, _h, body = world.web("dispatch", method="POST", body={"plugin": "noop"}, headers=cookie)
    _assert_refused(status, body, 401, "dispatch POST with cookie only")
    assert world.web("status", headers=cookie)[0] == 200


@pytest.mark.parametrize("name", sorted(REFUSES))
def test_wrong_role_is_403(world, name):
    for role in REFUSES[name]:
        for method in ("GET", "POST"):
            status, _h, body = world.web(name, method=method, body={} if method == "POST" else None,
                                         token=world.tokens[role])
            _assert_refused(status, body, 403, f"{name} {method} as {role}")
            assert role in body["error"]["message"]  # names the role and what is needed
    assert world.web(name, token=world.tokens["admin"])[0] == 200


def test_someone_elses_job_does_not_exist_for_you(world, seeded):
    study, _ = seeded
    rid = world.stage(study)
    status, _h, job = world.web("dispatch", method="POST", token=world.tokens["clinician"],
                                body={"plugin": "noop", "inputs": {"retrieve": rid}, "options": {"force": True}})
    assert status == 200, job
    job_id = job["job_id"]
    for action in ("status", "results"):
        status, _h, body = world.web(action, path=f"/{job_id}", token=world.tokens["researcher"])
        assert status == 404 and body["error"]["code"] == "not_found", (action, status, body)
    assert world.web("status", path=f"/{job_id}", token=world.tokens["clinician"])[0] == 200
    assert world.web("status", path=f"/{job_id}", token=world.tokens["admin"])[0] == 200
    listed = world.web("status", token=world.tokens["researcher"])[2]["jobs"]
    assert job_id not in {j["id"] for j in listed}
    # cancelling someone else's job is refused the same way
    status, _h, body = world.web("status", method="POST", path=f"/{job_id}/cancel", token=world.tokens["researcher"])
    assert status == 404, body


def test_someone_elses_results_are_no_input_for_you_and_nothing_stays_stuck(world, seeded):
    """Finding 5: another user's results/<job>/ was accepted (200, a job stuck in
    ``staging`` with 0 shards, even after cancel) while an unknown job id answered 404."""
    from radcloud.work.jobs import JobSpec, JobStore
    from radcloud.work.jobservices import jobs_redis

    study, _ = seeded
    rid = world.stage(study)
    status, _h, job = world.web("dispatch", method="POST", token=world.tokens["clinician"],
                                body={"plugin": "noop", "inputs": {"retrieve": rid}, "options": {"force": True}})
    assert status == 200, job
    theirs = world.wait_final(job["job_id"])["id"]
    before = {j["id"] for j in world.web("status", token=world.tokens["researcher"])[2]["jobs"]}
    answers = []
    for job_id in (theirs, "j" + "0" * 23):  # exists but is the clinician's; does not exist
        status, _h, body = world.web("dispatch", method="POST", token=world.tokens["researcher"],
                                     body={"plugin": "noop", "inputs": {"prefixes": [f"results/{job_id}/"]}})
        answers.append((status, json.dumps(body).replace(job_id, "<job>")))
    assert answers[0] == answers[1] and answers[0][0] == 404, answers  # no existence leak
    after = {j["id"] for j in world.web("status", token=world.tokens["researcher"])[2]["jobs"]}
    assert after == before  # no job was created
    # An admin passes the ownership check, and results (outputs, no instances) fail at once with a reason.
    status, _h, body = world.web("dispatch", method="POST", token=world.tokens["admin"],
                                 body={"plugin": "noop", "inputs": {"prefixes": [f"results/{theirs}/"]}})
    assert status == 400 and "nothing to run" in body["error"]["message"], body
    # A job left with 0 shards (as the old dispatch made them) is ended by a cancel.
    jobs = JobStore(jobs_redis(world.settings))
    stuck = jobs.create(JobSpec(plugin="noop", plugin_version="1", owner="researcher", params={}, shards=[]))
    jobs.transition(stuck, "staging")
    status, _h, body = world.web("status", method="POST", path=f"/{stuck}/cancel", token=world.tokens["researcher"])
    assert status == 200 and body["state"] == "cancelled", body


def test_ui_public_surface_is_exactly_login_and_static(world):
    status, headers, page = world.web("ui", path="/login")
    assert status == 200 and "text/html" in headers.get("content-type", headers.get("Content-Type", ""))
    status, _h, css = world.web("ui", path="/static/app.css")
    assert status == 200 and css
    forged = {"Cookie": f"token={_forged(world)}"}
    from radcloud.ui.pages import PAGES

    for page_name in [p for p in PAGES if p != "login"] + ["plugins.json"]:
        for headers in ({}, forged):
            status, h, _body = world.web("ui", path=f"/{page_name}", headers=headers)
            location = h.get("location", h.get("Location", ""))
            assert status == 302 and "/login" in location, (page_name, status, location)
    status, _h, _body = world.web("ui", path="/search", headers={"Cookie": f"token={world.tokens['clinician']}"})
    assert status == 200
    assert world.web("ui", method="POST", path="/search")[0] == 405


def test_login_is_rate_limited_and_never_says_which_part_was_wrong(world):
    answers = set()
    for i in range(3):  # login_free_failures: answered, not delayed
        status, _h, body = world.web("login", method="POST", body={"username": "researcher", "password": f"wrong {i}"},
                                     headers={"X-Forwarded-For": "203.0.113.9"})
        answers.add((status, json.dumps(body)))
    # As after a long attack from this address (the edge's peer; the claimed 203.0.113.9 is not believed):
    pair = "radcloud:loginfail:pair:researcher|127.0.0.1"
    world.redis.hset(pair, mapping={"n": 40, "last": time.time()})
    status, headers, body = world.web("login", method="POST", body={"username": "researcher", "password": PASSWORD},
                                      headers={"X-Forwarded-For": "203.0.113.9"})
    answers.add((status, json.dumps(body)))
    statuses = [a[0] for a in answers]
    assert 401 in statuses and 429 in statuses, answers
    retry_after = {k.lower(): v for k, v in headers.items()}.get("retry-after", "0")
    assert 0 < int(retry_after) <= 60, headers  # slowed, capped: never a 15-minute lockout
    status, _h, nobody = world.web("login", method="POST", body={"username": "nobody-here", "password": "whatever12"},
                                   headers={"X-Forwarded-For": "203.0.113.10"})
    wrong = [json.loads(b) for s, b in answers if s == 401][0]
    assert status == 401 and nobody == wrong  # unknown user and wrong password: same answer
    world.redis.delete(pair, "radcloud:loginfail:addr:127.0.0.1")
