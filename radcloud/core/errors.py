"""The one exception family of radcloud.

Every error a caller can cause or must act on is a :class:`RadcloudError`
carrying an HTTP status. Actions translate it into OpenWhisk's web-action
error shape in exactly one place (:func:`to_response`). Messages name the
input, what was found and what to do — never patient attributes.
"""

from __future__ import annotations

from typing import Any


class RadcloudError(Exception):
    """Base class. ``status`` is the HTTP status an action answers with."""

    status = 500
    code = "internal"

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.details:
            body["details"] = self.details
        return body


class BadRequest(RadcloudError):
    status = 400
    code = "bad_request"


class Unauthorized(RadcloudError):
    status = 401
    code = "unauthorized"


class Forbidden(RadcloudError):
    status = 403
    code = "forbidden"


class NotFound(RadcloudError):
    status = 404
    code = "not_found"


class Conflict(RadcloudError):
    status = 409
    code = "conflict"


class PayloadTooLarge(RadcloudError):
    status = 413
    code = "payload_too_large"


class TooManyRequests(RadcloudError):
    status = 429
    code = "too_many_requests"


class UpstreamError(RadcloudError):
    """An external system (Orthanc, S3, Redis, OpenWhisk) failed or is down."""

    status = 502
    code = "upstream"


class Unavailable(RadcloudError):
    status = 503
    code = "unavailable"


class ConfigError(RadcloudError):
    """A setting is missing or malformed; raised before any external call."""

    status = 500
    code = "config"


def reason_of(exc: BaseException) -> str:
    """What broke, in the words of the innermost cause ("Connection refused", "Remote end closed
    connection without response"), for a message that names the cause, not an exception class."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc)
    for inner in exc.args:  # requests/urllib3 wrap the reason: ('Connection aborted.', RemoteDisconnected(...))
        if isinstance(inner, BaseException):
            return reason_of(inner)
    text = text.rsplit("] ", 1)[-1] if "] " in text else text
    return text or type(exc).__name__


def to_response(exc: BaseException) -> dict[str, Any]:
    """Translate an exception into a web-action result.

    OpenWhisk renders ``result.error`` of an application error with the
    extension's rules, so a ``.http`` action returns
    ``{"error": {"statusCode": N, "headers": ..., "body": ...}}``.
    Unknown exceptions become a 500 without their text (it may hold PHI).
    """
    if isinstance(exc, RadcloudError):
        status, body = exc.status, exc.to_dict()
    else:
        status, body = 500, {"code": "internal", "message": "internal error; see the activation logs"}
    headers = {"Content-Type": "application/json"}
    retry_after = getattr(exc, "details", {}).get("retry_after_s") if status in (429, 503) else None
    if isinstance(retry_after, (int, float)) and retry_after > 0:
        headers["Retry-After"] = str(int(retry_after))  # RFC 9110: clients (and browsers' fetch) read the header
    return {
        "error": {
            "statusCode": status,
            "headers": headers,
            "body": {"error": body},
        }
    }
