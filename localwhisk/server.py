"""The thin HTTP shell: an ASGI app that hands each request to ``Controller.handle``.

Nothing about OpenWhisk lives here. The core blocks (blocking invokes wait
for the action), so requests run on a thread pool; uvicorn serves the app on
127.0.0.1 by default. :func:`serve` wires state dir, credentials, runtime and
controller together, writes ``<state>/.wskprops`` and prints where to connect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localwhisk import auth
from localwhisk.activations import StorePolicy
from localwhisk.api import PAYLOAD_MAX, Controller
from localwhisk.store import Store

log = logging.getLogger(__name__)

DEFAULT_PORT = 3233  # OpenWhisk standalone's port


class App:
    """ASGI adapter. ``workers`` bounds concurrently handled requests (blocking waits included)."""

    def __init__(self, controller: Controller, workers: int = 128) -> None:
        self.controller = controller
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lw-http")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            if size <= PAYLOAD_MAX:  # stop buffering once over the limit: the core answers 413
                chunks.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            name, value = k.decode("latin-1"), v.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        _forward_for(headers, scope.get("client"))
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else scope["path"]
        loop = asyncio.get_running_loop()
        resp = await loop.run_in_executor(self._pool, self.controller.handle, scope["method"], path,
                                          scope["query_string"].decode("latin-1"), headers, b"".join(chunks))
        out = [(k.lower().encode("latin-1"), v.encode("latin-1", "replace")) for k, v in resp.headers]
        out.append((b"content-length", str(len(resp.body)).encode()))
        await send({"type": "http.response.start", "status": resp.status, "headers": out})
        await send({"type": "http.response.body", "body": resp.body})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._pool.shutdown(wait=False, cancel_futures=True)
                # uvicorn re-raises SIGTERM/SIGINT once it has shut down, so serve()'s
                # `finally` never runs on a signal: stop the containers (and remove their
                # memory cgroups) here. Calling it again from serve() is harmless.
                shutdown = getattr(self.controller.runtime, "shutdown", None)
                if shutdown is not None:
                    await asyncio.get_running_loop().run_in_executor(None, shutdown)
                await send({"type": "lifespan.shutdown.complete"})
                return


@dataclass
class ServeConfig:
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_concurrent: int = 30
    prewarm: int = 1
    max_containers: int = 8
    sandbox: str = "auto"
    memory_limits: str = "auto"  # cgroup2 | cgroup1 | watch (runtime/memory.py)
    images: dict[str, dict[str, Any]] = field(default_factory=dict)  # see parse_images
    preload: tuple[str, ...] = ()  # modules every stem cell imports (images add their own)
    store_policy: StorePolicy = field(default_factory=StorePolicy)  # which activation records are kept
    alarm_tick: float = 1.0  # seconds between the alarms feeds' checks (0: no scheduler)
    fires_per_minute: int = 60       # OpenWhisk's limits.triggers.fires.perMinute (per namespace)


IMAGE_KEYS = ("python", "pythonpath", "env", "preload", "prewarm", "files", "leave_out", "isolated")


def parse_images(entries: list[str], files: list[Path]) -> dict[str, dict[str, Any]]:
    """Blackbox image -> local stand-in, for ``localwhisk.runtime.sandbox.ImageSpec``.

    ``entries`` are ``IMAGE=DIR[:DIR...]`` (the directories become the image's
    PYTHONPATH, standing in for what its Dockerfile pip-installed); ``files``
    are JSON/YAML maps ``{image: {python?, pythonpath: [..], env: {..}, preload: [..], prewarm?,
    files?: [[SRC, DEST], ..], leave_out?: [..], isolated?}}``
    (``preload``: modules its stem cells import before they get code; ``prewarm: false``
    starts its stem cells only after its first cold start). ``files`` and ``leave_out``
    describe the image's filesystem like its Dockerfile's ``COPY`` lines and
    ``.dockerignore`` (``localwhisk.runtime.sandbox.ImageView``): localwhisk builds it as a
    folder of links under ``<state>/images/``, and ``{root}`` in ``pythonpath`` and ``env``
    names that folder. ``isolated: true`` runs the interpreter with ``-S``: the action
    imports from ``pythonpath`` and the standard library only, as in its image.
    """
    images: dict[str, dict[str, Any]] = {}
    for f in files:
        text = Path(f).read_text()
        if str(f).endswith((".yaml", ".yml")):
            import yaml
            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{f}: expected a map of image name to {{python, pythonpath, env, preload}}")
        for name, spec in data.items():
            spec = dict(spec or {})
            unknown = set(spec) - set(IMAGE_KEYS)
            if unknown:
                raise ValueError(f"{f}: image {name}: unknown keys {sorted(unknown)} "
                                 f"(expected {', '.join(IMAGE_KEYS)})")
            for key in ("pythonpath", "preload", "files", "leave_out"):
                if not isinstance(spec.get(key, []), list):
                    raise ValueError(f"{f}: image {name}: {key} must be a list, got {spec[key]!r}")
            images[str(name)] = spec
    for entry in entries:
        name, sep, paths = entry.partition("=")
        if not sep or not name:
            raise ValueError(f"--image {entry!r}: expected IMAGE=DIR[:DIR...]")
        images[name] = {"pythonpath": [p for p in paths.split(":") if p]}
    return images


def image_spec(name: str, spec: dict[str, Any], views: Path) -> Any:
    """An ``ImageSpec`` from one entry of :func:`parse_images`; its view (if it has
    ``files``) is built in ``views/<image name>``."""
    from localwhisk.runtime import ImageSpec
    from localwhisk.runtime.sandbox import ImageView, with_view

    image = ImageSpec(python=spec.get("python") or sys.executable,
                      pythonpath=tuple(str(p) for p in spec.get("pythonpath") or ()),
                      env={str(k): str(v) for k, v in (spec.get("env") or {}).items()},
                      preload=tuple(spec.get("preload") or ()),
                      prewarm=bool(spec.get("prewarm", True)),
                      isolated=bool(spec.get("isolated", False)))
    if not spec.get("files"):
        return image
    try:
        files = tuple((str(src), str(dest)) for src, dest in spec["files"])
    except (TypeError, ValueError):
        raise ValueError(f"image {name}: files must be [SOURCE, PATH IN THE IMAGE] pairs") from None
    view = ImageView(files=files, leave_out=tuple(str(p) for p in spec.get("leave_out") or ()))
    return with_view(image, view, views / re.sub(r"[^A-Za-z0-9._-]", "_", name))


def build(config: ServeConfig, api_host: str, runtime: Any = None) -> Controller:
    """Create the state dir, credentials, runtime and controller."""
    state = Path(config.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    key = auth.load_or_create(state)
    if runtime is None:
        from localwhisk.runtime import Runtime
        from localwhisk.runtime.sandbox import DEFAULT_IMAGES

        images = dict(DEFAULT_IMAGES)
        for name, spec in config.images.items():
            images[name] = image_spec(name, spec, state / "images")
        runtime = Runtime(api_host=api_host, state_dir=state, prewarm=config.prewarm,
                          max_containers=config.max_containers, sandbox=config.sandbox, images=images,
                          preload=tuple(config.preload), memory=config.memory_limits)
    return Controller(runtime, Store(state / "localwhisk.db"), auth.Authenticator({auth.DEFAULT_NAMESPACE: key}),
                      max_concurrent=config.max_concurrent, store_policy=config.store_policy,
                      fires_per_minute=config.fires_per_minute)


def write_wskprops(state_dir: Path, api_host: str, key: str, namespace: str = auth.DEFAULT_NAMESPACE) -> Path:
    path = Path(state_dir) / ".wskprops"
    path.write_text(f"APIHOST={api_host}\nAUTH={key}\nNAMESPACE={namespace}\n")
    path.chmod(0o600)
    return path


def serve(config: ServeConfig) -> None:
    """Bind, write ``.wskprops``, print the API host (never the key), serve until SIGINT/SIGTERM."""
    import uvicorn

    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when it sees
    # TCP there, and without it every response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    sock.listen(2048)  # listen before announcing the address, so the first request cannot be refused
    port = sock.getsockname()[1]
    host = f"[{config.host}]" if ":" in config.host else config.host
    api_host = f"http://{host}:{port}"
    controller = build(config, api_host)
    key = controller.auth.key_of(auth.DEFAULT_NAMESPACE) or ""
    props = write_wskprops(config.state_dir, api_host, key)
    if controller.recovered:
        print(f"finished {controller.recovered} activation(s) left in flight by the previous run", flush=True)
    print(f"localwhisk serving on {api_host} (state {config.state_dir}, credentials in {props})", flush=True)
    # The key controls every action and activation: it goes to the 0600 .wskprops only, never
    # to stdout, which ends up in log files (`radcloud stack logs`, CI output).
    print(f"APIHOST={api_host}\nAUTH=*** (in {props})\nNAMESPACE={auth.DEFAULT_NAMESPACE}", flush=True)
    # localwhisk is the edge: the peer is the caller, whatever X-Forwarded-For claims.
    uv_config = uvicorn.Config(App(controller), log_level="warning", access_log=False, proxy_headers=False,
                               http="httptools" if _has("httptools") else "h11", lifespan="on")
    redact_logs([key, key.partition(":")[2]])  # after uvicorn.Config: it installs its own handlers
    server = uvicorn.Server(uv_config)
    if config.alarm_tick > 0:
        controller.alarms.start(config.alarm_tick)
    try:
        server.run(sockets=[sock])
    finally:
        controller.close()
        shutdown = getattr(controller.runtime, "shutdown", None)
        if shutdown is not None:
            shutdown()
        controller.store.close()


class _Redact(logging.Filter):
    """Masks secrets in every record a handler emits (a traceback or a library's message included)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = sorted({x for x in secrets if len(x) >= 8}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        masked, exc = text, record.exc_text or ""
        for secret in self.secrets:
            masked, exc = masked.replace(secret, "***"), exc.replace(secret, "***")
        if masked != text:
            record.msg, record.args = masked, None
        record.exc_text = exc or record.exc_text
        return True


def redact_logs(secrets: list[str]) -> None:
    """Mask ``secrets`` (the namespace key) in whatever the root logger's handlers write."""
    flt = _Redact(secrets)
    loggers = [logging.getLogger(), *(lg for lg in logging.root.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    for handler in {h for lg in loggers for h in lg.handlers}:
        handler.addFilter(flt)


def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def _forward_for(headers: dict[str, str], client: tuple[str, int] | None) -> None:
    """Append the peer to X-Forwarded-For, as OpenWhisk's edge proxy does, so actions see the caller.

    ASGI header names are already lower case."""
    if client:
        claimed = headers.get("x-forwarded-for")
        headers["x-forwarded-for"] = f"{claimed}, {client[0]}" if claimed else client[0]
