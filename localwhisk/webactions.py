"""Web actions (CTRL/WebActions.scala): ``/api/v1/web/{ns}/{pkg|default}/{action}[.ext][/path]``.

Turns an HTTP request into action arguments (``__ow_*`` plus query/body), runs
the action through the invoker and renders its result by the extension's
rules: ``.http`` reads ``statusCode/headers/body`` (204 when the body is empty,
base64-decoded when the content type is binary), ``.json/.html/.svg/.text``
project a field. Error statuses and messages are OpenWhisk's own.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Callable
from urllib.parse import parse_qsl

from localwhisk import entities as ent
from localwhisk.activations import Invoker, Target, wait
from localwhisk.auth import Authenticator
from localwhisk.errors import (BAD_AUTH, NOT_AUTHENTICATED, RESERVED_PARAMS, WEB_ERROR, WhiskError,
                               bad_request, not_found)
from localwhisk.response import Response, dumps, json_response

EXTENSIONS = (".http", ".json", ".html", ".svg", ".text")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
CORS_METHODS = "OPTIONS, GET, DELETE, POST, PUT, HEAD, PATCH"
CORS_HEADERS = "Authorization, Origin, X-Requested-With, Content-Type, Accept, User-Agent"
PROPERTY_MISSING = "Response does not include requested property."


def invalid_media(media: str) -> WhiskError:
    return bad_request(f"Response is not valid '{media}'.")


def is_binary_type(content_type: str | None) -> bool:
    """Whether a media type carries bytes (akka-http's ``binary`` flag, approximately)."""
    if not content_type:
        return True  # no type means application/octet-stream
    mt = content_type.split(";")[0].strip().lower()
    main, _, sub = mt.partition("/")
    if main == "text" or sub in ("json", "xml", "javascript", "x-www-form-urlencoded", "x-javascript"):
        return False
    return not (sub.endswith("+json") or sub.endswith("+xml"))


def split_action(segment: str) -> tuple[str, str | None]:
    """``hello.json`` -> (``hello``, ``.json``); an unknown suffix stays part of the name."""
    dot = segment.rfind(".")
    if dot > 0 and segment[dot:] in EXTENSIONS:
        return segment[:dot], segment[dot:]
    return segment, None


class WebActions:
    """Serves web requests. ``lookup(ns, pkg, name)`` returns a :class:`Target` or None."""

    def __init__(self, lookup: Callable[[str, str | None, str], Target | None], auth: Authenticator,
                 invoker: Invoker, *, wait_ms: int = 60000) -> None:
        self._lookup = lookup
        self._auth = auth
        self._invoker = invoker
        self.wait_ms = wait_ms

    def handle(self, method: str, rest: str, query: str, headers: dict[str, str], body: bytes,
               tid: str) -> Response:
        """``rest`` is the path after ``/api/v1/web/``; ``headers`` have lowercase names."""
        parts = rest.split("/")
        if len(parts) < 3 or not all(parts[:3]):
            raise not_found()
        ns, pkg, segment = parts[0], parts[1], parts[2]
        name, ext = split_action(segment)
        ext = ext or ".http"
        ow_path = "/" + "/".join(parts[3:]) if len(parts) > 3 else ""
        target = self._lookup(ns, None if pkg == "default" else pkg, name)
        if target is None or not ent.truthy(ent.annotation(target.action, "web-export")):
            raise not_found()
        if method not in METHODS:
            raise WhiskError(405, "HTTP method not allowed, supported methods: " + ", ".join(METHODS))
        action = target.action
        user = self._authorize(action, headers)
        custom_options = ent.truthy(ent.annotation(action, "web-custom-options"))
        cors = [] if custom_options else self._cors(headers)
        if method == "OPTIONS" and not custom_options:
            return Response(200, cors, b"")

        args = self._arguments(target, method, query, headers, body, ow_path, user)
        # A web action is a blocking invocation (OpenWhisk's WebActions waits for the answer).
        inv = self._invoker.submit(target.namespace, target, args, transaction_id=tid, blocking=True)
        id_header = [("x-openwhisk-activation-id", inv.activation_id)]
        record = wait(inv, self.wait_ms)
        if record is None:
            return json_response(202, {"activationId": inv.activation_id}, cors + id_header)
        response = record["response"]
        if response["status"] == "success":
            value = response["result"]
        elif response["status"] == "application error" and isinstance(response["result"], dict):
            value = response["result"].get("error")
        else:
            raise WhiskError(400, WEB_ERROR, dict(id_header))
        try:
            out = self._render(ext, value, ow_path)
        except WhiskError as err:
            err.headers.update(dict(cors + id_header))
            raise
        out.headers += cors + id_header
        if method == "HEAD":
            out.body = b""
        return out

    # -- request side ----------------------------------------------------------

    def _authorize(self, action: dict[str, Any], headers: dict[str, str]) -> str | None:
        """Return the authenticated namespace (for ``__ow_user``), enforcing require-whisk-auth."""
        user = self._auth.namespace_for(headers.get("authorization"))
        required = ent.annotation(action, "require-whisk-auth")
        if required is None or required is False:
            return user
        if required is True:
            if user is None:
                raise WhiskError(401, BAD_AUTH if headers.get("authorization") else NOT_AUTHENTICATED)
            return user
        if isinstance(required, (str, int)) and not isinstance(required, bool):
            if headers.get("x-require-whisk-auth") == str(required):
                return user
        raise WhiskError(401, BAD_AUTH if headers.get("x-require-whisk-auth") else NOT_AUTHENTICATED)

    @staticmethod
    def _cors(headers: dict[str, str]) -> list[tuple[str, str]]:
        return [
            ("Access-Control-Allow-Origin", "*"),
            ("Access-Control-Allow-Methods", CORS_METHODS),
            ("Access-Control-Allow-Headers", headers.get("access-control-request-headers") or CORS_HEADERS),
        ]

    def _arguments(self, target: Target, method: str, query: str, headers: dict[str, str], body: bytes,
                   ow_path: str, user: str | None) -> dict[str, Any]:
        action = target.action
        ctype = headers.get("content-type", "")
        args: dict[str, Any] = {}
        if ent.truthy(ent.annotation(action, "raw-http")):
            # raw: nothing is parsed; JSON and binary bodies travel base64-encoded.
            args["__ow_query"] = query
            if not body:
                args["__ow_body"] = ""
            elif is_binary_type(ctype) or "json" in ctype.split(";")[0]:
                args["__ow_body"] = base64.b64encode(body).decode()
            else:
                args["__ow_body"] = body.decode("utf-8", "replace")
        else:
            supplied = dict(parse_qsl(query, keep_blank_values=True))
            extra = self._body_fields(body, ctype)
            if isinstance(extra, dict):
                supplied.update(extra)
            elif extra is not None:
                args["__ow_body"] = extra
            defined = set(target.default_params) if ent.truthy(ent.annotation(action, "final")) else set()
            if any(k.startswith("__ow_") or k in defined for k in supplied):
                raise bad_request(RESERVED_PARAMS)
            args.update(supplied)
        args["__ow_method"] = method.lower()
        args["__ow_headers"] = {k.lower(): v for k, v in headers.items()}
        args["__ow_path"] = ow_path
        if user is not None:
            args["__ow_user"] = user
        return args

    @staticmethod
    def _body_fields(body: bytes, ctype: str) -> dict[str, Any] | str | None:
        """A JSON object or form as fields; other bodies as text, or base64 when binary."""
        if not body:
            return None
        mt = ctype.split(";")[0].strip().lower()
        if mt == "application/json" or mt.endswith("+json"):
            try:
                parsed = json.loads(body)
            except ValueError:
                raise bad_request("The request content was malformed:\nthe body is not valid JSON.") from None
            return parsed if isinstance(parsed, dict) else body.decode("utf-8", "replace")
        if mt == "application/x-www-form-urlencoded":
            return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if is_binary_type(ctype):
            return base64.b64encode(body).decode()
        return body.decode("utf-8", "replace")

    # -- response side ---------------------------------------------------------

    def _render(self, ext: str, value: Any, ow_path: str) -> Response:
        if ext == ".http":
            return render_http(value)
        if ow_path:
            value = _project(value, [p for p in ow_path.split("/") if p])
        elif ext != ".json":
            field = ext[1:]
            if isinstance(value, dict) and field in value:
                value = value[field]
            elif isinstance(value, dict) and "body" in value:
                value = value["body"]
            else:
                raise not_found(PROPERTY_MISSING)
        if ext == ".json":
            return json_response(200, value)
        media = {".html": "text/html", ".svg": "image/svg+xml", ".text": "text/plain"}[ext]
        if not isinstance(value, str):
            raise invalid_media(media)
        return Response(200, [("content-type", f"{media}; charset=UTF-8")], value.encode())


def _project(value: Any, path: list[str]) -> Any:
    for p in path:
        if not isinstance(value, dict) or p not in value:
            raise not_found(PROPERTY_MISSING)
        value = value[p]
    return value


def render_http(result: Any) -> Response:
    """The ``.http`` rules: headers, statusCode and body of the result object."""
    if not isinstance(result, dict):
        raise invalid_media("message/http")
    headers: list[tuple[str, str]] = []
    raw_headers = result.get("headers", {})
    if not isinstance(raw_headers, dict):
        raise invalid_media("message/http")
    for k, v in raw_headers.items():
        for item in v if isinstance(v, list) else [v]:
            if isinstance(item, bool):
                headers.append((k, "true" if item else "false"))
            elif isinstance(item, (str, int, float)):
                headers.append((k, str(item)))
            else:
                raise invalid_media("message/http")
    code = result.get("statusCode")
    if code is not None:
        try:
            code = int(code) if not isinstance(code, bool) and isinstance(code, (int, str)) else None
        except ValueError:
            code = None
        if code is None or not 100 <= code <= 599:
            raise invalid_media("message/http")
    body = result.get("body")
    ctype = next((v for k, v in headers if k.lower() == "content-type"), None)
    if body is None or body == "":
        # OpenWhisk: no body and no status code means 204 No Content.
        return Response(code if code is not None else 204, headers, b"")
    if isinstance(body, str):
        if ctype is None:
            ctype = "text/html"
            headers.append(("content-type", ctype))
        if is_binary_type(ctype):
            try:
                data = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                raise invalid_media(ctype) from None
        else:
            data = body.encode()
        return Response(code or 200, headers, data)
    if ctype is None:
        headers.append(("content-type", "application/json"))
    return Response(code or 200, headers, dumps(body))
