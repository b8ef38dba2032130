"""The plugin registry: ChRIS descriptors, parameter validation, argv.

A plugin is a directory ``plugins/<name>/`` holding ``descriptor.json`` in
ChRIS's format (``CHRIS_docs specs/ChRIS_Plugins.adoc``), its code and a
Dockerfile. radcloud reads the descriptor as CUBE does: parameters are
validated against it (types, required, defaults, unknown names → 400 naming
the parameter) and the command line is built exactly as CUBE/pfcon build
it: ``execshell selfpath/selfexec [options] [inputdir] outputdir``, where a
``store`` option is ``flag value``, ``store_true`` adds ``flag`` when true
and ``store_false`` adds ``flag`` when false.

radcloud extensions live under one optional key so a descriptor stays a
valid ChRIS descriptor::

    "radcloud": {"network": false, "timeout_s": 600, "max_output_bytes": 1073741824}

A plugin that de-identifies declares what it needs from the hospital side::

    "radcloud": {"deid": {"secret_param": "secretEnv", "map_param": "mapDir"}}

Only such a plugin gets the ``deid_secret`` setting (in the environment
variable :data:`DEID_SECRET_ENV`, whose name the runner puts in
``secret_param``) and a private directory for its re-identification map
(in ``map_param``). The runner sets both parameters itself, whatever the
caller sent: a caller who chose the variable could pick a known key, and
one who chose the map dir could put the map into the outputs.

An admin may let such a plugin accept SOP classes it refuses by default
(images that usually carry burned-in text) by listing them in the deployed
descriptor: ``"deid": {..., "allow_param": "allowBurnedIn", "allow_burned_in":
["Secondary Capture Image Storage"]}``. The runner puts the list into
``allow_param`` and, as for the other two, ignores what a caller sent.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from radcloud.core.errors import BadRequest, ConfigError, NotFound
from radcloud.run.sandbox import Limits

log = logging.getLogger(__name__)

PARAM_TYPES = ("bool", "int", "float", "str", "path", "unextpath")
ACTIONS = ("store", "store_true", "store_false")
PLUGIN_TYPES = ("ds", "fs", "ts")
DEID_SECRET_ENV = "RADCLOUD_DEID_SECRET"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_MEM_UNITS = {"": 1, "k": 1000, "ki": 1024, "m": 1000**2, "mi": 1024**2,
              "g": 1000**3, "gi": 1024**3, "t": 1000**4, "ti": 1024**4}


def default_root(environ: Mapping[str, str] | None = None) -> Path:
    """``RADCLOUD_PLUGINS_DIR``, else the repository's ``plugins/``."""
    environ = os.environ if environ is None else environ
    if environ.get("RADCLOUD_PLUGINS_DIR"):
        return Path(environ["RADCLOUD_PLUGINS_DIR"])
    return Path(__file__).resolve().parents[2] / "plugins"


def parse_memory(text: Any) -> int | None:
    """ChRIS memory strings (``"300Mi"``, ``"2Gi"``, ``"512"`` = MiB) → bytes."""
    if text in (None, ""):
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text) * 1024**2  # pfcon's memory_limit is MiB
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KkMmGgTt]i?)?\s*", str(text))
    if not match:
        raise ConfigError(f"memory limit {text!r} is not like '300Mi' or '2Gi'")
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    return int(number * (_MEM_UNITS[unit] if unit else 1024**2))


def parse_cpu(text: Any) -> float | None:
    """ChRIS CPU strings (``"1000m"`` millicores, ``"2"`` cores) → cores."""
    if text in (None, ""):
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(m?)\s*", str(text))
    if not match:
        raise ConfigError(f"cpu limit {text!r} is not like '1000m' or '2'")
    value = float(match.group(1))
    return value / 1000 if match.group(2) else value



def python_argv() -> list[str]:
    """This interpreter, started as this one was: with ``-S`` when this one runs without
    site (localwhisk's isolated images), so a plugin imports from the image's path only."""
    return [sys.executable, "-S"] if sys.flags.no_site else [sys.executable]

class Plugin:
    """One plugin directory and its descriptor."""

    def __init__(self, directory: Path, descriptor: dict[str, Any]) -> None:
        problems = check_descriptor(descriptor)
        if problems:
            raise ConfigError(f"plugin {directory.name}: bad descriptor: {'; '.join(problems)}")
        self.dir = directory
        self.descriptor = descriptor
        self.name: str = descriptor["name"]
        self.version: str = str(descriptor.get("version", ""))
        self.type: str = descriptor.get("type", "ds")
        self.parameters: list[dict[str, Any]] = descriptor.get("parameters", [])
        self._by_key: dict[str, dict[str, Any]] = {}
        for p in self.parameters:
            self._by_key[p["name"]] = p
            self._by_key.setdefault(p["flag"].lstrip("-"), p)

    @classmethod
    def load(cls, directory: Path) -> "Plugin":
        path = directory / "descriptor.json"
        try:
            descriptor = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"plugin {directory.name}: cannot read descriptor.json: {exc}") from None
        return cls(directory, descriptor)

    # -- parameters -------------------------------------------------------
    def validate(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Check caller params; return ``{name: value}`` with defaults filled.

        Keys may be the parameter ``name`` or its flag without dashes.

        Raises:
            BadRequest: unknown name, wrong type or missing required; ``field``
            is the parameter's name.
        """
        if params is not None and not isinstance(params, Mapping):  # dict("x") would be a 500
            raise BadRequest(f"params must be an object of plugin parameters, not {type(params).__name__}",
                             field="params")
        params = dict(params or {})
        values: dict[str, Any] = {}
        for key, raw in params.items():
            spec = self._by_key.get(str(key))
            if spec is None:
                known = ", ".join(p["name"] for p in self.parameters) or "none"
                raise BadRequest(f"unknown parameter {key!r} for plugin {self.name} (known: {known})",
                                 field=str(key))
            if spec["name"] in values:
                raise BadRequest(f"parameter {spec['name']!r} given twice", field=spec["name"])
            values[spec["name"]] = _coerce(spec, raw)
        for spec in self.parameters:
            if spec["name"] in values:
                continue
            if not spec.get("optional", True):
                raise BadRequest(f"missing required parameter {spec['name']!r} ({spec['flag']}) "
                                 f"for plugin {self.name}", field=spec["name"])
            if spec.get("default") is not None:
                values[spec["name"]] = spec["default"]
        return values

    def args(self, values: Mapping[str, Any], inputdir: str | None = None) -> list[str]:
        """Options in descriptor order, as CUBE serialises a plugin instance.

        As pfcon does with ``args_path_flags``, the value of a ``path`` or
        ``unextpath`` option becomes the input dir the data was staged in.
        """
        out: list[str] = []
        for spec in self.parameters:
            if spec["name"] not in values or values[spec["name"]] is None:
                continue
            value, action = values[spec["name"]], spec.get("action", "store")
            if action == "store_true":
                if value:
                    out.append(spec["flag"])
            elif action == "store_false":
                if not value:
                    out.append(spec["flag"])
            elif spec["type"] in ("path", "unextpath") and inputdir is not None:
                out += [spec["flag"], inputdir]
            else:
                out += [spec["flag"], _text(value)]
        return out

    def argv(self, values: Mapping[str, Any], inputdir: str | None, outputdir: str) -> list[str]:
        """The full command: ``prog [options] [inputdir] outputdir``."""
        dirs = [outputdir] if self.type == "fs" or inputdir is None else [inputdir, outputdir]
        return [*self.program(), *self.args(values, inputdir), *dirs]

    def program(self) -> list[str]:
        """``[execshell, selfpath/selfexec]`` resolved for this machine.

        A relative ``selfpath`` is relative to the plugin dir; a Python
        ``execshell`` becomes this interpreter (:func:`python_argv`), so plugins
        run in radcloud's environment (in production the image's python is that
        interpreter).
        """
        d = self.descriptor
        selfpath = d.get("selfpath") or "."
        exe = d.get("selfexec") or self.name
        path = Path(selfpath, exe) if os.path.isabs(selfpath) else self.dir / selfpath / exe
        shell = d.get("execshell") or ""
        if not shell:
            return [str(path)]
        if os.path.basename(shell).startswith("python"):
            return [*python_argv(), str(path)]
        return [shell, str(path)]

    def display_argv(self, argv: list[str]) -> list[str]:
        """argv for logs: the interpreter shortened to its name."""
        return [os.path.basename(argv[0]), *argv[1:]] if argv else argv

    # -- limits -----------------------------------------------------------
    def limits(self, overrides: Mapping[str, Any] | None = None, *,
               default_timeout_s: float = 300.0) -> Limits:
        """The descriptor's limits, lowered (never raised) by ``overrides``."""
        ext = self.descriptor.get("radcloud") or {}
        limits = Limits(
            timeout_s=float(ext.get("timeout_s", default_timeout_s)),
            memory_bytes=parse_memory(self.descriptor.get("max_memory_limit")),
            cpus=parse_cpu(self.descriptor.get("max_cpu_limit")),
            network=bool(ext.get("network", False)),
        )
        for key in ("max_output_bytes", "max_output_files"):
            if key in ext:
                setattr(limits, key, int(ext[key]))
        for key, value in (overrides or {}).items():
            if not hasattr(limits, key) or key == "network":
                raise BadRequest(f"unknown shard limit {key!r}", field=key)
            current = getattr(limits, key)
            value = float(value) if key in ("timeout_s", "cpus") else int(value)
            setattr(limits, key, value if current is None else min(current, value))
        return limits

    @property
    def deid(self) -> dict[str, str] | None:
        """``{"secret_param", "map_param"}`` when the plugin needs the de-identification
        secret and a hospital-side map dir (see the module docstring), else None."""
        deid = (self.descriptor.get("radcloud") or {}).get("deid")
        return dict(deid) if isinstance(deid, dict) else None

    def summary(self) -> dict[str, Any]:
        d = self.descriptor
        return {k: d.get(k) for k in ("name", "version", "title", "category", "type",
                                      "description", "max_memory_limit", "max_cpu_limit")}


class Registry:
    """Plugins discovered under one root directory (one subdir each)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self._plugins: dict[str, Plugin] | None = None
        self.broken: dict[str, str] = {}

    def _discover(self) -> dict[str, Plugin]:
        if self._plugins is None:
            found: dict[str, Plugin] = {}
            for child in sorted(self.root.iterdir()) if self.root.is_dir() else []:
                if not (child / "descriptor.json").is_file():
                    continue
                try:
                    plugin = Plugin.load(child)
                except ConfigError as exc:
                    log.warning("skipping plugin: %s", exc.message)
                    self.broken[child.name] = exc.message
                    continue
                found[plugin.name] = plugin
            self._plugins = found
        return self._plugins

    def names(self) -> list[str]:
        return sorted(self._discover())

    def list(self) -> list[dict[str, Any]]:
        return [p.summary() for _, p in sorted(self._discover().items())]

    def get(self, name: str) -> Plugin:
        plugins = self._discover()
        if name not in plugins:
            known = ", ".join(sorted(plugins)) or "none"
            raise NotFound(f"no plugin named {name!r} (available: {known})", field="plugin")
        return plugins[name]

    def show(self, name: str) -> dict[str, Any]:
        return self.get(name).descriptor


def ui_words(descriptor: Mapping[str, Any]) -> dict[str, Any]:
    """The plain words the web UI shows for a plugin: ``{title, summary, parameters: {name: {label, help}}}``.

    From the descriptor's ``radcloud.ui`` block (a radcloud extension; ChRIS
    ignores the ``radcloud`` key); the descriptor's own title and description
    stand in where it says nothing.
    """
    rc = descriptor.get("radcloud")
    ui = rc.get("ui") if isinstance(rc, Mapping) and isinstance(rc.get("ui"), Mapping) else {}
    params = ui.get("parameters") if isinstance(ui.get("parameters"), Mapping) else {}
    return {"title": ui.get("title") or descriptor.get("title") or descriptor.get("name") or "",
            "summary": ui.get("summary") or descriptor.get("description") or "",
            "parameters": {k: dict(v) for k, v in params.items() if isinstance(v, Mapping)}}


def _check_ui(ui: Any, names: set[str]) -> list[str]:
    """Problems with ``radcloud.ui`` (the plain words), naming the field."""
    if not isinstance(ui, Mapping):
        return ["radcloud.ui must be an object {title, summary, parameters}"]
    problems = [f"radcloud.ui.{k} must be text" for k in ("title", "summary")
                if k in ui and not (isinstance(ui[k], str) and ui[k].strip())]
    params = ui.get("parameters", {})
    if not isinstance(params, Mapping):
        return problems + ["radcloud.ui.parameters must be an object {name: {label, help}}"]
    for name, words in params.items():
        if name not in names:
            problems.append(f"radcloud.ui.parameters.{name} names no parameter of the plugin")
        elif not isinstance(words, Mapping) or not all(isinstance(words.get(k), str) and words[k].strip()
                                                        for k in ("label", "help")):
            problems.append(f"radcloud.ui.parameters.{name} must have a label and a help text")
    return problems


def check_descriptor(d: Any) -> list[str]:
    """Problems with a descriptor, as messages naming the field ([] = fine)."""
    if not isinstance(d, dict):
        return ["descriptor is not a JSON object"]
    problems = []
    if not isinstance(d.get("name"), str) or not _NAME_RE.match(d["name"]):
        problems.append("name must be letters, digits, '.', '_' or '-'")
    if d.get("type", "ds") not in PLUGIN_TYPES:
        problems.append(f"type must be one of {PLUGIN_TYPES}")
    params = d.get("parameters", [])
    if not isinstance(params, list):
        return problems + ["parameters must be a list"]
    seen: set[str] = set()
    for i, p in enumerate(params):
        where = f"parameters[{i}]"
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not p["name"]:
            problems.append(f"{where}.name missing")
            continue
        where = f"parameter {p['name']!r}"
        if p["name"] in seen:
            problems.append(f"{where} defined twice")
        seen.add(p["name"])
        if p.get("type") not in PARAM_TYPES:
            problems.append(f"{where}: type must be one of {PARAM_TYPES}")
        if not isinstance(p.get("flag"), str) or not p["flag"].startswith("-"):
            problems.append(f"{where}: flag must start with '-'")
        action = p.get("action", "store")
        if action not in ACTIONS:
            problems.append(f"{where}: action must be one of {ACTIONS}")
        elif action != "store" and p.get("type") != "bool":
            problems.append(f"{where}: {action} needs type bool")
    deid = (d.get("radcloud") or {}).get("deid") if isinstance(d.get("radcloud"), dict) else None
    if deid is not None:
        if not isinstance(deid, dict):
            problems.append("radcloud.deid must be an object {secret_param, map_param}")
        else:
            for key in ("secret_param", "map_param") + (("allow_param",) if "allow_param" in deid else ()):
                if deid.get(key) not in seen:
                    problems.append(f"radcloud.deid.{key} must name one of the plugin's parameters")
            allow = deid.get("allow_burned_in", [])
            if not isinstance(allow, list) or not all(isinstance(x, str) and x for x in allow):
                problems.append("radcloud.deid.allow_burned_in must be a list of SOP class names or UIDs")
    if isinstance(d.get("radcloud"), dict) and "ui" in d["radcloud"]:
        problems.extend(_check_ui(d["radcloud"]["ui"], seen))
    return problems


def _coerce(spec: dict[str, Any], raw: Any) -> Any:
    name, kind = spec["name"], spec["type"]

    def bad(what: str) -> BadRequest:
        return BadRequest(f"parameter {name!r} must be {what}, got {type(raw).__name__} {_short(raw)}",
                          field=name)

    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            return raw.strip().lower() in ("true", "1", "yes")
        raise bad("a bool (true/false)")
    if kind == "int":
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        if isinstance(raw, str) and re.fullmatch(r"\s*[-+]?\d+\s*", raw):
            return int(raw)
        raise bad("an integer")
    if kind == "float":
        if isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw):
            return float(raw)
        if isinstance(raw, str):
            try:
                value = float(raw)
            except ValueError:
                raise bad("a number") from None
            if math.isfinite(value):
                return value
        raise bad("a finite number")
    if not isinstance(raw, str):
        raise bad("a string")
    if "\x00" in raw or len(raw) > 4096:
        raise bad("a string without NUL, at most 4096 characters")
    if kind in ("path", "unextpath"):
        for part in raw.split(","):
            if part.startswith("/") or ".." in part.split("/"):
                raise bad("relative paths without '..'")
    return raw


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return str(value)


def _short(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


def main(argv: list[str] | None = None) -> int:
    """``python -m radcloud.run.registry [--root DIR] list | show NAME | argv NAME [k=v ...]``.

    For plugin authors: check a descriptor and see the exact command line
    a shard would run (``argv`` validates the parameters as dispatch does).
    """
    import argparse

    ap = argparse.ArgumentParser(prog="python -m radcloud.run.registry")
    ap.add_argument("--root", default=None, help="plugins directory (default: $RADCLOUD_PLUGINS_DIR or plugins/)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    sub.add_parser("show").add_argument("name")
    cmd_argv = sub.add_parser("argv")
    cmd_argv.add_argument("name")
    cmd_argv.add_argument("params", nargs="*", help="name=value")
    a = ap.parse_args(argv)
    registry = Registry(a.root)
    try:
        if a.cmd == "list":
            for item in registry.list():
                print(f"{item['name']:16} {item['version']:14} {item['type']}  {item['title']}")
            for name, problem in registry.broken.items():
                print(f"{name:16} BROKEN  {problem}", file=sys.stderr)
            return 1 if registry.broken else 0
        if a.cmd == "show":
            print(json.dumps(registry.show(a.name), indent=2))
            return 0
        plugin = registry.get(a.name)
        params = dict(p.split("=", 1) for p in a.params)
        print(" ".join(plugin.argv(plugin.validate(params), "<inputdir>", "<outputdir>")))
        return 0
    except (BadRequest, NotFound, ConfigError) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
