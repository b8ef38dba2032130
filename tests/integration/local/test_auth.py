"""radcloud.access.auth: tokens, rotation, the guard, direct invocations, login throttling."""

import json
import time

import jwt
import pytest

from radcloud.access import auth
from radcloud.api.action import Request, run
from radcloud.core.errors import ConfigError, Forbidden, TooManyRequests, Unauthorized
from radcloud.core.settings import Settings
from radcloud.access.users import UserStore
from fast_hasher import FAST_HASHER

S1 = "s1-" + "a" * 40
S2 = "s2-" + "b" * 40
PW = "correct horse battery"
PATIENT = "DOE^JANE-MRN-4711"  # must never appear in an error body


@pytest.fixture
def redis(redis_client):
    return redis_client


@pytest.fixture
def store(redis):
    s = UserStore(redis, FAST_HASHER)
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


def test_user_store_down_is_503_not_open(store, monkeypatch):
    monkeypatch.setenv("RADCLOUD_USER_STORE_RETRY_S", "0.3")  # the wait for a restart, from the environment
    token = auth.issue_token(settings(), store.get("root"))
    t0 = time.monotonic()
    result = run(web_args("redis://127.0.0.1:1/0", bearer(token)), _leaky_handler, roles=("admin",))
    assert result["error"]["statusCode"] == 503
    assert time.monotonic() - t0 < 5  # failed closed after the configured wait, not the default


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


class Clock:
    """An injected clock: tests move time, never sleep."""

    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def try_login(redis, clock, user, password, address, **policy):
    s = Settings.load({"token_secret": S1, "redis_url": "redis://127.0.0.1:1/0", **policy}, environ={})
    try:
        auth.login(redis, s, user, password, address, clock=clock)
        return 200
    except Unauthorized:
        return 401
    except TooManyRequests as exc:
        return 429, exc.details["retry_after_s"]


def test_an_attacker_hammering_from_elsewhere_never_locks_the_user_out(store, redis):
    """Finding 7: five wrong passwords locked the real user out for 15 minutes."""
    clock = Clock()
    answers = []
    for _ in range(600):  # one guess a second for a simulated 10 minutes (most refused unchecked)
        answers.append(try_login(redis, clock, "alice", "bad password!", "198.51.100.7"))
        clock.now += 1
    assert 10 <= answers.count(401) <= 20  # 3 free, then one per (capped) delay: slowed, not stopped
    assert try_login(redis, clock, "alice", "bad password!", "198.51.100.7")[0] == 429  # it is slowed
    assert try_login(redis, clock, "alice", PW, "10.0.0.1") == 200  # the right password from the right place


def test_delays_grow_per_user_and_address_and_stop_at_the_cap(store, redis):
    clock = Clock()
    for _ in range(3):  # login_free_failures
        assert try_login(redis, clock, "alice", "bad password!", "10.0.0.9") == 401
    waits = []
    for _ in range(8):
        answer = try_login(redis, clock, "alice", "bad password!", "10.0.0.9")
        assert answer[0] == 429  # refused before the password is checked
        waits.append(answer[1])
        clock.now += answer[1]
        assert try_login(redis, clock, "alice", "bad password!", "10.0.0.9") == 401
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]  # doubling from login_backoff_base_s to login_backoff_max_s
    # Even a user sharing the attacker's address waits at most the cap, then gets in.
    clock.now += 60
    assert try_login(redis, clock, "alice", PW, "10.0.0.9") == 200
    assert redis.exists("radcloud:loginfail:pair:alice|10.0.0.9") == 0  # a success clears the pair
    assert try_login(redis, clock, "alice", "bad password!", "10.0.0.9") == 401


def test_an_address_spraying_many_users_spends_its_budget_alone(store, redis):
    clock = Clock()
    for i in range(5):
        assert try_login(redis, clock, f"user{i}", "bad password!", "10.9.9.9", login_address_budget=5) == 401
    assert try_login(redis, clock, "alice", PW, "10.9.9.9", login_address_budget=5)[0] == 429
    assert try_login(redis, clock, "alice", PW, "10.9.9.8", login_address_budget=5) == 200
    assert 0 < redis.ttl("radcloud:loginfail:addr:10.9.9.9") <= 15 * 60


def test_parallel_guesses_cannot_all_pass_the_check(store, redis):
    throttle = auth.LoginThrottle(redis, auth.LoginPolicy(free_failures=3), clock=Clock())
    for _ in range(3):  # counted before the password is checked: a burst meets the counter
        throttle.attempt("alice", "10.0.0.5")
    with pytest.raises(TooManyRequests):
        throttle.attempt("alice", "10.0.0.5")


@pytest.mark.parametrize("chain, trusted, expected", [
    ("", "", "fallback"),
    ("10.1.2.3", "", "10.1.2.3"),
    ("6.6.6.6, 192.0.2.50", "", "192.0.2.50"),                      # no proxy trusted: the edge's peer
    ("10.1.2.3, 192.0.2.10", "192.0.2.10", "10.1.2.3"),             # the hospital proxy vouches
    ("6.6.6.6, 10.1.2.3, 192.0.2.10", "192.0.2.10", "10.1.2.3"),    # what the caller claimed is not believed
    ("10.1.2.3, 10.8.1.1, 10.8.2.2", "10.8.0.0/16", "10.1.2.3"),    # CIDRs, several hops
    ("192.0.2.10, 6.6.6.6", "192.0.2.10", "6.6.6.6"),               # a forged trusted hop changes nothing
    ("1.1.1.1, " * 100 + "6.6.6.6", "", "6.6.6.6"),                 # a long forged prefix cannot push it out
])
def test_client_address_believes_only_trusted_proxies(chain, trusted, expected):
    assert auth.client_address(chain, trusted, fallback="fallback") == expected


def test_a_malformed_trusted_proxy_is_a_config_error():
    with pytest.raises(ConfigError, match="trusted_proxies"):
        auth.client_address("1.2.3.4, 5.6.7.8", "not-an-ip")
