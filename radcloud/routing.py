"""Routing rules: which arriving studies go to which pipeline.

A rule matches the routing attributes the arrivals watcher fires with
(:mod:`radcloud.arrivals`) — never patient attributes — and names a
*pipeline*: an ordered list of plugin steps with their parameters::

    {"name": "ct-chest-lungs", "enabled": true,
     "match": {"modality": "CT", "body_part": "CHEST*", "series_description": "*lung*"},
     "pipeline": [{"plugin": "lung-seg", "params": {}}, {"plugin": "segment-stats"}]}

Matching is per series: a rule matches a study when at least one of its
series matches every glob the rule gives (``fnmatch``, case-insensitive;
``calling_aet`` and ``study_description`` are study-level); a rule with no
``match`` matches every series. The series that matched are what its
pipeline runs on. A rule is validated when it is saved (:func:`validate`):
an unknown plugin, a bad parameter or an unknown match key is refused with
a message naming the step and the field, so nothing fails later at 3 a.m.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Any

from radcloud.errors import BadRequest, NotFound

SERIES_KEYS = ("modality", "body_part", "series_description")
STUDY_KEYS = ("study_description", "calling_aet")
MATCH_KEYS = SERIES_KEYS + STUDY_KEYS
MAX_STEPS = 10
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _glob(pattern: str, value: Any) -> bool:
    return fnmatch.fnmatchcase(str(value or "").upper(), str(pattern).upper())


def matching_series(rule: Mapping[str, Any], arrival: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The series of ``arrival`` that ``rule`` matches ([] when the rule does not apply)."""
    if not rule.get("enabled", True):
        return []
    match = rule.get("match") or {}
    for key in STUDY_KEYS:
        if key in match and not _glob(match[key], arrival.get(key)):
            return []
    return [s for s in arrival.get("series") or []
            if all(_glob(match[k], s.get(k)) for k in SERIES_KEYS if k in match)]


def route(rules: list[Mapping[str, Any]], arrival: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], list]]:
    """``(rule, matched series)`` for every enabled rule that matches, in the rules' order."""
    out = []
    for rule in rules:
        series = matching_series(rule, arrival)
        if series:
            out.append((rule, series))
    return out


def validate(rule: Any, registry: Any) -> dict[str, Any]:
    """Check a rule before it is saved; returns it normalised (params with defaults filled).

    ``registry`` is a :class:`radcloud.plugins.Registry` (anything with ``get(name)``).

    Raises:
        BadRequest: the field that is wrong and what to send instead.
    """
    if not isinstance(rule, Mapping):
        raise BadRequest("a routing rule must be an object {name, match, pipeline, enabled}", field="rule")
    name = rule.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadRequest("name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
                         field="name")
    unknown = set(rule) - {"name", "match", "pipeline", "enabled", "description"}
    if unknown:
        raise BadRequest(f"unknown rule field(s) {sorted(unknown)}; a rule has name, match, pipeline, enabled, "
                         "description", field=sorted(unknown)[0])
    match = rule.get("match") or {}
    if not isinstance(match, Mapping):
        raise BadRequest(f"match must be an object of globs over {', '.join(MATCH_KEYS)}", field="match")
    for key, pattern in match.items():
        if key not in MATCH_KEYS:
            raise BadRequest(f"match key {key!r} is not a routing attribute; use {', '.join(MATCH_KEYS)} "
                             "(patient attributes are never routed on)", field=f"match.{key}")
        if not isinstance(pattern, str) or not pattern.strip():
            raise BadRequest(f"match.{key} must be a non-empty glob such as 'CT' or 'CHEST*'", field=f"match.{key}")
    enabled = rule.get("enabled", True)
    if not isinstance(enabled, bool):
        raise BadRequest("enabled must be true or false", field="enabled")
    steps = rule.get("pipeline")
    if not isinstance(steps, list) or not steps:
        raise BadRequest("pipeline must be a non-empty list of steps {plugin, params}", field="pipeline")
    if len(steps) > MAX_STEPS:
        raise BadRequest(f"a pipeline has at most {MAX_STEPS} steps, this one {len(steps)}", field="pipeline")
    checked = []
    for i, step in enumerate(steps, 1):
        where = f"pipeline step {i}"
        if not isinstance(step, Mapping) or not isinstance(step.get("plugin"), str):
            raise BadRequest(f"{where} must be an object {{plugin, params}}", field=f"pipeline[{i - 1}]")
        extra = set(step) - {"plugin", "params"}
        if extra:
            raise BadRequest(f"{where}: unknown field(s) {sorted(extra)}; a step has plugin and params",
                             field=f"pipeline[{i - 1}]")
        try:
            plugin = registry.get(step["plugin"])
            params = plugin.validate(step.get("params") or {})
        except (NotFound, BadRequest) as exc:
            raise BadRequest(f"{where} ({step['plugin']}): {exc.message}", field=f"pipeline[{i - 1}]") from None
        checked.append({"plugin": step["plugin"], "params": params})
    out = {"name": name, "match": dict(match), "pipeline": checked, "enabled": enabled}
    if isinstance(rule.get("description"), str):
        out["description"] = rule["description"][:200]
    return out
