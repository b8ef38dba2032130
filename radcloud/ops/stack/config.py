"""Render the services' configuration files from the Jinja2 templates.

Each function returns the text (unit-tested as such); :func:`write_all`
puts the files in the state directory, mode 0600 since they hold secrets.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from radcloud.ops.stack import weed
from radcloud.ops.stack.errors import StackError
from radcloud.ops.stack.install import OHIF_BUILD, ORTHANC_PLUGINS_DIR, ohif_built
from radcloud.ops.stack.ports import Ports
from radcloud.ops.stack.state import ORTHANCS, SLURM_SERVICES, TEST_AET, StateDir, write_private



@functools.cache
def template(name: str) -> Any:
    """The named template; jinja2 loads on first use, so `stack status`/`down` never pay for it."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("radcloud.ops.stack", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["shell_quote"] = shlex.quote
    return env.get_template(name)

PLUGINS = (str(ORTHANC_PLUGINS_DIR / "libOrthancDicomWeb.so"), str(ORTHANC_PLUGINS_DIR / "libOrthancGdcm.so"))
SERVE_FOLDERS = str(ORTHANC_PLUGINS_DIR / "libServeFolders.so")  # Debian's orthanc package ships it


def ohif_serve_folders(build: Path) -> dict[str, Any] | None:
    """Orthanc's ServeFolders section that serves OHIF's build under its base (``/ohif/``),
    or None when there is no build (no routes.json: `make install` has not run).

    OHIF is a single-page app: a link such as ``/ohif/viewer?StudyInstanceUIDs=...`` must be
    answered with its page, and ServeFolders only serves files, so build.mjs writes the page
    under each route name, without an extension. ServeFolders picks a MIME type from what
    follows the last dot of the whole file path (folder included), so the key that maps
    those files to text/html is computed from the path each one has here.
    """
    meta = ohif_built(build)
    if meta is None:
        return None
    routes = json.loads(meta.read_text())
    extensions = {"jsonc": "application/json", "webapp": "application/x-web-app-manifest+json",
                  "ico": "image/x-icon"}
    for route in routes["routes"]:
        path = f"{build}/{route}"
        extensions[path.rsplit(".", 1)[1].lower() if "." in path else ""] = "text/html"
    return {"Folders": {routes["base"].rstrip("/"): str(build)}, "AllowCache": False, "GenerateETag": True,
            "Extensions": extensions}


def orthanc_ports(name: str, ports: Ports) -> tuple[int, int]:
    """(HTTP, DICOM) ports of the named Orthanc."""
    return getattr(ports, f"{name}_http"), getattr(ports, f"{name}_dicom")


def render_orthanc(name: str, *, state: StateDir, ports: Ports, credentials: Mapping[str, Any],
                   plugins: tuple[str, ...] = PLUGINS, ohif: Path | None = OHIF_BUILD) -> str:
    """orthanc.json for the named instance; every other instance and the test SCP are modalities.
    With OHIF's build (``ohif``, see :func:`ohif_serve_folders`) Orthanc also serves OHIF at /ohif/."""
    http_port, dicom_port = orthanc_ports(name, ports)
    modalities = [{"name": aet, "aet": aet, "port": orthanc_ports(other, ports)[1]}
                  for other, aet in ORTHANCS.items() if other != name]
    modalities.append({"name": TEST_AET, "aet": TEST_AET, "port": ports.test_scp})
    base = state.service_dir(name)
    serve_folders = ohif_serve_folders(ohif) if ohif is not None else None
    if serve_folders is not None:
        plugins = (*plugins, SERVE_FOLDERS)
    return template("orthanc.json.j2").render(
        name=f"radcloud-{name}", aet=ORTHANCS[name], http_port=http_port, dicom_port=dicom_port,
        storage_dir=str(base / "storage"), index_dir=str(base / "index"),
        user=credentials[name]["user"], password=credentials[name]["password"],
        plugins=list(plugins), modalities=modalities, stable_age=stable_age(), serve_folders=serve_folders,
    )


def fires_per_minute(environ: Mapping[str, str] | None = None) -> int:
    """The stack's namespace limit on trigger fires per minute (localwhisk enforces it as OpenWhisk
    does; OpenWhisk's default is 60). The arrivals watcher fires once per study, and a modality
    sending a backlog sends hundreds a minute: an operator raises the namespace's limit for
    radcloud the same way (docs/deploy.md). ``RADCLOUD_WHISK_FIRES_PER_MINUTE``, default 600."""
    return _int_env(environ, "RADCLOUD_WHISK_FIRES_PER_MINUTE", 600, 100000, "fires")


def stable_age(environ: Mapping[str, str] | None = None) -> int:
    """Orthanc's StableAge (s): how long a study receives nothing before Orthanc calls it stable
    (radcloud.arrivals.watch routes it then). ``RADCLOUD_ORTHANC_STABLE_AGE``, default 5."""
    return _int_env(environ, "RADCLOUD_ORTHANC_STABLE_AGE", 5, 3600, "seconds")


def _int_env(environ: Mapping[str, str] | None, name: str, default: int, most: int, unit: str) -> int:
    environ = os.environ if environ is None else environ
    raw = environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= most:
        raise StackError(f"{name}={raw!r} is not a number of {unit} from 1 to {most}")
    return value


def render_s3_identities(credentials: Mapping[str, Any]) -> str:
    return template("s3.json.j2").render(
        access_key=credentials["s3"]["access_key"], secret_key=credentials["s3"]["secret_key"])


def render_weed_security(*, state: StateDir, credentials: Mapping[str, Any]) -> str:
    """SeaweedFS's security.toml: JWT keys from the credentials, the stack's TLS files."""
    tls = weed.ensure_tls(weed_tls_dir(state))
    return template("weed-security.toml.j2").render(keys=credentials["weed"], tls=tls)


def weed_tls_dir(state: StateDir) -> Path:
    return state.service_dir("s3") / "tls"


def render_redis(*, state: StateDir, ports: Ports, credentials: Mapping[str, Any]) -> str:
    return template("redis.conf.j2").render(
        port=ports.redis, data_dir=str(state.service_dir("redis")),
        password=credentials["redis"]["password"])


def render_whisk_images(*, state: StateDir, ports: Ports, credentials: Mapping[str, Any]) -> str:
    """localwhisk's images file: each manifest image → this venv + checkout + the stack's env."""
    from radcloud.ops.deploy import local_images
    from radcloud.ops.stack.endpoints import Endpoints

    env = Endpoints.from_state(state, ports, dict(credentials)).env()
    return json.dumps(local_images(env), indent=2) + "\n"


def render_env(env: Mapping[str, str], path: Path) -> str:
    return template("radcloud.env.j2").render(env=env, path=str(path))


def config_path(state: StateDir, service: str) -> Path:
    """Where the service's rendered config lives."""
    if service in SLURM_SERVICES:
        return state.service_dir("slurm") / "slurm.conf"
    names = {"redis": "redis.conf", "s3": "s3.json", "whisk": "images.json"}
    return state.service_dir(service) / names.get(service, "orthanc.json")


def write_service_config(service: str, *, state: StateDir, ports: Ports,
                         credentials: Mapping[str, Any]) -> Path:
    """Render and write one service's config (and create its data dirs)."""
    if service == "arrivals":  # configured through its environment (services.arrivals_service)
        return state.root
    if service in SLURM_SERVICES:
        from radcloud.ops.stack import slurm

        path = slurm.write_config(service, state=state, ports=ports)
        slurm.ensure_token(state)
        return path
    path = config_path(state, service)
    if service in ORTHANCS:
        text = render_orthanc(service, state=state, ports=ports, credentials=credentials)
        for sub in ("storage", "index"):
            (state.service_dir(service) / sub).mkdir(parents=True, exist_ok=True)
    elif service == "redis":
        text = render_redis(state=state, ports=ports, credentials=credentials)
    elif service == "s3":
        text = render_s3_identities(credentials)
        (state.service_dir("s3") / "data").mkdir(parents=True, exist_ok=True)
        (state.log_dir / "s3").mkdir(parents=True, exist_ok=True)
        # weed reads security.toml from -config_dir (see services.weed_argv).
        write_private(state.service_dir("s3") / "security.toml",
                      render_weed_security(state=state, credentials=credentials))
    elif service == "whisk":
        text = render_whisk_images(state=state, ports=ports, credentials=credentials)
    else:
        raise ValueError(f"unknown service {service!r}")
    write_private(path, text)
    return path
