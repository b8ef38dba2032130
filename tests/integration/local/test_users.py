"""radcloud.access.users: accounts, argon2 passwords, hashed service API keys."""

import pytest

from radcloud.core.errors import BadRequest, Conflict, NotFound
from radcloud.access.users import UserStore
from fast_hasher import FAST_HASHER  # the two tests below keep argon2's defaults, as deployed



@pytest.fixture
def redis(redis_client):
    """The shared unit-test Redis (tests/integration/local/conftest.py), flushed per test."""
    return redis_client

PW = "correct horse battery"


def test_add_and_verify_password(redis):
    store = UserStore(redis)
    user = store.add("alice", "clinician", PW)
    assert (user.name, user.role, user.disabled, user.has_password) == ("alice", "clinician", False, True)
    assert store.verify_password("alice", PW).name == "alice"
    assert store.verify_password("alice", "wrong password!") is None
    assert store.verify_password("nobody", PW) is None


def test_password_is_stored_as_argon2id_not_plaintext(redis):
    UserStore(redis).add("alice", "clinician", PW)
    stored = redis.hget("radcloud:user:alice", "pw_hash")
    assert stored.startswith("$argon2id$")
    assert PW not in stored


def test_duplicate_name_conflicts(redis):
    store = UserStore(redis, FAST_HASHER)
    store.add("alice", "clinician", PW)
    with pytest.raises(Conflict):
        store.add("alice", "admin", PW)
    assert store.get("alice").role == "clinician"


@pytest.mark.parametrize("name,role,pw", [
    ("A", "clinician", PW), ("bad name", "clinician", PW), ("bob", "root", PW),
    ("bob", "clinician", "short"), ("bob", "clinician", None)])
def test_add_rejects_bad_input(redis, name, role, pw):
    with pytest.raises(BadRequest):
        UserStore(redis, FAST_HASHER).add(name, role, pw)
    assert UserStore(redis, FAST_HASHER).list() == []


def test_list_is_sorted_and_public_view_has_no_hash(redis):
    store = UserStore(redis, FAST_HASHER)
    store.add("zed", "researcher", PW)
    store.add("amy", "admin", PW)
    users = store.list()
    assert [u.name for u in users] == ["amy", "zed"]
    assert "pw_hash" not in users[0].public() and users[0].public()["role"] == "admin"


def test_disable_blocks_login_and_bumps_generation(redis):
    store = UserStore(redis, FAST_HASHER)
    store.add("alice", "clinician", PW)
    store.disable("alice")
    user = store.get("alice")
    assert user.disabled and user.gen == 1
    assert store.verify_password("alice", PW) is None
    store.enable("alice")
    assert store.verify_password("alice", PW) is not None


def test_set_password_replaces_old_one(redis):
    store = UserStore(redis, FAST_HASHER)
    store.add("alice", "clinician", PW)
    store.set_password("alice", "a brand new secret")
    assert store.verify_password("alice", PW) is None
    assert store.verify_password("alice", "a brand new secret") is not None
    assert store.get("alice").gen == 1
    with pytest.raises(NotFound):
        store.set_password("ghost", "a brand new secret")


def test_service_api_key_is_hashed_and_verifies(redis):
    store = UserStore(redis, FAST_HASHER)
    store.add("chris", "service")
    key = store.create_api_key("chris")
    assert key.startswith("rck_")
    dumped = "".join(v for k in redis.keys("radcloud:apikey:*") for v in redis.hgetall(k).values())
    assert key.split("_", 2)[2] not in dumped
    assert store.verify_api_key(key).name == "chris"
    assert store.verify_api_key(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.verify_api_key("rck_nope_nope") is None
    store.disable("chris")
    assert store.verify_api_key(key) is None


def test_revoked_api_key_stops_working(redis):
    store = UserStore(redis, FAST_HASHER)
    store.add("chris", "service")
    key = store.create_api_key("chris")
    assert store.revoke_api_key(key)
    assert store.verify_api_key(key) is None


def test_people_do_not_get_api_keys_and_services_have_no_password(redis):
    store = UserStore(redis, FAST_HASHER)
    store.add("alice", "clinician", PW)
    with pytest.raises(BadRequest):
        store.create_api_key("alice")
    store.add("chris", "service")
    assert store.verify_password("chris", "") is None
