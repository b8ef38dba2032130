"""The local stack: bring Orthanc(s), Redis, SeaweedFS S3 (and localwhisk) up, report, take down.

    stack = Stack(".radcloud")
    endpoints = stack.up()            # idempotent: live + healthy services are left alone
    settings = endpoints.settings()   # radcloud Settings for this stack
    stack.down()                      # stops only the PIDs recorded in the state dir

Services start in parallel and are then polled for health until a deadline.
A failure is one :class:`StackError` line naming the service, the port or
the log file; whatever this call started is stopped again before it raises.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from radcloud.ops.stack import config, install, process
from radcloud.ops.stack.endpoints import Endpoints
from radcloud.ops.stack.errors import StackError
from radcloud.ops.stack.install import Binaries
from radcloud.ops.stack.ports import DEFAULT_OFFSET, Ports, port_in_use
from radcloud.ops.stack.services import NotReady, Service, build
from radcloud.ops.stack.state import (ALL_SERVICES, BUCKET, DEFAULT_SERVICES, SLURM_SERVICES, StateDir, redact,
                                  write_private)

FIRST_WAVE = ("munge",)  # healthy before the others start (slurmctld and slurmd need its socket)
LAST_WAVE = ("arrivals",)  # after localwhisk wrote its key and Redis/Orthanc answer

log = logging.getLogger(__name__)


Progress = Callable[[str, str], None]  # (service, event) e.g. ("redis", "healthy")


def _quiet(service: str, event: str) -> None:
    pass


class Stack:
    """One local stack, identified by its state directory.

    Parameters:
        state_dir: where configs, data, logs, credentials and PIDs live.
        ports: explicit ports; default: those recorded by an earlier ``up``,
            else the standard ports + ``port_offset``.
        binaries: found binaries (tests pass them to skip the lookup).
        timeout_s: how long ``up`` waits for each service's health.
    """

    def __init__(self, state_dir: str | os.PathLike[str], ports: Ports | None = None, *,
                 port_offset: int = DEFAULT_OFFSET, binaries: Binaries | None = None,
                 timeout_s: float = 60.0) -> None:
        self.state = StateDir(state_dir)
        stored = self.state.load_json(self.state.ports_file)
        if ports is not None:
            self.ports = ports
        elif stored is not None:
            self.ports = Ports.from_dict(stored)
        else:
            try:
                self.ports = Ports.standard(port_offset)
            except ValueError as exc:
                raise StackError(str(exc)) from None
        self._binaries = binaries
        self.timeout_s = timeout_s
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- what is recorded -------------------------------------------------
    def _record(self, name: str) -> process.ProcessRecord | None:
        return process.ProcessRecord.load(self.state.pid_file(name))

    def running(self, name: str) -> bool:
        record = self._record(name)
        return record is not None and process.is_alive(record)

    def endpoints(self) -> Endpoints:
        return Endpoints.from_state(self.state, self.ports, self.state.credentials_data())

    def _service(self, name: str, binaries: Binaries) -> Service:
        return build(name, state=self.state, ports=self.ports,
                     credentials=self.state.credentials_data(), binaries=binaries)

    # -- up ---------------------------------------------------------------
    def up(self, services: Sequence[str] = DEFAULT_SERVICES, *, install_missing: bool = True,
           progress: Progress = _quiet) -> Endpoints:
        """Start whatever of ``services`` is not running; wait until all are healthy.

        Returns the endpoints. ``self.last_up`` maps each service to
        "started" or "already running".

        Raises:
            StackError: missing binary, port in use, crash, wrong password or timeout.
        """
        unknown = [s for s in services if s not in ALL_SERVICES]
        if unknown:
            raise StackError(f"unknown service {', '.join(unknown)}; known: {', '.join(ALL_SERVICES)}")
        self._check_same_ports(services)
        wants_slurm = any(s in SLURM_SERVICES for s in services)
        binaries = self._binaries or install.ensure(install=install_missing, slurm=wants_slurm)
        self.state.create()
        credentials = self.state.credentials_data()
        write_private(self.state.ports_file, _json(self.ports.to_dict()))
        specs = {name: self._service(name, binaries) for name in services}
        self.last_up: dict[str, str] = {}
        started: list[str] = []
        # Waves: munge must answer before slurmctld and slurmd start; the rest start together.
        first = {n: spec for n, spec in specs.items() if n in FIRST_WAVE}
        last = {n: spec for n, spec in specs.items() if n in LAST_WAVE}
        middle = {n: spec for n, spec in specs.items() if n not in first and n not in last}
        waves = [w for w in (first, middle, last) if w]
        try:
            for wave in waves:
                for name, spec in wave.items():
                    if self.running(name):
                        self.last_up[name] = "already running"
                        progress(name, "already running")
                        continue
                    self._check_ports(spec)
                    credentials = self.state.credentials_data()  # Slurm's config adds its token
                    config.write_service_config(name, state=self.state, ports=self.ports,
                                                credentials=credentials)
                    proc, record = process.spawn(name, spec.argv, log_path=self.state.log(name),
                                                 env=spec.env, cwd=spec.cwd)
                    record.save(self.state.pid_file(name))
                    log.info("started %s (pid %d), log %s", name, record.pid, self.state.log(name))
                    self._procs[name] = proc
                    started.append(name)
                    self.last_up[name] = "started"
                    progress(name, "started")
                self._wait_healthy(wave, progress)
            if "s3" in started:
                # Only for an S3 this call started: the `up` that started a running one made the bucket
                # (or stopped it again), and a no-op `up` then skips minio's import and a round trip.
                self._ensure_bucket(specs["s3"])
        except BaseException:
            self._stop(started)
            raise
        endpoints = self.endpoints()
        write_private(self.state.env_file, config.render_env(endpoints.env(), self.state.env_file))
        return endpoints

    def _check_same_ports(self, services: Sequence[str]) -> None:
        # Services already running listen where ports.json says; probing other ports would time out.
        stored = self.state.load_json(self.state.ports_file)
        if stored is None or Ports.from_dict(stored) == self.ports:
            return
        running = [n for n in ALL_SERVICES if self.running(n)]
        if running:
            raise StackError(f"{', '.join(running)} already running on the ports in {self.state.ports_file}; "
                             "run `radcloud stack down` before choosing other ports")

    def _check_ports(self, spec: Service) -> None:
        for host, port in spec.binds:
            if port_in_use(port, host):
                raise StackError(
                    f"{spec.name}: port {port} is already in use by another process; free it or "
                    f"choose other ports (--port-offset); log: {self.state.log(spec.name)}",
                    service=spec.name, log=str(self.state.log(spec.name)))

    def _tail(self, log_path: os.PathLike[str]) -> str:
        # A StackError's tail is printed (`radcloud stack up`): mask secrets as `stack logs` does.
        return redact(process.tail(Path(log_path)), self.state.secret_values())

    def _crashed(self, name: str) -> StackError | None:
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is not None:
            log_path = self.state.log(name)
            return StackError(f"{name} exited during start-up (exit code {proc.returncode}); "
                              f"see {log_path}", service=name, log=str(log_path),
                              tail=self._tail(log_path))
        record = self._record(name)
        if proc is None and (record is None or not process.is_alive(record)):
            log_path = self.state.log(name)
            return StackError(f"{name} is not running; see {log_path}", service=name,
                              log=str(log_path), tail=self._tail(log_path))
        return None

    def _wait_healthy(self, specs: dict[str, Service], progress: Progress) -> None:
        pending = dict(specs)
        deadline = time.monotonic() + self.timeout_s
        last: dict[str, str] = {}
        while pending:
            for name, spec in list(pending.items()):
                crash = self._crashed(name)
                if crash is not None:
                    raise crash
                try:
                    spec.health()
                except NotReady as exc:
                    last[name] = str(exc)
                    continue
                del pending[name]
                progress(name, "healthy")
            if not pending:
                return
            if time.monotonic() > deadline:
                name = next(iter(pending))
                log_path = self.state.log(name)
                raise StackError(
                    f"{name} did not become healthy within {self.timeout_s:.0f} s "
                    f"({last.get(name, '?')}); see {log_path}",
                    service=name, log=str(log_path), tail=self._tail(log_path))
            time.sleep(0.1)

    def _ensure_bucket(self, spec: Service) -> None:
        from minio.error import S3Error

        client = self.s3_client()
        deadline = time.monotonic() + self.timeout_s
        while True:
            # The S3 gateway answers before the filer behind it is ready: retry briefly.
            try:
                if not client.bucket_exists(BUCKET):
                    client.make_bucket(BUCKET)
                return
            except S3Error as exc:
                if exc.code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
                    raise StackError(f"s3: {spec.endpoint} rejected the keys in {self.state.credentials} "
                                     f"({exc.code}); run `radcloud stack down` and `up` again",
                                     service="s3") from None
                error: Exception = exc
            except Exception as exc:  # urllib3 errors while the filer starts
                error = exc
            if time.monotonic() > deadline:
                raise StackError(f"s3: cannot create bucket {BUCKET!r} ({error}); "
                                 f"see {self.state.log('s3')}", service="s3")
            time.sleep(0.2)

    def s3_client(self) -> Any:
        from minio import Minio

        ep = self.endpoints()
        return Minio(ep.s3_endpoint, access_key=ep.s3_access_key,
                     secret_key=ep.s3_secret_key.reveal(), secure=False, region="us-east-1")

    # -- down / single-service control --------------------------------------
    def _stop(self, names: Iterable[str], *, grace_s: float = 15.0, wait_reaped: bool = True) -> list[str]:
        records = [(n, r) for n in names if (r := self._record(n)) is not None]
        if records:
            log.info("stopping %s", ", ".join(n for n, _ in records))
        process.stop([r for _, r in records], grace_s=grace_s, wait_reaped=wait_reaped)
        stopped = []
        for name, record in records:
            if not process.is_alive(record):
                self.state.pid_file(name).unlink(missing_ok=True)
                stopped.append(name)
            if (proc := self._procs.pop(name, None)) is not None:
                proc.poll()  # reap our own child
        return stopped

    def down(self, services: Sequence[str] = ALL_SERVICES) -> list[str]:
        """Stop the recorded services (SIGTERM, wait, SIGKILL). Returns those that were running."""
        was_running = [n for n in services if self.running(n)]
        slurm = None
        if "slurmd" in services and "slurmd" in was_running:
            from radcloud.ops.stack import slurm

            if "slurmctld" in was_running:
                slurm.cancel_all(self.state)  # a job's processes outlive slurmd (its own session)
        self._stop(services)
        if slurm is not None:
            slurm.kill_leftovers(self.state)
            slurm.release_cgroup(self.state)
        still = [n for n in services if self.running(n)]
        if still:
            raise StackError(f"could not stop {', '.join(still)}; see {self.state.run_dir}")
        return was_running

    def stop(self, name: str) -> None:
        self.down([name])

    def start(self, name: str) -> Endpoints:
        return self.up([name], install_missing=False)

    def restart(self, name: str) -> Endpoints:
        self.stop(name)
        return self.start(name)

    def kill(self, name: str) -> None:
        """SIGKILL the service at once (fault-injection tests).

        Like a crash, it leaves the service's orphaned zombies to init rather than
        wait for their reaping as :meth:`down` does: nothing of them runs, and a
        fault test restarts the service at once. (SeaweedFS runs under bwrap: its
        ``weed`` is init's to reap, which took 1.2-1.7 s here per kill.)
        """
        self._stop([name], grace_s=0.0, wait_reaped=False)

    def status(self, services: Sequence[str] = ALL_SERVICES) -> dict[str, dict[str, Any]]:
        """Each service: running?, healthy?, pid, endpoint, log file. Starts and creates nothing."""
        result: dict[str, dict[str, Any]] = {}
        credentials = self.state.load_json(self.state.credentials)  # None before the first up
        binaries = self._binaries or install.find()
        for name in services:
            record = self._record(name)
            alive = record is not None and process.is_alive(record)
            healthy = False
            endpoint = ""
            if credentials is not None:
                try:
                    spec = build(name, state=self.state, ports=self.ports, credentials=credentials,
                                 binaries=binaries)
                    endpoint = spec.endpoint
                    if alive:
                        spec.health()
                        healthy = True
                except (NotReady, StackError, KeyError):
                    pass
            result[name] = {"running": alive, "healthy": healthy,
                            "pid": record.pid if alive and record else None,
                            "endpoint": endpoint, "log": str(self.state.log(name))}
        return result

def _json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"
