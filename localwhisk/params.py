"""Request readers shared by the REST collections: paging, integer query parameters, JSON bodies.

Messages are OpenWhisk's own wording (CTRL/ApiUtils.scala, Messages.scala).
"""

from __future__ import annotations

import json
from typing import Any

from localwhisk.errors import bad_request

LIST_DEFAULT, LIST_MAX = 30, 200


def page(q: dict[str, str]) -> tuple[int, int]:
    skip = int_param(q, "skip") or 0
    limit = int_param(q, "limit")
    if skip < 0:
        raise bad_request("The value of 'skip' must be a non-negative integer.")
    if limit is None or limit == 0:
        limit = LIST_DEFAULT if limit is None else LIST_MAX
    if limit < 0:
        raise bad_request("The value of 'limit' must be a non-negative integer.")
    if limit > LIST_MAX:
        raise bad_request(f"The value '{limit}' is not in the range of 0 to {LIST_MAX}.")
    return skip, limit


def epoch_param(q: dict[str, str], name: str) -> int | None:
    """``since``/``upto``: epoch milliseconds, with OpenWhisk's message (which says seconds) when not."""
    return int_param(q, name, f"Parameter is not a valid value for epoch seconds: {q.get(name)}")


def int_param(q: dict[str, str], name: str, message: str | None = None) -> int | None:
    if name not in q or q[name] == "":
        return None
    try:
        return int(q[name])
    except ValueError:
        raise bad_request(message or f"The value of '{name}' must be an integer.") from None


def json_object(body: bytes) -> dict[str, Any]:
    return json_payload(body, (dict,), "a JSON object")  # type: ignore[return-value]


def json_payload(body: bytes, kinds: tuple[type, ...] = (dict, list),
                  expected: str = "a JSON object or array") -> dict[str, Any] | list[Any]:
    """The JSON body (``{}`` when empty), refused with OpenWhisk's own wording."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise bad_request(f"The request content was malformed:\n{exc}") from None
    if not isinstance(value, kinds):
        raise bad_request(f"The request content was malformed:\nexpected {expected}.")
    return value
