"""The one guard in front of every radcloud web action, and the login.

How a caller proves who it is:

* **People** log in (``functions/login``) and get a signed, expiring token
  (JWT, HS256). They send it as ``Authorization: Bearer <token>``; the UI's
  own pages may also send it as the ``token`` cookie, but only on GET/HEAD —
  anything that changes state needs the header, which another site cannot
  make a browser send (CSRF).
* **Service accounts** (the ChRIS backend) send an API key as ``X-Api-Key``
  or as ``Authorization: Bearer rck_...``.
* **A shard running off-site** (a Slurm job, :mod:`radcloud.work.shardchannel`)
  sends its *shard ticket* as ``Authorization: Bearer``: a token signed like
  a person's but for audience ``radcloud-shard``, naming one job and shard and
  expiring with the shard's deadline. It acts as role ``shard``, which only
  the ``shard_report`` action accepts, and never as a user.
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

Failures are :class:`~radcloud.core.errors.Unauthorized` (401: missing, expired,
forged) or :class:`~radcloud.core.errors.Forbidden` (403: wrong role); their
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

from radcloud.core import redisclient
from radcloud.core.errors import ConfigError, Forbidden, TooManyRequests, Unauthorized, Unavailable
from radcloud.core.settings import Settings
from radcloud.access.users import API_KEY_PREFIX, User, UserStore

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
ISSUER = "radcloud"
MIN_SECRET = 32
SYSTEM_ROLE = "system"
SHARD_ROLE = "shard"  # a shard ticket's bearer (only shard_report accepts it)
SHARD_AUDIENCE = "radcloud-shard"
COOKIE = "token"


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


def issue_shard_ticket(settings: Settings, job_id: str, shard_id: str, *, output_prefix: str,
                       inputs: list[str], ttl_s: int, now: float | None = None) -> str:
    """A token for one shard run off-site: it may report on that shard and get presigned URLs
    for its own inputs and for keys under its output prefix, until ``ttl_s`` from now."""
    now = time.time() if now is None else now
    claims = {"iss": ISSUER, "aud": SHARD_AUDIENCE, "sub": f"shard:{job_id}/{shard_id}", "job": job_id,
              "shard": shard_id, "out": output_prefix, "in": inputs_digest(inputs),
              "iat": int(now), "exp": int(now) + int(ttl_s)}
    return jwt.encode(claims, signing_secrets(settings)[0], algorithm=ALGORITHM)


def inputs_digest(keys: list[str]) -> str:
    """What a shard ticket says of its inputs: the SHA-256 of their keys, in order."""
    import hashlib

    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def shard_ticket_claims(token: str, secrets: list[str], *, now: float | None = None) -> dict[str, Any] | None:
    """A shard ticket's claims; None when ``token`` is not a shard ticket at all.

    Raises:
        Unauthorized: a shard ticket that expired or that radcloud did not sign.
    """
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    if unverified.get("aud") != SHARD_AUDIENCE:
        return None
    options = {"require": ["exp", "iat", "sub", "iss", "aud"], "verify_exp": now is None}
    for secret in secrets:
        try:
            claims = jwt.decode(token, secret, algorithms=[ALGORITHM], issuer=ISSUER, audience=SHARD_AUDIENCE,
                                options=options)
        except jwt.ExpiredSignatureError:
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidTokenError:
            break
        if (now is None or claims["exp"] > now) and all(isinstance(claims.get(k), str) and claims[k]
                                                         for k in ("job", "shard", "out", "in")):
            return claims
        break
    raise Unauthorized("the shard ticket is not valid or has expired; the shard cannot report any more "
                       "(retry the shard to run it with a new one)")


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
        ticket = shard_ticket_claims(token, self.secrets, now=self.clock())
        if ticket is not None:
            return Principal(str(ticket["sub"]), SHARD_ROLE, kind="shard")
        claims = decode_token(token, self.secrets, now=self.clock())
        user = self.store.get(str(claims["sub"]))
        # One answer for unknown, disabled and revoked: no account probing.
        if user is None or user.disabled or user.gen != claims.get("gen"):
            raise Unauthorized("the token is no longer valid; log in again")
        return Principal(user.name, user.role, kind="user")


def bearer(headers: Mapping[str, str]) -> str:
    """The request's ``Authorization: Bearer`` credential ('' when none)."""
    return _bearer(headers.get("authorization", ""))


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
    """The user store's and audit trail's Redis client (shared, see :mod:`radcloud.core.redisclient`)."""
    return redisclient.client(settings, {**redisclient.USER_STORE, "retry_budget_s": settings.user_store_retry_s})


def authenticate(request: Any, settings: Settings, roles: tuple[str, ...],
                 args: Mapping[str, Any]) -> Principal:
    """The guard :func:`radcloud.api.action.run` calls for every request.

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

def client_address(forwarded_for: str, trusted_proxies: str, fallback: str = "unknown") -> str:
    """The caller's address from an X-Forwarded-For chain, believing only trusted proxies.

    OpenWhisk's edge (nginx; localwhisk alike) appends the address it saw, so
    the last entry is a fact; an entry before it is only what the hop after
    it wrote. Walking from the right, each hop in ``trusted_proxies``
    (addresses or CIDRs) vouches for the entry before it; the first hop not
    trusted is the caller. With no trusted proxies that is the edge's peer,
    which a caller cannot choose. The whole header is read, never a cut
    copy: a long forged prefix must not push the edge's entry out.
    """
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    if not hops:
        return fallback
    networks = _networks(trusted_proxies)
    for i in range(len(hops) - 1, 0, -1):
        if not _in(hops[i], networks):
            return hops[i][:64]
    return hops[0][:64]


def _networks(spec: str) -> list[Any]:
    import ipaddress

    out = []
    for item in (p.strip() for p in spec.split(",")):
        if item:
            try:
                out.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ConfigError(f"trusted_proxies: {item!r} is not an address or CIDR "
                                  "(e.g. 10.0.0.5 or 10.8.0.0/16)", field="trusted_proxies") from None
    return out


def _in(address: str, networks: list[Any]) -> bool:
    import ipaddress

    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


# Atomically: refuse while this (user, address) pair must wait or the address
# has spent its budget; else count the attempt as a failure in advance (a
# success takes it back), so parallel guesses cannot all pass the check.
# KEYS: pair hash {n, last}, address counter. ARGV: now, free, base, cap,
# budget, window_s, pair_ttl_s. Returns {0} or {seconds to wait}.
_ATTEMPT_LUA = """
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
local now, free = tonumber(ARGV[1]), tonumber(ARGV[2])
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if used >= tonumber(ARGV[5]) then
  return {math.max(redis.call('TTL', KEYS[2]), 1)}
end
if n >= free then
  local wait = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * 2 ^ (n - free))
  if now < last + wait then
    return {math.max(math.ceil(last + wait - now), 1)}
  end
end
redis.call('HSET', KEYS[1], 'n', n + 1, 'last', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[6], 'NX')
return {0}
"""


@dataclasses.dataclass(frozen=True)
class LoginPolicy:
    """How failed logins are slowed (see :class:`Settings` ``login_*``)."""

    free_failures: int = 3
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    address_budget: int = 100
    address_window_s: int = 15 * 60

    @classmethod
    def from_settings(cls, settings: Settings) -> "LoginPolicy":
        return cls(settings.login_free_failures, settings.login_backoff_base_s, settings.login_backoff_max_s,
                   settings.login_address_budget, settings.login_address_window_s)

    def pair_ttl_s(self) -> int:
        # A pair's count is forgotten after a quiet spell as long as its longest wait, at least a window.
        return int(max(self.address_window_s, 2 * self.backoff_max_s))


class LoginThrottle:
    """Slows password guessing without locking anyone out.

    * Per (user name, address): the first ``free_failures`` failures cost
      nothing; after that each attempt waits ``base * 2^k`` seconds after the
      previous one, capped at ``backoff_max_s`` — 429 with Retry-After until
      then, without the password being checked. An attacker elsewhere never
      delays the user; a success clears the pair.
    * Per address: at most ``address_budget`` failures per window across all
      user names (password spraying), then 429 for that address only.

    The clock is injected (tests); the counters live in Redis.
    """

    def __init__(self, redis: Any, policy: LoginPolicy | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis, self.policy, self.clock = redis, policy or LoginPolicy(), clock
        self._attempt = redis.register_script(_ATTEMPT_LUA)

    @staticmethod
    def _keys(username: str, address: str) -> list[str]:
        return [f"radcloud:loginfail:pair:{username.lower()[:64]}|{address}",
                f"radcloud:loginfail:addr:{address}"]

    def attempt(self, username: str, address: str) -> None:
        """Count an attempt in advance. Raises TooManyRequests while it must wait."""
        p = self.policy
        wait = int(self._attempt(keys=self._keys(username, address), args=[
            self.clock(), p.free_failures, p.backoff_base_s, p.backoff_max_s, p.address_budget,
            p.address_window_s, p.pair_ttl_s()])[0])
        if wait > 0:
            raise TooManyRequests(f"too many failed logins; try again in {wait} s", retry_after_s=wait)

    def succeeded(self, username: str, address: str) -> None:
        """The attempt was right: forget the pair and give the address its attempt back."""
        pair, addr = self._keys(username, address)
        pipe = self.redis.pipeline()
        pipe.delete(pair)
        pipe.decr(addr)
        pipe.execute()


def login(redis: Any, settings: Settings, username: str, password: str,
          address: str, *, clock: Callable[[], float] = time.time) -> tuple[str, User]:
    """Check a password and issue a token.

    ``address``: the caller's address (:func:`client_address`).

    Raises:
        TooManyRequests: this user name from this address must wait, or the
            address has spent its failure budget.
        Unauthorized: wrong name or password, or the account is disabled
            (one message for all: no account probing).
    """
    signing_secrets(settings)  # fail on config before touching counters
    throttle = LoginThrottle(redis, LoginPolicy.from_settings(settings), clock)
    throttle.attempt(username, address)
    user = UserStore(redis).verify_password(username, password)
    if user is None or user.role == "service":
        raise Unauthorized("wrong user name or password")
    throttle.succeeded(username, address)
    return issue_token(settings, user, now=clock()), user
