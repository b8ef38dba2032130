"""wskdeploy manifests (ref §7): parse, interpolate, validate into a deploy plan.

Reads the wskdeploy grammar subset radcloud uses — ``project``/``packages``,
``inputs`` (plain or ``{type, value|default}``), actions with ``function``
(file, or directory zipped with ``include``/``exclude``), ``runtime``/``kind``,
``main``, ``docker``/``native``, ``web``, ``limits``, ``annotations``, and
``sequences``, ``triggers`` (with ``inputs``, ``annotations`` and ``feed``)
and ``rules`` (``trigger``, ``action``) — and produces the REST bodies ``wskclient.apply`` PUTs. Paths
are relative to the manifest's directory, as in wskdeploy. Overrides: ``--param``
beats the deployment file, which beats the manifest. Errors use wskdeploy's
wording so a manifest that fails here fails the same way there.
"""

from __future__ import annotations

import base64
import fnmatch
import io
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

DEFAULT_KINDS = ("python:3.10", "python:3.11", "python:3.12", "blackbox")
SKELETON_IMAGE = "openwhisk/dockerskeleton"
_VAR = re.compile(r"\$\$\{(\w+)\}|\$\{(\w+)\}|\$(\w+)")


class ManifestError(Exception):
    """The manifest cannot be deployed; the message says what and where."""


@dataclass
class Entity:
    kind: str                     # "package" | "action" | "sequence" | "trigger" | "rule"
    path: str                     # "pkg", "pkg/name" or "name" (package "default"); triggers/rules: "name"
    body: dict[str, Any]
    feed: str | None = None       # a trigger's feed action ("/whisk.system/alarms/alarm")
    feed_params: dict[str, Any] = field(default_factory=dict)  # sent with the feed's CREATE


@dataclass
class Plan:
    packages: list[Entity] = field(default_factory=list)
    actions: list[Entity] = field(default_factory=list)
    sequences: list[Entity] = field(default_factory=list)
    triggers: list[Entity] = field(default_factory=list)
    rules: list[Entity] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    credentials: dict[str, str] = field(default_factory=dict)  # apihost/auth/namespace of the deployment file


def interpolate(value: Any, environ: Mapping[str, str], warnings: list[str] | None = None) -> Any:
    """``$VAR`` and ``${VAR}`` from the environment; ``$${VAR}`` stays a literal ``${VAR}``."""
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(1):
            return "${" + m.group(1) + "}"
        name = m.group(2) or m.group(3)
        if name not in environ and warnings is not None:
            warnings.append(f"The environment variable [{name}] is not set; using an empty value.")
        return environ.get(name, "")

    return _VAR.sub(sub, value)


def _typed(spec: Any, environ: Mapping[str, str], warnings: list[str]) -> Any:
    """An input value: plain, or the ``{type, description, required, value|default}`` form."""
    if isinstance(spec, dict) and spec and set(spec) <= {"type", "description", "required", "value", "default"}:
        raw = spec.get("value", spec.get("default"))
        value = interpolate(raw, environ, warnings)
        if value in ("", None) and "default" in spec:  # `value: ${UNSET}` falls back to the default
            value = interpolate(spec["default"], environ, warnings)
        kind = spec.get("type")
        if isinstance(value, str) and kind in ("integer", "float", "boolean"):
            value = _convert(value, kind)
        return value
    return interpolate(spec, environ, warnings)


def _convert(value: str, kind: str | None) -> Any:
    try:
        if kind == "integer":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "boolean":
            return value.strip().lower() in ("true", "yes", "1")
    except ValueError:
        raise ManifestError(f"The value [{value}] is not a valid {kind}.") from None
    return value


def _kv(mapping: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [{"key": str(k), "value": v} for k, v in (mapping or {}).items()]


def _packages(doc: Any, where: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ManifestError(f"The file [{where}] is not a YAML map.")
    root = doc.get("project", doc)
    if not isinstance(root, dict):
        raise ManifestError(f"The mandatory key [project] is not a map in [{where}].")
    packages = root.get("packages")
    if packages is None and "package" in root:  # the old single-package form
        pkg = root["package"]
        packages = {pkg.get("name", "default"): pkg}
    return packages or {}


def load_plan(manifest: Path, deployment: Path | None = None, params: Mapping[str, Any] | None = None,
              environ: Mapping[str, str] | None = None, kinds: tuple[str, ...] = DEFAULT_KINDS) -> Plan:
    """Parse and validate; returns every REST body to PUT. Raises ManifestError."""
    environ = os.environ if environ is None else environ
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"Manifest file not found at path [{manifest}].")
    mdoc = yaml.safe_load(manifest.read_text()) or {}
    packages = _packages(mdoc, str(manifest))
    plan = Plan()
    if not packages:
        plan.warnings.append(f"The manifest file [{manifest}] contained no packages.")
    overrides: dict[str, Any] = {}
    if deployment is not None:
        deployment = Path(deployment)
        if not deployment.is_file():
            raise ManifestError(f"Deployment file not found at path [{deployment}].")
        ddoc = yaml.safe_load(deployment.read_text()) or {}
        overrides = _packages(ddoc, str(deployment))
        droot = ddoc.get("project", ddoc) if isinstance(ddoc, dict) else {}
        for key, names in (("apihost", ("apihost", "apiHost")), ("auth", ("credential", "auth")),
                           ("namespace", ("namespace",))):
            for n in names:
                if isinstance(droot, dict) and droot.get(n):
                    plan.credentials[key] = str(interpolate(droot[n], environ))
        for name in overrides:
            if name not in packages:
                plan.warnings.append(f"The package [{name}] in the deployment file was not found in the manifest file.")
    params = dict(params or {})
    base = manifest.parent
    for raw_name, pkg in packages.items():
        pkg = pkg or {}
        name = str(interpolate(raw_name, environ, plan.warnings))
        dep = (overrides.get(raw_name) or overrides.get(name) or {})
        inputs = {k: _typed(v, environ, plan.warnings) for k, v in (pkg.get("inputs") or {}).items()}
        inputs.update({k: interpolate(v, environ, plan.warnings) for k, v in (dep.get("inputs") or {}).items()})
        inputs.update(params)
        if name != "default":
            annotations = {k: interpolate(v, environ, plan.warnings) for k, v in (pkg.get("annotations") or {}).items()}
            plan.packages.append(Entity("package", name, {
                "name": name, "publish": bool(pkg.get("public", False)),
                "parameters": _kv(inputs), "annotations": _kv(annotations)}))
        elif inputs:
            plan.warnings.append("Inputs of package [default] cannot be stored: there is no such package.")
        for aname, action in (pkg.get("actions") or {}).items():
            dep_action = ((dep.get("actions") or {}).get(aname) or {})
            plan.actions.append(_action(name, str(aname), action or {}, dep_action, params, base, environ, kinds, plan))
        for sname, seq in (pkg.get("sequences") or {}).items():
            plan.sequences.append(_sequence(name, str(sname), seq or {}, environ, plan))
        dep_triggers = dep.get("triggers") or {}
        for tname, trig in (pkg.get("triggers") or {}).items():
            plan.triggers.append(_trigger(str(tname), trig or {}, dep_triggers.get(tname) or {}, environ, plan))
        for rname, rule in (pkg.get("rules") or {}).items():
            plan.rules.append(_rule(name, str(rname), rule or {}, environ, plan))
        for unsupported in ("apis", "dependencies"):
            if pkg.get(unsupported):
                plan.warnings.append(f"The [{unsupported}] of package [{name}] are not deployed by localwhisk.")
    return plan


def _entity_path(package: str, name: str) -> str:
    return name if package == "default" else f"{package}/{name}"


def _web_annotations(web: Any) -> dict[str, Any]:
    """wskdeploy's webaction.go: true/yes -> web-export, final, raw-http:false; raw -> raw-http:true."""
    if web is None:
        return {}
    flag = str(web).strip().lower()
    if flag in ("true", "yes"):
        return {"web-export": True, "final": True, "raw-http": False}
    if flag == "raw":
        return {"web-export": True, "final": True, "raw-http": True}
    if flag in ("false", "no"):
        return {"web-export": False}
    raise ManifestError(f"The value for key [web] is not valid: [{web}] (expected true, yes, raw, false or no).")


def _action(package: str, name: str, spec: dict[str, Any], dep: dict[str, Any], params: Mapping[str, Any],
            base: Path, environ: Mapping[str, str], kinds: tuple[str, ...], plan: Plan) -> Entity:
    runtime = interpolate(spec.get("runtime", spec.get("kind")), environ, plan.warnings)
    function = interpolate(spec.get("function"), environ, plan.warnings)
    docker = interpolate(spec.get("docker"), environ, plan.warnings) or None
    if spec.get("native"):
        docker = docker or SKELETON_IMAGE
    if function and spec.get("code"):
        raise ManifestError(f"Action [{name}] is invalid. It has both code and function specified, "
                            "only one of them is expected.")
    if spec.get("code") is not None:
        if not runtime:
            raise ManifestError(f"Action [{name}] is invalid. It has code specified without any runtime. "
                                "With action source code, runtime is mandatory.")
        code, binary = str(spec["code"]), False
    elif function:
        code, binary = _read_function(base, str(function), name, spec)
    else:
        raise ManifestError(f"The mandatory key [function] is missing for the action [{name}].")
    if docker:
        kind = "blackbox"
    else:
        if not runtime and function and str(function).endswith(".py"):
            runtime = kinds[0] if kinds else "python:3.10"
        if runtime == "python:default":
            runtime = next((k for k in kinds if k.startswith("python:")), "python:3.10")
        if not runtime or runtime not in kinds:
            raise ManifestError(f"Invalid or missing runtime [{runtime or ''}] specified in manifest "
                                f"for the action [{name}].")
        kind = runtime
    exec_: dict[str, Any] = {"kind": kind, "code": code, "binary": binary}
    if docker:
        exec_["image"] = docker
    if spec.get("main"):
        exec_["main"] = str(spec["main"])
    inputs = {k: _typed(v, environ, plan.warnings) for k, v in (spec.get("inputs") or {}).items()}
    inputs.update({k: interpolate(v, environ, plan.warnings) for k, v in (dep.get("inputs") or {}).items()})
    inputs.update({k: v for k, v in params.items() if k in inputs})
    annotations = {k: interpolate(v, environ, plan.warnings) for k, v in (spec.get("annotations") or {}).items()}
    annotations.update(_web_annotations(spec.get("web", spec.get("web-export"))))
    body = {"name": name, "exec": exec_, "parameters": _kv(inputs), "annotations": _kv(annotations),
            "publish": False}
    limits = _limits(spec.get("limits"), name, plan)
    if limits:
        body["limits"] = limits
    return Entity("action", _entity_path(package, name), body)


def _limits(spec: Any, action: str, plan: Plan) -> dict[str, int]:
    out: dict[str, int] = {}
    # ``instances`` is not a wskdeploy key (wskdeploy ignores it): localwhisk's deployer sends
    # it as OpenWhisk 2.0's ``limits.instances`` (docs/localwhisk.md, "Per-action containers").
    for key, field_, lo, hi in (("timeout", "timeout", 100, 300000), ("memorySize", "memory", 128, 512),
                                ("logSize", "logs", 0, 10), ("instances", "instances", 0, 100)):
        if not spec or spec.get(key) is None:
            continue
        value = spec[key]
        if not isinstance(value, int) or isinstance(value, bool):
            plan.warnings.append(f"Invalid action limit [{key}] in manifest is ignored.")
            continue
        if not lo <= value <= hi:
            # wskdeploy only warns; the server enforces its own range (and answers 400).
            plan.warnings.append(f"{key} of limits in manifest should be an integer between {lo} and {hi}.")
        out[field_] = value
    return out


def _read_function(base: Path, function: str, action: str, spec: dict[str, Any]) -> tuple[str, bool]:
    if re.match(r"^https?://", function):
        raise ManifestError(f"Action [{action}] has function pointing to remote directory [{function}], "
                            "such actions are not supported.")
    path = (base / function)
    if not path.exists():
        raise ManifestError(f"File [{path}] of the action [{action}] does not exist.")
    if path.is_dir():
        return base64.b64encode(zip_dir(path, base, spec.get("include"), spec.get("exclude"))).decode(), True
    data = path.read_bytes()
    if path.suffix in (".zip", ".jar"):
        return base64.b64encode(data).decode(), True
    return data.decode("utf-8"), False


def zip_dir(folder: Path, base: Path, include: Any = None, exclude: Any = None) -> bytes:
    """Zip a function directory like wskdeploy: its files at the root, plus ``include``, minus ``exclude``."""
    files: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            files[p.relative_to(folder).as_posix()] = p
    for entry in include or []:
        src, dest = (entry[0], entry[1]) if isinstance(entry, list) and len(entry) > 1 else (
            entry[0] if isinstance(entry, list) else entry, None)
        src_path = base / str(src)
        if src_path.is_dir():
            for p in sorted(src_path.rglob("*")):
                if p.is_file() and "__pycache__" not in p.parts:
                    files[f"{dest or src_path.name}/{p.relative_to(src_path).as_posix()}"] = p
        elif src_path.is_file():
            files[str(dest or src_path.name)] = src_path
        else:
            raise ManifestError(f"File [{src_path}] listed in include does not exist.")
    patterns = [str(e) for e in exclude or []]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for arc, p in files.items():
            if any(fnmatch.fnmatch(arc, pat) or fnmatch.fnmatch(arc.split("/")[0], pat) for pat in patterns):
                continue
            zf.write(p, arc)
    return buf.getvalue()


def _sequence(package: str, name: str, spec: dict[str, Any], environ: Mapping[str, str], plan: Plan) -> Entity:
    raw = spec.get("actions")
    if not raw:
        raise ManifestError(f"The mandatory key [actions] is missing for the sequence [{name}].")
    parts = raw if isinstance(raw, list) else str(raw).split(",")
    components = []
    for part in parts:
        c = str(interpolate(str(part).strip(), environ, plan.warnings))
        if c.startswith("/"):
            components.append(c)
        elif "/" in c:
            components.append(f"/_/{c}")
        else:
            components.append(f"/_/{_entity_path(package, c)}")
    annotations = {k: interpolate(v, environ, plan.warnings) for k, v in (spec.get("annotations") or {}).items()}
    annotations.update(_web_annotations(spec.get("web", spec.get("web-export"))))
    body = {"name": name, "exec": {"kind": "sequence", "components": components},
            "annotations": _kv(annotations), "publish": False}
    return Entity("sequence", _entity_path(package, name), body)


def _trigger(name: str, spec: dict[str, Any], dep: dict[str, Any], environ: Mapping[str, str], plan: Plan) -> Entity:
    """A trigger: ``inputs`` are its parameters, or with ``feed`` the feed's CREATE parameters
    (wskdeploy sends them to the feed, which fires the trigger with what it was configured for)."""
    inputs = {k: _typed(v, environ, plan.warnings) for k, v in (spec.get("inputs") or {}).items()}
    inputs.update({k: interpolate(v, environ, plan.warnings) for k, v in (dep.get("inputs") or {}).items()})
    annotations = {k: interpolate(v, environ, plan.warnings) for k, v in (spec.get("annotations") or {}).items()}
    feed = spec.get("feed", spec.get("source"))  # `source` is wskdeploy's older name
    if feed:
        feed = str(interpolate(feed, environ, plan.warnings))
        feed = feed if feed.startswith("/") else "/" + feed
        annotations["feed"] = feed
        body = {"name": name, "parameters": [], "annotations": _kv(annotations), "publish": False}
        return Entity("trigger", name, body, feed=feed, feed_params=inputs)
    return Entity("trigger", name, {"name": name, "parameters": _kv(inputs), "annotations": _kv(annotations),
                                    "publish": False})


def _rule(package: str, name: str, spec: dict[str, Any], environ: Mapping[str, str], plan: Plan) -> Entity:
    """A rule: ``trigger`` is a namespace's trigger, ``action`` an action of this package (or ``/ns/...``)."""
    for key in ("trigger", "action"):
        if not spec.get(key):
            raise ManifestError(f"The mandatory key [{key}] is missing for the rule [{name}].")
    trigger = str(interpolate(spec["trigger"], environ, plan.warnings)).strip()
    action = str(interpolate(spec["action"], environ, plan.warnings)).strip()
    if not trigger.startswith("/"):
        trigger = f"/_/{trigger}"
    if not action.startswith("/"):
        action = f"/_/{action}" if "/" in action else f"/_/{_entity_path(package, action)}"
    return Entity("rule", name, {"name": name, "trigger": trigger, "action": action})
