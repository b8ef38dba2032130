"""Web action ``login``: user name + password → a signed, expiring token.

POST ``{"username", "password"}`` → ``{"token", "expires_in", "user"}``,
plus the token as an HttpOnly, SameSite=Strict ``token`` session cookie
(it ends with the browser) so the UI's own pages can be served to a
logged-in browser. DELETE clears the cookie (logging out is otherwise
client-side: forget the token); DELETE with ``{"everywhere": true}`` and
the Bearer token also ends every other session of that user ("log out
everywhere", e.g. after leaving a workstation logged in). Public: this is
the one action the guard does not run in front of; failed attempts are
slowed per (user, address) with a growing delay and budgeted per address
(429 with Retry-After, :class:`radcloud.access.auth.LoginThrottle`), never a
lockout of the account, and audited.
"""

from radcloud.access import audit, auth
from radcloud.api.action import run
from radcloud.api import parse
from radcloud.api.models import LoginRequest, LogoutRequest
from radcloud.core.errors import BadRequest, RadcloudError
from radcloud.access.users import ROLES, UserStore


def _cookie(value: str, max_age: int | None, secure: bool) -> str:
    # No Max-Age on login: a session cookie, gone when the browser closes (a
    # shared workstation keeps nothing); the token inside still expires.
    flags = ("; Secure" if secure else "") + (f"; Max-Age={max_age}" if max_age is not None else "")
    return f"{auth.COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict{flags}"


def _end_every_session(request, settings):
    """Bump the caller's token generation: all their tokens die at once.

    Who is asking is proven by the Bearer token (never the cookie alone: a
    DELETE changes state, so CSRF rules apply as for every other action).
    """
    principal = auth.authenticate(request, settings, ROLES, {})
    if principal.kind != "user":
        raise BadRequest("API keys have no sessions: revoke the key instead "
                         "(`radcloud users api-key NAME --revoke KEY`)", field="everywhere")
    redis = auth.redis_client(settings)
    UserStore(redis).end_sessions(principal.name)
    audit.record(redis, principal, "logout-everywhere", request)


def handle(request, settings, _principal):
    secure = request.headers.get("x-forwarded-proto", "") == "https"
    if request.method == "delete":
        if parse(LogoutRequest, request.params).everywhere:
            _end_every_session(request, settings)
        return {"statusCode": 200, "headers": {"Content-Type": "application/json",
                                               "Set-Cookie": _cookie("", 0, secure)},
                "body": {"ok": True}}
    if request.method != "post":
        raise BadRequest("send POST with {\"username\", \"password\"}", field="method")
    creds = parse(LoginRequest, request.params)
    username, password = creds.username, creds.password
    redis = auth.redis_client(settings)
    address = auth.client_address(request.headers.get("x-forwarded-for", ""), settings.trusted_proxies,
                                  fallback=request.client)
    try:
        token, user = auth.login(redis, settings, username.strip(), password, address)
    except RadcloudError as exc:
        audit.record(redis, None, "login", request, outcome=exc.code, username=username.strip()[:64])
        raise
    principal = auth.Principal(user.name, user.role)
    audit.record(redis, principal, "login", request)
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json", "Cache-Control": "no-store",
                    "Set-Cookie": _cookie(token, None, secure)},
        "body": {"token": token, "expires_in": settings.token_ttl_s,
                 "user": {"name": user.name, "role": user.role}},
    }


def main(args):
    return run(args, handle, public=True)
