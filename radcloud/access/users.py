"""Who may use radcloud: user accounts and service API keys, kept in Redis.

A user has a role — ``clinician``, ``researcher``, ``admin`` or ``service``
(a machine account such as the ChRIS backend) — and either a password
(people) or API keys (service accounts).

* Passwords are hashed with argon2id (argon2-cffi defaults, ~0.1 s a hash):
  slow on purpose, because people pick guessable passwords.
* API keys are 256 random bits, shown once at creation, stored as SHA-256.
  A fast hash is enough for a secret nobody can guess, and it keeps the
  per-request check of a service call cheap (argon2 would add 0.1 s to
  every ChRIS request).
* Every user carries a token generation ``gen``. Tokens embed it;
  disabling a user or changing the password bumps it, so outstanding
  tokens stop working at once instead of living out their TTL.

Layout (all keys under ``radcloud:``)::

    radcloud:users             SET  of user names
    radcloud:user:<name>       HASH role, pw_hash, disabled, gen, created
    radcloud:apikey:<key_id>   HASH user, sha256, created
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import re
import secrets
import time
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from radcloud.core.errors import BadRequest, Conflict, NotFound

ROLES = ("clinician", "researcher", "admin", "service")
USERS_KEY = "radcloud:users"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
API_KEY_PREFIX = "rck_"
MIN_PASSWORD = 10

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so a login for an unknown
    name costs the same time as one for a known name (no user enumeration).
    Made on first use, not at import: an argon2 hash costs ~0.6 s of CPU, and
    every web action imports this module (a cold start of ``status`` paid it)."""
    return _hasher.hash("radcloud-no-such-user")


@dataclasses.dataclass(frozen=True)
class User:
    name: str
    role: str
    disabled: bool = False
    gen: int = 0
    created: float = 0.0
    has_password: bool = False

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "disabled": self.disabled,
                "created": self.created, "has_password": self.has_password}


def _user_key(name: str) -> str:
    return f"radcloud:user:{name}"


def _apikey_key(key_id: str) -> str:
    return f"radcloud:apikey:{key_id}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise BadRequest("user name must be 2-64 characters of a-z, 0-9, '.', '_' or '-', "
                         "starting with a letter or digit", field="name")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise BadRequest(f"role {role!r} is not one of {', '.join(ROLES)}", field="role")
    return role


def check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise BadRequest(f"password must have at least {MIN_PASSWORD} characters", field="password")
    return password


class UserStore:
    """User accounts in Redis. ``redis`` is a redis-py client (or a fake with
    the same hash/set calls); ``hasher`` an argon2 ``PasswordHasher`` (the
    library's defaults unless given: tests pass its cheapest parameters, since
    what they check is who may log in, not what a guess costs)."""

    def __init__(self, redis: Any, hasher: PasswordHasher | None = None) -> None:
        self.redis = redis
        self.hasher = hasher or _hasher

    # -- reading -----------------------------------------------------------
    def get(self, name: str) -> User | None:
        raw = self.redis.hgetall(_user_key(name))
        if not raw:
            return None
        data = {_text(k): _text(v) for k, v in raw.items()}
        return User(name=name, role=data.get("role", ""), disabled=data.get("disabled") == "1",
                    gen=int(data.get("gen", "0")), created=float(data.get("created", "0")),
                    has_password=bool(data.get("pw_hash")))

    def list(self) -> list[User]:
        names = sorted(_text(n) for n in self.redis.smembers(USERS_KEY))
        return [u for u in (self.get(n) for n in names) if u is not None]

    # -- writing -----------------------------------------------------------
    def add(self, name: str, role: str, password: str | None = None) -> User:
        """Create a user. People need a password; service accounts get API
        keys instead (:meth:`create_api_key`).

        Raises:
            BadRequest: malformed name/role/password. Conflict: name taken.
        """
        check_name(name)
        check_role(role)
        fields: dict[str, str] = {"role": role, "disabled": "0", "gen": "0",
                                  "created": f"{time.time():.3f}"}
        if password is not None:
            fields["pw_hash"] = self.hasher.hash(check_password(password))
        elif role != "service":
            raise BadRequest("a person's account needs a password", field="password")
        # HSETNX on "role" makes creation atomic: two admins adding the same
        # name at once cannot overwrite each other.
        if not self.redis.hsetnx(_user_key(name), "role", role):
            raise Conflict(f"user {name!r} already exists; pick another name", field="name")
        self.redis.hset(_user_key(name), mapping=fields)
        self.redis.sadd(USERS_KEY, name)
        user = self.get(name)
        assert user is not None
        return user

    def _require(self, name: str) -> User:
        user = self.get(name)
        if user is None:
            raise NotFound(f"no user named {name!r}; see `radcloud users list`", field="name")
        return user

    def set_password(self, name: str, password: str) -> None:
        self._require(name)
        self.redis.hset(_user_key(name), "pw_hash", self.hasher.hash(check_password(password)))
        self.redis.hincrby(_user_key(name), "gen", 1)

    def disable(self, name: str) -> None:
        """Lock the account out and revoke its tokens and API keys."""
        self._require(name)
        self.redis.hset(_user_key(name), "disabled", "1")
        self.redis.hincrby(_user_key(name), "gen", 1)

    def end_sessions(self, name: str) -> None:
        """"Log out everywhere": every token issued so far stops working."""
        self._require(name)
        self.redis.hincrby(_user_key(name), "gen", 1)

    def enable(self, name: str) -> None:
        self._require(name)
        self.redis.hset(_user_key(name), "disabled", "0")

    # -- credentials ---------------------------------------------------------
    def verify_password(self, name: str, password: str) -> User | None:
        """The user if the password matches and the account is enabled."""
        raw = self.redis.hget(_user_key(name), "pw_hash") if _NAME_RE.match(name or "") else None
        stored = _text(raw) if raw else _dummy_hash()
        try:
            self.hasher.verify(stored, password)  # the hash names its own parameters
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if not raw:
            return None
        user = self.get(name)
        if user is None or user.disabled:
            return None
        if self.hasher.check_needs_rehash(stored):
            self.redis.hset(_user_key(name), "pw_hash", self.hasher.hash(password))
        return user

    def create_api_key(self, name: str) -> str:
        """A new API key for a service account, returned once and stored hashed."""
        user = self._require(name)
        if user.role != "service":
            raise BadRequest(f"user {name!r} is not a service account; only those get API keys",
                             field="name")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        self.redis.hset(_apikey_key(key_id), mapping={
            "user": name, "sha256": hashlib.sha256(secret.encode()).hexdigest(),
            "created": f"{time.time():.3f}"})
        return f"{API_KEY_PREFIX}{key_id}_{secret}"

    def revoke_api_key(self, key: str) -> bool:
        key_id = _split_key(key)[0] if key.startswith(API_KEY_PREFIX) else key
        return bool(self.redis.delete(_apikey_key(key_id)))

    def verify_api_key(self, key: str) -> User | None:
        """The service user owning ``key`` if it is valid and enabled."""
        parts = _split_key(key)
        if parts is None:
            return None
        key_id, secret = parts
        raw = self.redis.hgetall(_apikey_key(key_id))
        if not raw:
            return None
        data = {_text(k): _text(v) for k, v in raw.items()}
        digest = hashlib.sha256(secret.encode()).hexdigest()
        if not hmac.compare_digest(digest, data.get("sha256", "")):
            return None
        user = self.get(data.get("user", ""))
        if user is None or user.disabled:
            return None
        return user


def _split_key(key: str) -> tuple[str, str] | None:
    if not key.startswith(API_KEY_PREFIX):
        return None
    key_id, sep, secret = key[len(API_KEY_PREFIX):].partition("_")
    if not sep or not key_id or not secret:
        return None
    return key_id, secret
