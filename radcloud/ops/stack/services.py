"""How each service of the local stack is launched and how its health is checked.

A :class:`Service` is pure description: the argv, the environment, the
ports it will bind and a health probe. Starting and stopping are the
orchestrator's job (:mod:`radcloud.ops.stack.local`); keeping the two apart
lets the argv and port lists be unit-tested without starting anything.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radcloud.ops.stack import config
from radcloud.ops.stack.errors import StackError
from radcloud.ops.stack.install import Binaries
from radcloud.ops.stack.ports import Ports, accepts
from radcloud.ops.stack.state import ORTHANCS, SLURM_SERVICES, StateDir

if TYPE_CHECKING:
    import requests


class NotReady(Exception):
    """The service is not answering yet; the orchestrator keeps polling."""


def probe(url: str, **kwargs: Any) -> requests.Response:
    """GET ``url`` for a health check (2 s); a connection that fails is :class:`NotReady`."""
    import requests  # on first probe: `stack status` of a stopped stack never needs it

    try:
        return requests.get(url, timeout=2, **kwargs)
    except requests.RequestException as exc:
        raise NotReady(str(exc)) from None


@dataclasses.dataclass(frozen=True)
class Service:
    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    binds: tuple[tuple[str, int], ...]  # (host, port) the service will listen on
    endpoint: str
    health: Callable[[], None]  # returns when healthy; raises NotReady or StackError
    cwd: Path


def orthanc_service(name: str, *, state: StateDir, ports: Ports, credentials: Mapping[str, Any],
                    binaries: Binaries) -> Service:
    http_port, dicom_port = config.orthanc_ports(name, ports)
    url = f"http://127.0.0.1:{http_port}"
    user, password = credentials[name]["user"], credentials[name]["password"]
    cred_file = state.credentials

    def health() -> None:
        resp = probe(f"{url}/system", auth=(user, password), headers={"Accept-Encoding": "identity"})
        if resp.status_code == 401:
            raise StackError(
                f"{name}: {url} rejected user {user!r} (HTTP 401): the Orthanc running there does "
                f"not use the password in {cred_file}; run `radcloud stack down` and `up` again",
                service=name)
        if resp.status_code != 200:
            raise NotReady(f"HTTP {resp.status_code}")
        if not accepts(dicom_port):
            raise NotReady(f"DICOM port {dicom_port} not listening")

    # Debian's DCMTK (Orthanc's DICOM side) uses Nagle unless TCP_NODELAY=1: ~40 ms per DIMSE message.
    env = dict(os.environ, TCP_NODELAY="1")
    return Service(
        name=name,
        argv=(binaries["Orthanc"], str(config.config_path(state, name))),
        env=env,
        # Orthanc cannot bind to one address: it listens on all of them.
        binds=(("0.0.0.0", http_port), ("0.0.0.0", dicom_port)),
        endpoint=f"{url} (DICOM {ORTHANCS[name]}@127.0.0.1:{dicom_port})",
        health=health,
        cwd=state.service_dir(name),
    )


def redis_service(*, state: StateDir, ports: Ports, credentials: Mapping[str, Any],
                  binaries: Binaries) -> Service:
    import redis  # heavy-ish import, only needed when the stack runs
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    password = credentials["redis"]["password"]

    def health() -> None:
        # No retries: redis-py's default backoff would stretch one probe to seconds
        # (and an AuthenticationError is a ConnectionError to it).
        client = redis.Redis(host="127.0.0.1", port=ports.redis, password=password,
                             socket_timeout=2, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
        try:
            client.ping()
        except redis.AuthenticationError:
            raise StackError(f"redis: 127.0.0.1:{ports.redis} rejected the password in "
                             f"{state.credentials}; run `radcloud stack down` and `up` again",
                             service="redis") from None
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            raise NotReady(str(exc)) from None
        finally:
            client.close()

    return Service(
        name="redis",
        # The password is in the 0600 config file, not on the command line (ps shows argv).
        argv=(binaries["redis-server"], str(config.config_path(state, "redis"))),
        env=dict(os.environ),
        binds=(("127.0.0.1", ports.redis),),
        endpoint=f"redis://127.0.0.1:{ports.redis}/0",
        health=health,
        cwd=state.service_dir("redis"),
    )


def weed_argv(*, state: StateDir, ports: Ports, weed: str, bwrap: str) -> tuple[str, ...]:
    """``weed mini`` inside bwrap, every port explicit, nothing outside the state dir.

    weed writes unix sockets into /tmp whatever TMPDIR says: a private tmpfs
    on /tmp keeps the host's clean. The state dir (and weed itself) are bound
    back in case they live under /tmp (pytest's tmp_path does).
    """
    root = state.root
    sandbox = [bwrap, "--bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
               "--bind", str(root), str(root)]
    weed_dir = str(Path(weed).resolve().parent)
    if weed_dir == "/tmp" or weed_dir.startswith("/tmp/"):
        sandbox += ["--ro-bind", weed_dir, weed_dir]
    p = ports
    return (*sandbox, "--", weed, f"-logdir={state.log_dir / 's3'}",
            f"-config_dir={state.service_dir('s3')}", "mini",  # its security.toml: see radcloud.ops.stack.weed
            f"-dir={state.service_dir('s3') / 'data'}",
            "-master.telemetry=false",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.config={config.config_path(state, 's3')}",
            "-s3.autoCreateBucket=false", "-s3.allowDeleteBucketNotEmpty=false",
            f"-s3.port={p.s3}", f"-s3.port.grpc={p.s3_grpc}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
            f"-master.port={p.weed_master}", f"-master.port.grpc={p.weed_master_grpc}",
            f"-volume.port={p.weed_volume}", f"-volume.port.grpc={p.weed_volume_grpc}",
            f"-filer.port={p.weed_filer}", f"-filer.port.grpc={p.weed_filer_grpc}",
            f"-admin.port={p.weed_admin}", f"-admin.port.grpc={p.weed_admin_grpc}")


def s3_service(*, state: StateDir, ports: Ports, credentials: Mapping[str, Any],
               binaries: Binaries) -> Service:
    url = f"http://127.0.0.1:{ports.s3}"

    def health() -> None:
        # An unsigned request must be refused (403) once S3 and its identities are up.
        resp = probe(f"{url}/")
        if resp.status_code != 403:
            raise NotReady(f"anonymous GET / answered HTTP {resp.status_code}, expected 403")

    weed_ports = [getattr(ports, f.name) for f in dataclasses.fields(ports)
                  if f.name == "s3" or f.name.startswith(("s3_", "weed_"))]
    return Service(
        name="s3",
        argv=weed_argv(state=state, ports=ports, weed=binaries["weed"], bwrap=binaries["bwrap"]),
        env=dict(os.environ),
        binds=tuple(("127.0.0.1", port) for port in weed_ports),
        endpoint=url,
        health=health,
        cwd=state.service_dir("s3"),
    )


def whisk_service(*, state: StateDir, ports: Ports, credentials: Mapping[str, Any],
                  binaries: Binaries) -> Service:
    """localwhisk serving the OpenWhisk API; the manifest's images map to this checkout.

    Run as ``python -m localwhisk.cli serve`` by this venv's interpreter:
    radcloud never imports localwhisk. The API key is in ``whisk/.wskprops``.
    """
    url = f"http://127.0.0.1:{ports.whisk}"

    def health() -> None:
        resp = probe(f"{url}/")
        if resp.status_code != 200 or "runtimes" not in resp.text:
            raise NotReady(f"GET / answered HTTP {resp.status_code}")
        if not (state.whisk_dir / ".wskprops").exists():
            raise NotReady("no .wskprops yet")

    return Service(
        name="whisk",
        argv=(sys.executable, "-m", "localwhisk.cli", "serve", "--state-dir", str(state.whisk_dir),
              "--port", str(ports.whisk), "--images-file", str(config.config_path(state, "whisk")),
              "--fires-per-minute", str(config.fires_per_minute())),
        # As docs/deploy.md requires of a real OpenWhisk: successful blocking activations (every
        # web action: query results, login tokens, presigned URLs) are not stored; failures are.
        env={**os.environ, "CONFIG_whisk_activation_storeBlockingResultLevel": "STORE_FAILURES"},
        binds=(("127.0.0.1", ports.whisk),),
        endpoint=url,
        health=health,
        cwd=state.whisk_dir,
    )


def arrivals_service(*, state: StateDir, ports: Ports, credentials: Mapping[str, Any],
                     binaries: Binaries) -> Service:
    """The arrivals watcher (``radcloud arrivals watch``): Orthanc's stable studies fire
    ``radcloud-study-stable`` on this stack's localwhisk. Healthy once its cursor is in Redis."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from radcloud.arrivals.watch import CURSOR
    from radcloud.ops.stack.endpoints import Endpoints

    def health() -> None:
        client = redis.Redis(host="127.0.0.1", port=ports.redis, password=credentials["redis"]["password"],
                             socket_timeout=2, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
        try:
            if client.get(CURSOR) is None:
                raise NotReady("no cursor in Redis yet (Orthanc or Redis not reached)")
        except redis.RedisError as exc:
            raise NotReady(str(exc)) from None
        finally:
            client.close()

    env = {**os.environ, **Endpoints.from_state(state, ports, dict(credentials)).env(),
           "RADCLOUD_ORTHANC_STABLE_AGE": str(config.stable_age()),
           "RADCLOUD_ARRIVALS_STABLE_AGE_S": os.environ.get("RADCLOUD_ARRIVALS_STABLE_AGE_S",
                                                            str(config.stable_age()))}
    return Service(
        name="arrivals",
        # The OpenWhisk key stays in whisk/.wskprops (0600), not on the command line.
        argv=(sys.executable, "-m", "radcloud.ops.cli.main", "arrivals", "watch",
              "--wskprops", str(state.whisk_dir / ".wskprops")),
        env=env,
        binds=(),
        endpoint=f"fires radcloud-study-stable on http://127.0.0.1:{ports.whisk}",
        health=health,
        cwd=state.root,
    )


def build(name: str, *, state: StateDir, ports: Ports, credentials: Mapping[str, Any],
          binaries: Binaries) -> Service:
    kwargs = dict(state=state, ports=ports, credentials=credentials, binaries=binaries)
    if name == "whisk":
        return whisk_service(**kwargs)
    if name == "arrivals":
        return arrivals_service(**kwargs)
    if name in ORTHANCS:
        return orthanc_service(name, **kwargs)
    if name == "redis":
        return redis_service(**kwargs)
    if name == "s3":
        return s3_service(**kwargs)
    if name in SLURM_SERVICES:
        from radcloud.ops.stack import slurm

        return slurm.services(**kwargs)[name]
    raise ValueError(f"unknown service {name!r}")
