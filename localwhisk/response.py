"""The core's reply type and its JSON/error constructors (no HTTP library involved)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from localwhisk.errors import WhiskError

JSON = "application/json"


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def json(self) -> Any:
        return json.loads(self.body)


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(status: int, value: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, [("content-type", JSON), *(headers or [])], dumps(value))


def error_response(err: WhiskError, transaction_id: str) -> Response:
    """OpenWhisk's error body (common/.../http/ErrorResponse.scala)."""
    return json_response(err.status, {"error": err.message, "code": transaction_id}, list(err.headers.items()))
