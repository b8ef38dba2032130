"""pfcon's HTTP surface for one raw web action: routes, its own JWT, answers.

The ``pfcon`` action is web-exported raw (``web: raw``) so repeated form
fields arrive intact in ``__ow_body``; this module routes on ``__ow_path``
and ``__ow_method`` under a configurable prefix (default ``/api/v1/``)::

    POST auth-token/                         {pfcon_user, pfcon_password} -> {token}
    GET  health/                             {"health": "OK"}              (no auth)
    GET  pluginjobs/                         server info
    POST pluginjobs/ | copyjobs/ | uploadjobs/ | deletejobs/      201 {compute}
    GET  <kind>jobs/<jid>/                   {compute}
    DELETE <kind>jobs/<jid>/                 204
    GET  pluginjobs/<jid>/file/?job_output_path=P   {job_output_path, rel_file_paths}

The bearer token is pfcon's own, not a radcloud user token: HS256 over the
first ``token_secret``, issuer ``radcloud-pfcon``, 2-day expiry, for the one
user configured as ``pfcon_user``/``pfcon_password``. Radcloud user tokens
(issuer ``radcloud``) are refused here and pfcon tokens are refused by every
other action, because each side checks its issuer.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from radcloud.access.auth import ALGORITHM, signing_secrets
from radcloud.core.errors import BadRequest, ConfigError, NotFound, Unauthorized
from radcloud.pfcon import protocol as P
from radcloud.core.settings import Settings

ISSUER = "radcloud-pfcon"
TOKEN_TTL_S = 2 * 24 * 3600  # pfcon: datetime.now() + timedelta(days=2)
DEFAULT_PREFIX = "/api/v1/"
KINDS = {"copyjobs": "copy", "pluginjobs": "plugin", "uploadjobs": "upload", "deletejobs": "delete"}
JSON = {"Content-Type": "application/json"}


def issue_token(settings: Settings, user: str, password: str, *, now: float | None = None) -> str:
    """pfcon's ``auth-token/``: a token for the configured user, else 400 as pfcon answers."""
    if not settings.pfcon_user or not settings.pfcon_password:
        raise ConfigError("the pfcon endpoint is not configured: set pfcon_user and pfcon_password "
                          "(RADCLOUD_PFCON_USER / RADCLOUD_PFCON_PASSWORD)")
    ok_user = hmac.compare_digest(user.encode(), settings.pfcon_user.encode())
    ok_password = hmac.compare_digest(password.encode(), settings.pfcon_password.reveal().encode())
    if not (ok_user and ok_password):
        raise BadRequest("Unable to log in with provided credentials.", field="pfcon_password")
    now = time.time() if now is None else now
    claims = {"pfcon_user": user, "sub": user, "iss": ISSUER, "iat": int(now), "exp": int(now) + TOKEN_TTL_S}
    return jwt.encode(claims, signing_secrets(settings)[0], algorithm=ALGORITHM)


def check_token(settings: Settings, headers: Mapping[str, str], *, now: float | None = None) -> str:
    """The pfcon user of a valid ``Authorization: Bearer`` header; 401 otherwise."""
    value = headers.get("authorization", "")
    if not value:
        raise Unauthorized("Missing authorization header.")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Invalid authorization header.")
    # A fixed clock (tests): PyJWT would compare exp and iat with the real one.
    options = {"require": ["exp", "iss", "sub"], "verify_exp": now is None, "verify_iat": now is None}
    for secret in signing_secrets(settings):
        try:
            claims = jwt.decode(token.strip(), secret, algorithms=[ALGORITHM], issuer=ISSUER, options=options)
        except jwt.ExpiredSignatureError:
            raise Unauthorized("Expired authorization token.") from None
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidTokenError:
            break
        if now is not None and claims["exp"] <= now:
            raise Unauthorized("Expired authorization token.")
        if claims["sub"] != settings.pfcon_user:
            break  # the pfcon user was renamed: old tokens stop working
        return str(claims["sub"])
    raise Unauthorized("Invalid authorization token.")


def route(path: str, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Path segments after the prefix (``/api/v1/pluginjobs/x/file/`` -> ``[pluginjobs, x, file]``)."""
    clean = "/" + path.strip("/") + "/"
    norm_prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
    if not clean.startswith(norm_prefix):
        raise NotFound(f"no route {path!r}: pfcon's API lives under {norm_prefix}", field="path")
    return [p for p in clean[len(norm_prefix):].split("/") if p]


def answer(status: int, body: Any = None) -> dict[str, Any]:
    if body is None:
        return {"statusCode": status, "headers": {}, "body": ""}
    return {"statusCode": status, "headers": dict(JSON), "body": body}


def handle(method: str, path: str, headers: Mapping[str, str], fields: Mapping[str, list[str]],
           query: Mapping[str, list[str]], settings: Settings, service: Callable[[bool], Any], *,
           prefix: str = DEFAULT_PREFIX, now: float | None = None) -> dict[str, Any]:
    """Answer one pfcon request. ``service(need_invoker)`` builds the PfconService lazily."""
    try:
        parts: list[str] | None = route(path, prefix)
    except NotFound:
        parts = None  # answered after the token check: no route map for anonymous callers
    method = method.lower()
    if parts == ["health"] and method == "get":
        return answer(200, {"health": "OK"})
    if parts == ["auth-token"]:
        if method != "post":
            raise BadRequest("POST {pfcon_user, pfcon_password} to get a token", field="method")
        user = (fields.get("pfcon_user") or [""])[-1]
        password = (fields.get("pfcon_password") or [""])[-1]
        if not user or not password:
            raise BadRequest("pfcon_user and pfcon_password are required", field="pfcon_user")
        return answer(200, {"token": issue_token(settings, user, password, now=now)})
    check_token(settings, headers, now=now)
    if not parts or parts[0] not in KINDS or len(parts) > 3:
        raise NotFound(f"no route {path!r}; use auth-token/, health/, pluginjobs/, copyjobs/, "
                       f"uploadjobs/ or deletejobs/ under {prefix}", field="path")
    kind = KINDS[parts[0]]
    if len(parts) == 1:
        if method == "get":
            from radcloud.pfcon.service import PfconService

            return answer(200, PfconService.server_info())
        if method != "post":
            raise BadRequest(f"{parts[0]}/ takes GET or POST", field="method")
        return _post(kind, fields, service)
    jid = parts[1]
    if not P.valid_jid(jid):
        raise NotFound(f"no job {jid!r}: a jid is letters, digits, '.', '_' or '-'", field="jid")
    if len(parts) == 3:
        if parts[2] != "file" or kind != "plugin" or method != "get":
            raise NotFound(f"no route {path!r}", field="path")
        output = (query.get("job_output_path") or [""])[-1]
        if not output:
            raise BadRequest("job_output_path is required (in-network mode lists, it does not zip)",
                             field="job_output_path")
        return answer(200, service(False).output_files(jid, output))
    if method == "get":
        return answer(200, {"compute": service(False).status(kind, jid)})
    if method == "delete":
        service(False).remove(kind, jid)
        return answer(204)
    raise BadRequest(f"{parts[0]}/{jid}/ takes GET or DELETE", field="method")


def _post(kind: str, fields: Mapping[str, list[str]], service: Callable[[bool], Any]) -> dict[str, Any]:
    if kind == "plugin":
        job = P.PluginJob.parse(fields)
        compute = service(True).plugin(job, owner=f"pfcon:{job.auid}")
        return answer(201, {"data": {}, "compute": compute})
    parsed = {"copy": P.CopyJob, "upload": P.UploadJob, "delete": P.DeleteJob}[kind].parse(fields)
    return answer(201, {"compute": getattr(service(False), kind)(parsed)})


def pfcon_error(result: dict[str, Any]) -> dict[str, Any]:
    """Add pfcon's ``message`` to an error answer (flask-restful's ``abort`` shape) so
    CUBE logs the reason; radcloud's ``error`` object stays alongside."""
    err = result.get("error") if isinstance(result, dict) else None
    if not isinstance(err, dict) or not isinstance(err.get("body"), dict):
        return result
    inner = err["body"].get("error") or {}
    return {"error": {**err, "body": {"message": inner.get("message", ""), **err["body"]}}}
