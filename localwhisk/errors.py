"""OpenWhisk's error responses: ``{"error": msg, "code": txid}`` with an HTTP status.

Messages are OpenWhisk's own (CTRL/ApiUtils.scala, common/.../http/Messages)
so clients that match on them behave the same against localwhisk.
"""

from __future__ import annotations

RESOURCE_MISSING = "The requested resource does not exist."
ALREADY_EXISTS = "resource already exists"
NOT_AUTHENTICATED = "The resource requires authentication, which was not supplied with the request"
BAD_AUTH = "The supplied authentication is invalid"
NOT_AUTHORIZED = "The supplied authentication is not authorized to access this resource."
RESERVED_PARAMS = "Request defines parameters that are not allowed (e.g., reserved properties)."
WEB_ERROR = "There was an error processing your request."
SEQ_COMPONENT_MISSING = "Sequence component does not exist."
SEQ_TOO_LONG = "Too many actions in the sequence."
SEQ_CYCLIC = "Sequence may not refer to itself."


class WhiskError(Exception):
    """A request the controller refuses; becomes OpenWhisk's error body."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> WhiskError:
    return WhiskError(400, message)


def not_found(message: str = RESOURCE_MISSING) -> WhiskError:
    return WhiskError(404, message)


def conflict(message: str = ALREADY_EXISTS) -> WhiskError:
    return WhiskError(409, message)


def refuse_overwrite(existing: object, q: dict[str, str]) -> None:
    """A PUT onto an entity that exists needs ``?overwrite=true``, as in OpenWhisk: 409 otherwise."""
    if existing is not None and q.get("overwrite", "false").lower() != "true":
        raise conflict()


def too_large(size: int, allowed: int) -> WhiskError:
    return WhiskError(413, f"Request larger than allowed: {size} > {allowed} bytes.")


def too_many(count: int, allowed: int) -> WhiskError:
    # OpenWhisk Messages.tooManyConcurrentRequests: the cap localwhisk enforces
    # is on invocations in flight, not on a per-minute rate.
    return WhiskError(429, f"Too many concurrent requests in flight (count: {count}, allowed: {allowed}).")


def too_many_per_minute(count: int, allowed: int) -> WhiskError:
    # OpenWhisk Messages.tooManyRequests: the per-minute rate (RateThrottler), e.g. trigger fires.
    return WhiskError(429, f"Too many requests in the last minute (count: {count}, allowed: {allowed}).")
