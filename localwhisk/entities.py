"""Actions and packages: validate PUT bodies and shape the documents OpenWhisk returns.

Follows CTRL/Actions.scala and ENT/WhiskAction.scala: the server decides
``exec.binary`` (``isBinaryCode``), adds ``provide-api-key:false`` on create and
always ``exec=<kind>`` (``amendAnnotations``), an update keeps the fields the
body leaves out and bumps the patch version, limits are range-checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from typing import Any

from localwhisk.errors import bad_request

DEFAULT_KIND = "python:3.10"
PYTHON_KINDS = ("python:3.10", "python:3.11", "python:3.12")
KINDS = (*PYTHON_KINDS, "blackbox", "sequence")
DEFAULT_LIMITS = {"timeout": 60000, "memory": 256, "logs": 10, "concurrency": 1}
# (min, max, unit) per limit, OpenWhisk's defaults (application.conf).
LIMIT_RANGES = {
    "timeout": (100, 300000, "milliseconds"),
    "memory": (128, 512, "MB"),
    "logs": (0, 10, "MB"),
    "concurrency": (1, 1, ""),
}
_LIMIT_NAMES = {"timeout": "Timeout", "memory": "Memory", "logs": "Log size", "concurrency": "Concurrency"}
# ``instances``: how many containers the action may have at once (OpenWhisk 2.0's
# InstanceConcurrencyLimit, docs/reference.md "Per action max instance concurrency").
# Optional, absent by default (then the namespace's concurrency limit bounds it);
# 0 or more, at most the namespace's concurrency limit (Actions.scala
# checkInstanceConcurrencyLessThanNamespaceConcurrency). An update without it keeps the old one.
MIN_INSTANCES = 0


def now_ms() -> int:
    return int(time.time() * 1000)


def runtimes_manifest() -> dict[str, Any]:
    """The ``runtimes`` block of ``GET /`` that wskdeploy reads to validate kinds."""
    python = [
        {"kind": k, "image": f"openwhisk/action-python-v{k.split(':')[1]}:nightly",
         "default": k == DEFAULT_KIND, "deprecated": False, "attached": False, "requireMain": False}
        for k in PYTHON_KINDS
    ]
    blackbox = [{"kind": "blackbox", "image": "openwhisk/dockerskeleton:nightly", "default": True,
                 "deprecated": False, "attached": False, "requireMain": False}]
    return {"python": python, "blackbox": blackbox}


def is_binary_code(code: Any) -> bool:
    """OpenWhisk's ``isBinaryCode``: non-empty, length multiple of 4, strict base64."""
    if not isinstance(code, str):
        return False
    t = code.strip()
    if not t or len(t) % 4:
        return False
    try:
        base64.b64decode(t, validate=True)
        return True
    except (binascii.Error, ValueError):
        return False


# -- key/value lists ----------------------------------------------------------

def check_kv_list(value: Any, field: str) -> list[dict[str, Any]]:
    """Validate ``[{"key": str, "value": any}]`` (parameters or annotations)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(p, dict) and isinstance(p.get("key"), str) for p in value):
        raise bad_request(f"The request content was malformed:\n'{field}' must be a list of {{key, value}}.")
    out = []
    for p in value:
        item = {"key": p["key"], "value": p.get("value")}
        if p.get("init"):
            item["init"] = True
        out.append(item)
    return out


def kv_merge(*lists: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge key/value lists; a later key replaces an earlier one in place."""
    merged: dict[str, dict[str, Any]] = {}
    for lst in lists:
        for p in lst:
            merged[p["key"]] = p
    return list(merged.values())


def annotation(entity: dict[str, Any], key: str, default: Any = None) -> Any:
    for a in entity.get("annotations") or []:
        if a["key"] == key:
            return a.get("value")
    return default


def truthy(value: Any) -> bool:
    """OpenWhisk's ``isTruthy``: JSON true, non-zero numbers, non-empty strings other than 'false'."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        return value != "" and value.lower() != "false"
    return False


# -- actions ------------------------------------------------------------------

def check_limits(limits: Any, base: dict[str, int], namespace_limit: int | None = None) -> dict[str, int]:
    if limits is None:
        return dict(base)
    if not isinstance(limits, dict):
        raise bad_request("The request content was malformed:\n'limits' must be an object.")
    out = dict(base)
    for name, (lo, hi, unit) in LIMIT_RANGES.items():
        if limits.get(name) is None:
            continue
        v = limits[name]
        if not isinstance(v, int) or isinstance(v, bool):
            raise bad_request(f"The request content was malformed:\nlimits.{name} must be an integer.")
        label = f"{_LIMIT_NAMES[name]} {v} {unit}".rstrip()
        if v < lo:
            raise bad_request(f"{label} below allowed threshold of {lo} {unit}.".replace("  ", " "))
        if v > hi:
            raise bad_request(f"{label} exceeds allowed threshold of {hi} {unit}.".replace("  ", " "))
        out[name] = v
    if limits.get("instances") is not None:
        out["instances"] = check_instances(limits["instances"], namespace_limit)
    return out


def check_instances(v: Any, namespace_limit: int | None) -> int:
    """``limits.instances`` as OpenWhisk's controller checks it (InstanceConcurrencyLimit, Actions.scala)."""
    if not isinstance(v, int) or isinstance(v, bool):
        raise bad_request("The request content was malformed:\ninstance concurrency limit must be whole number")
    if v < MIN_INSTANCES:
        raise bad_request("The request content was malformed:\n"
                          f"Action container concurrency must be greater than or equal to {MIN_INSTANCES}.")
    if namespace_limit is not None and v > namespace_limit:
        raise bad_request(f"Max action instance concurrency must not exceed your namespace concurrency of "
                          f"{namespace_limit}.")
    return v


def check_exec(exec_: Any) -> dict[str, Any]:
    """Validate ``exec`` and return its stored form (server-decided ``binary``)."""
    if not isinstance(exec_, dict):
        raise bad_request("The request content was malformed:\n'exec' must be an object.")
    kind = exec_.get("kind")
    if kind == "python:default":
        kind = DEFAULT_KIND
    if kind not in KINDS:
        raise bad_request(f"kind '{kind}' not in {list(KINDS)}")
    if kind == "sequence":
        comps = exec_.get("components")
        if not isinstance(comps, list) or not comps or not all(isinstance(c, str) for c in comps):
            raise bad_request("The request content was malformed:\nsequence 'components' must be a non-empty list of names.")
        return {"kind": "sequence", "components": list(comps)}
    code = exec_.get("code")
    if kind == "blackbox":
        if not isinstance(exec_.get("image"), str) or not exec_["image"]:
            raise bad_request("The request content was malformed:\nblackbox 'image' is required.")
    if code is not None and not isinstance(code, str):
        raise bad_request("The request content was malformed:\n'code' must be a string.")
    if kind != "blackbox" and not code:
        raise bad_request("The request content was malformed:\n'code' is required.")
    out: dict[str, Any] = {"kind": kind, "code": code or "", "binary": is_binary_code(code)}
    if kind == "blackbox":
        out["image"] = exec_["image"]
    if exec_.get("main"):
        out["main"] = str(exec_["main"])
    return out


def build_action(namespace: str, package: str | None, name: str, body: dict[str, Any],
                 existing: dict[str, Any] | None, *, namespace_limit: int | None = None) -> dict[str, Any]:
    """Return the action document for a PUT (create when ``existing`` is None)."""
    if "exec" in body and body["exec"] is not None:
        exec_ = check_exec(body["exec"])
    elif existing is not None:
        exec_ = existing["exec"]
    else:
        raise bad_request("exec undefined")
    params = check_kv_list(body.get("parameters"), "parameters") if "parameters" in body else None
    annots = check_kv_list(body.get("annotations"), "annotations") if "annotations" in body else None
    if existing is None:
        # amendAnnotations(create=true): provide-api-key:false first so the user's value wins.
        annotations = kv_merge([{"key": "provide-api-key", "value": False}], annots or [],
                               [{"key": "exec", "value": exec_["kind"]}])
        version = str(body.get("version") or "0.0.1")
        limits = check_limits(body.get("limits"), DEFAULT_LIMITS, namespace_limit)
    else:
        annotations = kv_merge(annots if annots is not None else existing["annotations"],
                               [{"key": "exec", "value": exec_["kind"]}])
        version = up_patch(existing.get("version", "0.0.1"))
        limits = check_limits(body.get("limits"), existing["limits"], namespace_limit)
    if params is None:
        params = existing["parameters"] if existing else []
    return {
        "namespace": f"{namespace}/{package}" if package else namespace,
        "name": name,
        "version": version,
        "publish": bool(body.get("publish", existing.get("publish", False) if existing else False)),
        "exec": exec_,
        "parameters": params,
        "annotations": annotations,
        "limits": limits,
        "updated": now_ms(),
    }


def action_summary(doc: dict[str, Any]) -> dict[str, Any]:
    """The list form: no code, ``exec`` reduced to ``binary``."""
    return {
        "namespace": doc["namespace"], "name": doc["name"], "version": doc["version"],
        "publish": doc["publish"], "annotations": doc["annotations"], "limits": doc["limits"],
        "exec": {"binary": bool(doc["exec"].get("binary", False))}, "updated": doc["updated"],
    }


def without_code(doc: dict[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    out["exec"] = {k: v for k, v in doc["exec"].items() if k != "code"}
    return out


def code_digest(doc: dict[str, Any]) -> str:
    """Identity of a code version: warm containers are reused only for the same digest."""
    raw = json.dumps([doc["exec"], doc["version"], doc["updated"],
                      [p for p in doc["parameters"] if p.get("init")]], sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def up_patch(version: str) -> str:
    parts = (version.split(".") + ["0", "0", "0"])[:3]
    try:
        return f"{int(parts[0])}.{int(parts[1])}.{int(parts[2]) + 1}"
    except ValueError:
        return "0.0.1"


# -- packages -----------------------------------------------------------------

def build_package(namespace: str, name: str, body: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
    params = check_kv_list(body.get("parameters"), "parameters") if "parameters" in body else None
    annots = check_kv_list(body.get("annotations"), "annotations") if "annotations" in body else None
    if body.get("binding"):
        raise bad_request("Package bindings are not supported by localwhisk.")
    return {
        "namespace": namespace,
        "name": name,
        "version": up_patch(existing["version"]) if existing else str(body.get("version") or "0.0.1"),
        "publish": bool(body.get("publish", existing.get("publish", False) if existing else False)),
        "parameters": params if params is not None else (existing["parameters"] if existing else []),
        "annotations": annots if annots is not None else (existing["annotations"] if existing else []),
        "binding": {},
        "updated": now_ms(),
    }


def package_summary(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc[k] for k in ("namespace", "name", "version", "publish", "annotations", "binding", "updated")}
