"""The one guard in front of every radcloud web action, and the login.

How a caller proves who it is:

* **People** log in (``functions/login``) and get a signed, expiring token
  (JWT, HS256). They send it as ``Authorization: Bearer <token>``; the UI's
  own pages may also send it as the ``token`` cookie, but only on GET/HEAD —
  anything that changes state needs the header, which another site cannot
  make a browser send (CSRF).
* **Service accounts** (the ChRIS backend) send an API key as ``X-Api-Key``
  or as ``Authorization: Bearer rck_...``.
* **Direct invocations** (no ``__ow_method``: the REST API, sequences, one
  action invoking another) were already authenticated by OpenWhisk with the
  namespace key, and whoever holds that key controls every action anyway.
  They act as the ``_principal`` argument when present (an action passes
  the web caller on with :meth:`Principal.to_param`), else as ``system``.

Tokens carry the user's generation counter and are checked against the
user store on every request, so disabling a user or changing a password
revokes tokens at once. ``token_secret`` may hold several comma-separated
secrets: the first signs, all verify — rotate by prepending a new one and
dropping the old after ``token_ttl_s``.

Failures are :class:`~radcloud.errors.Unauthorized` (401: missing, expired,
forged) or :class:`~radcloud.errors.Forbidden` (403: wrong role); their
messages never name a patient, and say what to do.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets as _secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from radcloud import redisclient
from radcloud.errors import ConfigError, Forbidden, TooManyRequests, Unauthorized, Unavailable
from radcloud.settings import Settings
from radcloud.users import API_KEY_PREFIX, User, UserStore

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
ISSUER = "radcloud"
MIN_SECRET = 32
SYSTEM_ROLE = "system"
COOKIE = "token"
# Failed logins: at most this many per window, per user and per address.
FAIL_WINDOW_S = 15 * 60
FAIL_LIMIT_USER = 5
FAIL_LIMIT_CLIENT = 20


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling. ``kind`` is ``user``, ``service`` or ``system``."""

    name: str
    role: str
    kind: str = "user"

    def allowed(self, roles: tuple[str, ...]) -> bool:
        return self.role == SYSTEM_ROLE or self.role in roles

    def to_param(self) -> dict[str, str]:
        """The ``_principal`` argument for a direct invocation on this caller's behalf."""
        return {"name": self.name, "role": self.role, "kind": self.kind}

    @classmethod
    def system(cls) -> "Principal":
        return cls(name="system", role=SYSTEM_ROLE, kind="system")


def signing_secrets(settings: Settings) -> list[str]:
    """The token secrets, first one signing. Raises ConfigError if unusable."""
    found = [s.strip() for s in settings.token_secret.reveal().split(",") if s.strip()]
    if not found:
        raise ConfigError("missing setting: token_secret (or RADCLOUD_TOKEN_SECRET); "
                          "web actions refuse to run without it")
    if any(len(s) < MIN_SECRET for s in found):
        raise ConfigError(f"token_secret: every secret needs at least {MIN_SECRET} characters "
                          "(generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return found


def issue_token(settings: Settings, user: User, *, now: float | None = None) -> str:
    """A signed token for ``user`` valid for ``settings.token_ttl_s``."""
    now = time.time() if now is None else now
    claims = {"iss": ISSUER, "sub": user.name, "role": user.role, "gen": user.gen,
              "iat": int(now), "exp": int(now) + settings.token_ttl_s,
              "jti": _secrets.token_hex(8)}
    return jwt.encode(claims, signing_secrets(settings)[0], algorithm=ALGORITHM)


def decode_token(token: str, secrets: list[str], *, now: float | None = None) -> dict[str, Any]:
    """The claims of a token signed by any of ``secrets``.

    Raises:
        Unauthorized: expired, forged or malformed.
    """
    options = {"require": ["exp", "iat", "sub", "iss"]}
    for secret in secrets:
        try:
            if now is None:
                return jwt.decode(token, secret, algorithms=[ALGORITHM], issuer=ISSUER, options=options)
            # A fixed clock (tests): let PyJWT skip exp, then check it here.
            claims = jwt.decode(token, secret, algorithms=[ALGORITHM], issuer=ISSUER,
                                options={**options, "verify_exp": False})
            if claims["exp"] <= now:
                raise jwt.ExpiredSignatureError
            return claims
        except jwt.ExpiredSignatureError:
            raise Unauthorized("your session has expired; log in again") from None
        except jwt.InvalidSignatureError:
            continue  # maybe signed with an older, still-valid secret
        except jwt.InvalidTokenError:
            break
    raise Unauthorized("the token is not valid; log in again")


class Guard:
    """Authenticates one request against a user store. Socket-free: the
    store is passed in, the clock too."""

    def __init__(self, store: UserStore, secrets: list[str],
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.secrets = secrets
        self.clock = clock

    def check(self, method: str, headers: Mapping[str, str], roles: tuple[str, ...]) -> Principal:
        principal = self.identify(method, headers)
        if not principal.allowed(roles):
            raise Forbidden(f"the role {principal.role!r} may not do this; "
                            f"it needs one of: {', '.join(roles)}")
        return principal

    def identify(self, method: str, headers: Mapping[str, str]) -> Principal:
        api_key = headers.get("x-api-key", "").strip()
        bearer = _bearer(headers.get("authorization", ""))
        if not api_key and bearer.startswith(API_KEY_PREFIX):
            api_key, bearer = bearer, ""
        if api_key:
            user = self.store.verify_api_key(api_key)
            if user is None:
                raise Unauthorized("the API key is not valid; ask an admin for a new one")
            return Principal(user.name, user.role, kind="service")
        token = bearer or (_cookie(headers.get("cookie", ""), COOKIE)
                           if method in ("get", "head") else "")
        if not token:
            raise Unauthorized("log in first: send 'Authorization: Bearer <token>' "
                               "(get one from the login action)")
        claims = decode_token(token, self.secrets, now=self.clock())
        user = self.store.get(str(claims["sub"]))
        # One answer for unknown, disabled and revoked: no account probing.
        if user is None or user.disabled or user.gen != claims.get("gen"):
            raise Unauthorized("the token is no longer valid; log in again")
        return Principal(user.name, user.role, kind="user")


def _bearer(value: str) -> str:
    scheme, _, credential = value.strip().partition(" ")
    return credential.strip() if scheme.lower() == "bearer" else ""


def _cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip()
    return ""


def redis_client(settings: Settings) -> Any:
    """The user store's and audit trail's Redis client (shared, see :mod:`radcloud.redisclient`)."""
    return redisclient.client(settings, redisclient.USER_STORE)


def authenticate(request: Any, settings: Settings, roles: tuple[str, ...],
                 args: Mapping[str, Any]) -> Principal:
    """The guard :func:`radcloud.action.run` calls for every request.

    Raises:
        Unauthorized, Forbidden: see the module docstring.
        Unavailable: the user store (Redis) cannot be reached — fail closed.
    """
    if not request.web:
        return _direct_principal(args, roles)
    secrets = signing_secrets(settings)
    guard = Guard(UserStore(redis_client(settings)), secrets)
    try:
        return guard.check(request.method, request.headers, roles)
    except _redis_errors() as exc:
        log.warning("user store unreachable: %s", type(exc).__name__)
        raise Unavailable("cannot check your credentials right now (user store down); "
                          "retry in a minute") from None


def _direct_principal(args: Mapping[str, Any], roles: tuple[str, ...]) -> Principal:
    raw = args.get("_principal")
    if not raw:
        return Principal.system()
    if not isinstance(raw, Mapping) or not raw.get("name") or not raw.get("role"):
        raise Unauthorized("_principal must be an object with 'name' and 'role'")
    principal = Principal(str(raw["name"]), str(raw["role"]), str(raw.get("kind", "user")))
    if not principal.allowed(roles):
        raise Forbidden(f"the role {principal.role!r} may not do this; "
                        f"it needs one of: {', '.join(roles)}")
    return principal


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


# -- login ---------------------------------------------------------------------

class LoginThrottle:
    """Counts failed logins per user name and per client address in Redis
    (INCR + EXPIRE), refusing with 429 past the limit until the window ends."""

    def __init__(self, redis: Any, window_s: int = FAIL_WINDOW_S,
                 user_limit: int = FAIL_LIMIT_USER, client_limit: int = FAIL_LIMIT_CLIENT) -> None:
        self.redis = redis
        self.window_s = window_s
        self.limits = {"user": user_limit, "client": client_limit}

    def _keys(self, username: str, client: str) -> dict[str, str]:
        return {"user": f"radcloud:loginfail:user:{username.lower()}",
                "client": f"radcloud:loginfail:client:{client}"}

    def check(self, username: str, client: str) -> None:
        for kind, key in self._keys(username, client).items():
            count = int(self.redis.get(key) or 0)
            if count >= self.limits[kind]:
                ttl = max(int(self.redis.ttl(key) or 0), 1)
                raise TooManyRequests(f"too many failed logins; try again in {ttl} s",
                                      retry_after_s=ttl)

    def failed(self, username: str, client: str) -> None:
        for key in self._keys(username, client).values():
            pipe = self.redis.pipeline()
            pipe.incr(key)
            pipe.expire(key, self.window_s, nx=True)
            pipe.execute()

    def succeeded(self, username: str) -> None:
        self.redis.delete(self._keys(username, "")["user"])


def login(redis: Any, settings: Settings, username: str, password: str,
          client: str) -> tuple[str, User]:
    """Check a password and issue a token.

    Raises:
        TooManyRequests: too many recent failures for this user or address.
        Unauthorized: wrong name or password, or the account is disabled
            (one message for all: no account probing).
    """
    signing_secrets(settings)  # fail on config before touching counters
    throttle = LoginThrottle(redis)
    throttle.check(username, client)
    user = UserStore(redis).verify_password(username, password)
    if user is None or user.role == "service":
        throttle.failed(username, client)
        raise Unauthorized("wrong user name or password")
    throttle.succeeded(username)
    return issue_token(settings, user), user
