"""The one way an action reads its request: a pydantic model, errors as :class:`BadRequest`.

:func:`parse` validates the caller's parameters against a model of
:mod:`radcloud.api.models` and turns the first problem pydantic finds into a
400 that names the field and says what to send instead — never pydantic's own
dump (which would echo the whole input, possibly patient identifiers). Model
validators may raise :class:`~radcloud.core.errors.RadcloudError` themselves (the
UID rule of :func:`radcloud.pacs.query.check_uid`, the DICOM matching grammar of
:func:`radcloud.pacs.query.parse`): pydantic lets those through unchanged, so an
action keeps one error family and the domain's own messages.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ValidationError

from radcloud.core.errors import BadRequest

M = TypeVar("M", bound=BaseModel)

_KIND = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
         "dict": "an object", "list": "a list", "model": "an object", "literal": "one of"}


def parse(model: type[M], params: Mapping[str, Any], *, context: Mapping[str, Any] | None = None) -> M:
    """``model`` validated from ``params``.

    Raises:
        BadRequest: naming the first invalid field, what was wrong and what to send.
        RadcloudError: whatever a model's own validator raised (domain rules).
    """
    try:
        return model.model_validate(dict(params), context=dict(context or {}))
    except ValidationError as exc:
        raise _bad_request(model, exc.errors(include_url=False)[0]) from None


def _clean(model: type[BaseModel], loc: tuple) -> tuple[tuple, bool]:
    """``loc`` without pydantic's union-member tags (``PatientID.str``), and whether it had any."""
    current: Any = model
    kept: list = []
    tagged = False
    for part in loc:
        current = _model_of(current)
        if current is not None:
            kept.append(part)  # a field name, or the unknown key of an extra_forbidden
            info = current.model_fields.get(part) if isinstance(part, str) else None
            current = info.annotation if info is not None else None
        elif isinstance(part, int):
            kept.append(part)
        else:
            tagged = True      # which member of a union (str | list[str]) complained
    return tuple(kept), tagged


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds (``X`` or ``X | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    members = [a for a in get_args(annotation) if a is not type(None)]
    if len(members) == 1 and isinstance(members[0], type) and issubclass(members[0], BaseModel):
        return members[0]  # ``X | None``; a union with other types tags its errors instead
    return None


def _accepts(model: type[BaseModel], loc: tuple) -> str:
    """What a field whose type is a union accepts, in words: "a string or a list of strings"."""
    current: Any = model
    for part in loc:
        found = _model_of(current)
        if found is None or not isinstance(part, str) or part not in found.model_fields:
            return "a value of another type"
        current = found.model_fields[part].annotation
    words = []
    for member in get_args(current) or (current,):
        if member is str:
            words.append("a string")
        elif get_origin(member) is list or get_origin(get_args(member)[0] if get_args(member) else None) is list:
            words.append("a list of strings")
        elif isinstance(member, type) and issubclass(member, BaseModel):
            names = "/".join(i.alias or n for n, i in member.model_fields.items())
            words.append(f"an object with {names}")
    return " or ".join(words) or "a value of another type"


def _field(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "body"


def _bounds(model: type[BaseModel], loc: tuple) -> tuple[Any, Any]:
    """The (lowest, highest) allowed of a field, from its model's constraints."""
    current: Any = model
    info = None
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not isinstance(part, str) or fields is None or part not in fields:
            return None, None
        info = fields[part]
        current = info.annotation
    lo = hi = None
    for item in getattr(info, "metadata", ()):
        if isinstance(item, (annotated_types.Ge, annotated_types.Gt)):
            lo = getattr(item, "ge", getattr(item, "gt", None))
        if isinstance(item, (annotated_types.Le, annotated_types.Lt)):
            hi = getattr(item, "le", getattr(item, "lt", None))
    return lo, hi


def _bad_request(model: type[BaseModel], err: Mapping[str, Any]) -> BadRequest:
    loc, tagged = _clean(model, tuple(err.get("loc") or ()))
    field = _field(loc)
    kind, value, ctx = err.get("type", ""), err.get("input"), err.get("ctx") or {}
    shown = repr(value)[:60]
    if tagged and kind in ("string_type", "list_type", "model_type", "dict_type"):
        message = f"{field} must be {_accepts(model, loc)}, got {shown}"
    elif kind == "missing":
        message = f"{field} is required"
    elif kind == "extra_forbidden":
        known = ", ".join(sorted(_known(model, loc[:-1])))
        message = f"unknown field {field!r}; known: {known}"
    elif kind == "literal_error":
        message = f"{field} must be one of {ctx.get('expected', '')}, got {shown}"
    elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        lo, hi = _bounds(model, loc)
        if lo is not None and hi is not None:
            message = f"{field} must be between {lo} and {hi}, got {shown}"
        else:
            message = f"{field} must be {'at least' if lo is not None else 'at most'} {lo if lo is not None else hi}"
    elif kind == "string_too_short" and ctx.get("min_length") == 1:
        message = f"{field} must not be empty"
    elif kind == "too_short" and ctx.get("min_length") == 1:
        message = f"{field} needs at least one value"
    elif kind in ("string_too_long", "too_long"):
        message = f"{field} takes at most {ctx.get('max_length')} {'characters' if 'string' in kind else 'values'}"
    elif kind == "string_pattern_mismatch":
        message = f"{field} {shown} has characters that are not allowed here ({ctx.get('pattern')})"
    elif kind == "value_error":
        message = f"{field}: {ctx.get('error', err.get('msg', ''))}"
    else:
        expected = next((text for key, text in _KIND.items() if kind.startswith(key)), None)
        message = (f"{field} must be {expected}, got {shown}" if expected
                   else f"{field} is not valid ({err.get('msg', kind)})")
    # ``field`` names the field (``inputs.series``); the message also says which item (``inputs.series.0``).
    return BadRequest(message, field=_field(tuple(p for p in loc if not isinstance(p, int))))


def _known(model: type[BaseModel], loc: tuple) -> list[str]:
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            break
        current = fields[part].annotation
    return [info.alias or name for name, info in getattr(current, "model_fields", {}).items()]


def json_object(text: str) -> dict[str, Any]:
    """A request body that must be one JSON object (web actions, pfcon's JSON bodies).

    Raises:
        BadRequest: ``field`` body, saying what was sent instead.
    """
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError:
        raise BadRequest("the request body is not JSON: send a JSON object", field="body") from None
    if not isinstance(decoded, dict):
        raise BadRequest(f"the request body must be a JSON object, not a {type(decoded).__name__}",
                         field="body")
    return decoded


def parse_all(model: type[M], params: Mapping[str, Any]) -> M:
    """Like :func:`parse`, but a 400 names *every* invalid field at once (``details.fields``),
    the way pfcon bundles its errors for CUBE.

    Raises:
        BadRequest: ``field`` the first invalid field by name, the message all of them.
    """
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        problems: dict[str, str] = {}
        for err in exc.errors(include_url=False):
            bad = _bad_request(model, err)
            problems.setdefault(bad.field or "body", bad.message)
        first = sorted(problems)[0]
        raise BadRequest("; ".join(problems[k] for k in sorted(problems)), field=first,
                         fields=problems) from None
