"""The one wrapper every radcloud action runs inside.

An action's ``main(args)`` is ``return run(args, handler, roles=...)``. The
wrapper:

* loads :class:`~radcloud.core.settings.Settings` from the args (package
  parameters arrive there) and separates them from the caller's input;
* authenticates web requests (``__ow_method`` present) through
  :func:`radcloud.access.auth.authenticate` — one guard for every web action;
  direct invocations through the OpenWhisk REST API are already
  authenticated by OpenWhisk's namespace key and carry the caller as
  ``_principal``;
* shapes the answer: a web request gets ``{statusCode, headers, body}``
  (rendered by the ``.http`` extension); a direct invocation (a sequence
  component, the ChRIS backend over REST) gets the plain result dict, so
  sequences can pass it on;
* is the single place where an exception becomes an error answer
  (:func:`radcloud.core.errors.to_response`), so every request gets one.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from radcloud.api.validation import json_object
from radcloud.core.errors import RadcloudError, to_response
from radcloud.core.settings import Settings

log = logging.getLogger(__name__)

_SETTING_NAMES = frozenset(f.name for f in dataclasses.fields(Settings))
ALL_ROLES = ("clinician", "researcher", "admin", "service")
# The inputs deploy/manifest.yaml binds, package- and action-level (a test
# keeps them equal).
# ``web: true`` makes bound parameters final, so a web caller cannot send
# them; any *other* setting name in a web request's args came from the
# caller, and must not configure the action: ``ow_api_host`` would send the
# namespace API key to the caller's host, ``token_ttl_s`` would mint a
# ten-year token. Web requests take those settings from the environment.
BOUND_SETTINGS = frozenset({"orthanc_url", "orthanc_user", "orthanc_password", "s3_endpoint", "s3_access_key",
                            "s3_secret_key", "s3_bucket", "redis_url", "token_secret",
                            "deid_secret", "pfcon_user", "pfcon_password", "trusted_proxies", "viewer_url"})


def settings_from(args: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Settings for this activation; a web request cannot supply unbound ones."""
    if "__ow_method" in args:
        args = {k: v for k, v in args.items() if k not in _SETTING_NAMES or k in BOUND_SETTINGS}
    return Settings.load(args, environ)


@dataclasses.dataclass
class Request:
    """What the caller sent, without settings and OpenWhisk plumbing."""

    params: dict[str, Any]
    method: str = "post"
    path: str = ""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    web: bool = False
    # A later component of a web sequence: the address the first one saw.
    sequence_client: str = ""

    @property
    def client(self) -> str:
        """The caller's address chain for the audit trail: X-Forwarded-For as the edge passed it.

        Kept whole: the first entries are what the caller claims, the last is
        what OpenWhisk's edge (nginx, or localwhisk) saw; picking one would
        either trust a claim or hide the origin behind a hospital proxy.
        """
        chain = ", ".join(p.strip() for p in self.headers.get("x-forwarded-for", "").split(",") if p.strip())
        return chain[:200] or self.sequence_client or "unknown"

    @property
    def peer(self) -> str:
        """The address OpenWhisk's edge saw (the chain's last entry): what a caller cannot choose,
        so failed-login counting keys on it."""
        return self.client.rsplit(",", 1)[-1].strip()

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> "Request":
        web = "__ow_method" in args
        params = {k: v for k, v in args.items() if not k.startswith("__ow_") and k not in _SETTING_NAMES}
        body = args.get("__ow_body")
        if web and body:
            params.update(_decode_body(body, args.get("__ow_headers") or {}))
        return cls(
            params=params,
            method=str(args.get("__ow_method", "post")).lower(),
            path=str(args.get("__ow_path", "")),
            headers={str(k).lower(): str(v) for k, v in (args.get("__ow_headers") or {}).items()},
            web=web,
        )


_PRINCIPAL = "_principal"
_CLIENT = "_client"  # the web caller's address, passed on like _principal (for the audit trail)
_SHAPED = ("statusCode", "headers", "body")


def _is_web_shaped(args: Mapping[str, Any]) -> bool:
    """True for a later component of a web sequence (pull-and-run).

    Only the first component sees the web request; the next is invoked
    directly with that component's answer, which :func:`run` shaped for
    HTTP. Such a component unwraps its input and shapes its own answer for
    HTTP too, since the web layer renders the last component's answer.
    """
    return "__ow_method" not in args and "statusCode" in args and isinstance(args.get("body"), dict)


def _unwrap(args: Mapping[str, Any]) -> dict[str, Any]:
    """The body is the real input; ``_principal`` and ``_client`` (set by
    :func:`run`, never by a caller) say for whom, and from where, the
    sequence runs."""
    unwrapped = {k: v for k, v in args.items() if k not in _SHAPED}
    unwrapped.update({k: v for k, v in args["body"].items() if k not in (_PRINCIPAL, _CLIENT)})
    return unwrapped


def _decode_body(body: str, headers: Mapping[str, str]) -> dict[str, Any]:
    """A JSON body arrives merged unless the action is raw-http; then base64."""
    text = body
    try:
        text = base64.b64decode(body, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    return json_object(text)


Handler = Callable[[Request, Settings, Any], Any]


def run(args: Mapping[str, Any], handler: Handler, *, roles: tuple[str, ...] = ALL_ROLES,
        public: bool = False) -> dict[str, Any]:
    """Run ``handler(request, settings, principal)`` and shape its answer.

    ``public=True`` skips authentication (only the login action uses it).
    """
    request: Request | None = None
    in_web_sequence = False
    try:
        in_web_sequence = _is_web_shaped(args)
        if in_web_sequence:
            args = _unwrap(args)
        settings = settings_from(args)
        request = Request.from_args(args)
        if in_web_sequence:
            request.sequence_client = str(args.get(_CLIENT) or "")
            request.params.pop(_CLIENT, None)
        principal = None
        if not public:
            from radcloud.access import auth  # late: auth needs Redis only when used

            principal = auth.authenticate(request, settings, roles, args)
        result = handler(request, settings, principal)
        # A later component of a web sequence acts for the web caller (a
        # direct invocation, but not the system's own work): audited as them.
        acting_for_caller = in_web_sequence and getattr(principal, "kind", "system") != "system"
        if principal is not None and (request.web or acting_for_caller):
            _audit(settings, principal, request, result, sequence=acting_for_caller)
    except RadcloudError as exc:
        log.info("request refused: %s %s", exc.status, exc.code)
        return _shape_error(exc, request)
    except Exception as exc:  # the guard: every request gets an answer
        log.exception("action failed")
        return _shape_error(exc, request)
    if request is not None and (request.web or in_web_sequence):
        if isinstance(result, dict) and "statusCode" in result:
            return result
        shaped = {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": result}
        if principal is not None:
            # Not rendered (the web layer reads statusCode/headers/body only):
            # the next component of a web sequence acts for this caller.
            shaped[_PRINCIPAL] = principal.to_param()
            shaped[_CLIENT] = request.client
        return shaped
    return result if isinstance(result, dict) else {"result": result}


def _audit(settings: Settings, principal: Any, request: Request, result: Any, *, sequence: bool = False) -> None:
    """Append the request (or web-sequence step) to the audit trail if it touched patient data.

    Inside the guard on purpose: if the trail cannot be written, the caller
    gets an error instead of unaudited patient data.
    """
    from radcloud.access import audit, auth

    action = os.environ.get("__OW_ACTION_NAME", "").rsplit("/", 1)[-1]
    if action in audit.AUDITED:
        audit.after_request(auth.redis_client(settings), action, principal, request, result, sequence=sequence)


def _shape_error(exc: BaseException, request: Request | None) -> dict[str, Any]:
    response = to_response(exc)
    if request is not None and not request.web:
        # Direct invocation: a flat error object (OpenWhisk marks it an
        # application error and sequences short-circuit on it). It also
        # carries headers + body: when this action is a later component of a
        # web sequence (pull-and-run), the web layer renders this object as
        # the HTTP answer, which would otherwise have an empty body.
        err = response["error"]
        return {"error": {**err["body"]["error"], "statusCode": err["statusCode"],
                          "headers": err["headers"], "body": err["body"]}}
    return response
