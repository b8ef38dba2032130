"""radcloud.auth: tokens, rotation, the guard, direct invocations, login throttling."""

import json

import jwt
import pytest

from radcloud import auth
from radcloud.action import Request, run
from radcloud.errors import ConfigError, Forbidden, TooManyRequests, Unauthorized
from radcloud.settings import Settings
from radcloud.users import UserStore

S1 = "s1-" + "a" * 40
S2 = "s2-" + "b" * 40
PW = "correct horse battery"
PATIENT = "DOE^JANE-MRN-4711"  # must never appear in an error body


@pytest.fixture
def redis(redis_client):
    return redis_client


@pytest.fixture
def store(redis):
    s = UserStore(redis)
    s.add("alice", "clinician", PW)
    s.add("root", "admin", PW)
    s.add("chris", "service")
    return s


def settings(secret=S1, redis_url="redis://127.0.0.1:1/0", ttl=3600):
    return Settings.load({"token_secret": secret, "redis_url": redis_url, "token_ttl_s": ttl}, environ={})


def guard(store, secret=S1, now=None):
    return auth.Guard(store, auth.signing_secrets(settings(secret)),
                      clock=(lambda: now) if now is not None else __import__("time").time)


def bearer(token):
    return {"authorization": f"Bearer {token}"}


# -- tokens ---------------------------------------------------------------------

def test_token_round_trip(store):
    token = auth.issue_token(settings(), store.get("alice"))
    assert guard(store).check("post", bearer(token), ("clinician",)) == auth.Principal("alice", "clinician")


def test_expired_token_is_401(store):
    token = auth.issue_token(settings(ttl=60), store.get("alice"), now=1_000_000)
    assert guard(store, now=1_000_059).identify("get", bearer(token)).name == "alice"
    with pytest.raises(Unauthorized, match="expired"):
        guard(store, now=1_000_061).identify("get", bearer(token))


def test_expired_token_real_clock(store):
    token = auth.issue_token(settings(ttl=10), store.get("alice"), now=__import__("time").time() - 60)
    with pytest.raises(Unauthorized, match="expired"):
        guard(store).identify("get", bearer(token))


def test_forged_token_is_401(store):
    forged = jwt.encode({"iss": "radcloud", "sub": "root", "role": "admin", "gen": 0,
                         "iat": 1, "exp": 4_000_000_000}, "x" * 40, algorithm="HS256")
    with pytest.raises(Unauthorized):
        guard(store).identify("get", bearer(forged))
    unsigned = jwt.encode({"iss": "radcloud", "sub": "root", "exp": 4_000_000_000, "iat": 1},
                          None, algorithm="none")
    with pytest.raises(Unauthorized):
        guard(store).identify("get", bearer(unsigned))
    with pytest.raises(Unauthorized):
        guard(store).identify("get", bearer("not.a.token"))


def test_rotation_first_signs_all_verify(store):
    old = auth.issue_token(settings(S1), store.get("alice"))
    rotated = settings(f"{S2},{S1}")
    new = auth.issue_token(rotated, store.get("alice"))
    assert jwt.decode(new, S2, algorithms=["HS256"], issuer="radcloud")["sub"] == "alice"
    g = guard(store, f"{S2},{S1}")
    assert g.identify("get", bearer(old)).name == "alice"
    assert g.identify("get", bearer(new)).name == "alice"
    with pytest.raises(Unauthorized):  # old secret dropped → old tokens die
        guard(store, S2).identify("get", bearer(old))


@pytest.mark.parametrize("secret", ["", "short", f"{S1},short"])
def test_missing_or_weak_secret_is_config_error(secret):
    with pytest.raises(ConfigError):
        auth.signing_secrets(settings(secret))


# -- the guard ------------------------------------------------------------------

def test_no_credentials_is_401(store):
    with pytest.raises(Unauthorized, match="log in"):
        guard(store).check("get", {}, ("clinician",))


def test_wrong_role_is_403(store):
    token = auth.issue_token(settings(), store.get("alice"))
    with pytest.raises(Forbidden):
        guard(store).check("get", bearer(token), ("admin",))


def test_cookie_only_for_safe_methods(store):
    token = auth.issue_token(settings(), store.get("alice"))
    headers = {"cookie": f"theme=dark; token={token}"}
    assert guard(store).identify("get", headers).name == "alice"
    with pytest.raises(Unauthorized):  # CSRF: state changes need the header
        guard(store).identify("post", headers)


def test_disable_and_password_change_revoke_tokens(store):
    token = auth.issue_token(settings(), store.get("alice"))
    store.set_password("alice", "another long secret")
    with pytest.raises(Unauthorized, match="no longer valid"):
        guard(store).identify("get", bearer(token))
    token = auth.issue_token(settings(), store.get("alice"))
    store.disable("alice")
    with pytest.raises(Unauthorized):
        guard(store).identify("get", bearer(token))


def test_role_comes_from_the_store_not_the_token(store, redis):
    token = auth.issue_token(settings(), store.get("alice"))
    redis.hset("radcloud:user:alice", "role", "researcher")
    assert guard(store).identify("get", bearer(token)).role == "researcher"


def test_service_api_key_header_and_bearer(store):
    key = store.create_api_key("chris")
    p = guard(store).check("post", {"x-api-key": key}, ("service",))
    assert p == auth.Principal("chris", "service", kind="service")
    assert guard(store).check("post", bearer(key), ("service",)).name == "chris"
    with pytest.raises(Unauthorized, match="API key"):
        guard(store).identify("post", {"x-api-key": key + "x"})
    with pytest.raises(Forbidden):
        guard(store).check("post", {"x-api-key": key}, ("admin",))


# -- through the action wrapper ---------------------------------------------------

def _leaky_handler(request, settings, principal):
    return {"patients": [PATIENT], "who": principal.name}


def web_args(redis_url, headers=None, method="get", secret=S1):
    return {"__ow_method": method, "__ow_headers": headers or {}, "__ow_path": "",
            "token_secret": secret, "redis_url": redis_url}


@pytest.mark.parametrize("case", ["none", "expired", "forged", "wrong_role"])
def test_web_refusals_carry_no_patient_data(store, redis_server, case):
    s = settings(redis_url=redis_server)
    headers = {
        "none": {},
        "expired": bearer(auth.issue_token(s, store.get("alice"), now=1000)),
        "forged": bearer(auth.issue_token(settings(S2), store.get("root"))),
        "wrong_role": bearer(auth.issue_token(s, store.get("alice"))),
    }[case]
    result = run(web_args(redis_server, headers), _leaky_handler, roles=("admin",))
    status = result["error"]["statusCode"]
    assert status == (403 if case == "wrong_role" else 401)
    assert PATIENT not in json.dumps(result)


def test_web_allowed_reaches_handler(store, redis_server):
    token = auth.issue_token(settings(redis_url=redis_server), store.get("root"))
    result = run(web_args(redis_server, bearer(token)), _leaky_handler, roles=("admin",))
    assert result["statusCode"] == 200 and result["body"]["who"] == "root"


def test_user_store_down_is_503_not_open(store):
    token = auth.issue_token(settings(), store.get("root"))
    result = run(web_args("redis://127.0.0.1:1/0", bearer(token)), _leaky_handler, roles=("admin",))
    assert result["error"]["statusCode"] == 503


def test_direct_invocation_is_system_or_passed_principal():
    req = Request(params={}, web=False)
    assert auth.authenticate(req, settings(), ("admin",), {}) == auth.Principal.system()
    passed = {"_principal": {"name": "alice", "role": "clinician"}}
    assert auth.authenticate(req, settings(), ("clinician",), passed).name == "alice"
    with pytest.raises(Forbidden):
        auth.authenticate(req, settings(), ("admin",), passed)
    with pytest.raises(Unauthorized):
        auth.authenticate(req, settings(), ("admin",), {"_principal": "root"})


def test_web_request_cannot_smuggle_principal(store, redis_server):
    args = web_args(redis_server)
    args["_principal"] = {"name": "root", "role": "admin"}
    result = run(args, _leaky_handler, roles=("admin",))
    assert result["error"]["statusCode"] == 401


# -- login and throttling -----------------------------------------------------------

def test_login_issues_a_working_token(store, redis):
    token, user = auth.login(redis, settings(), "alice", PW, "10.0.0.1")
    assert user.name == "alice"
    assert guard(store).identify("get", bearer(token)).role == "clinician"


def test_login_wrong_password_and_service_accounts_refused(store, redis):
    with pytest.raises(Unauthorized, match="wrong user name or password"):
        auth.login(redis, settings(), "alice", "nope nope nope", "10.0.0.1")
    with pytest.raises(Unauthorized, match="wrong user name or password"):
        auth.login(redis, settings(), "ghost", PW, "10.0.0.1")
    with pytest.raises(Unauthorized):
        auth.login(redis, settings(), "chris", "", "10.0.0.1")


def test_failed_logins_per_user_are_throttled(store, redis):
    for _ in range(auth.FAIL_LIMIT_USER):
        with pytest.raises(Unauthorized):
            auth.login(redis, settings(), "alice", "bad password!", "10.0.0.1")
    with pytest.raises(TooManyRequests) as info:  # even the right password waits
        auth.login(redis, settings(), "alice", PW, "10.0.0.2")
    assert 0 < info.value.details["retry_after_s"] <= auth.FAIL_WINDOW_S
    assert 0 < redis.ttl("radcloud:loginfail:user:alice") <= auth.FAIL_WINDOW_S
    # Another user from another address is unaffected.
    assert auth.login(redis, settings(), "root", PW, "10.0.0.3")[1].name == "root"


def test_failed_logins_per_address_are_throttled(redis):
    throttle = auth.LoginThrottle(redis, user_limit=100, client_limit=3)
    for i in range(3):
        throttle.check(f"user{i}", "10.9.9.9")
        throttle.failed(f"user{i}", "10.9.9.9")
    with pytest.raises(TooManyRequests):
        throttle.check("someone-else", "10.9.9.9")
    throttle.check("someone-else", "10.9.9.8")


def test_success_resets_the_user_counter(store, redis):
    for _ in range(auth.FAIL_LIMIT_USER - 1):
        with pytest.raises(Unauthorized):
            auth.login(redis, settings(), "alice", "bad password!", "10.0.0.1")
    auth.login(redis, settings(), "alice", PW, "10.0.0.1")
    assert redis.get("radcloud:loginfail:user:alice") is None
