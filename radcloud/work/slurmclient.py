"""An HPC cluster's Slurm, through slurmrestd's REST API with JWT authentication.

radcloud submits, watches and cancels batch jobs the way a stateless action
can reach a real site: HTTPS to the site's slurmrestd, each call carrying
``X-SLURM-USER-NAME`` and ``X-SLURM-USER-TOKEN`` (a JWT from ``scontrol
token``, or the site's identity provider); see docs/deploy.md for why this
over ``sbatch`` through SSH. The API version is Slurm 22.05's ``v0.0.38``.

Every call goes through the project's one HTTP client (:func:`radcloud.core.retry.session`):
connection errors are retried briefly, a submit is never sent twice. Errors
are radcloud errors naming slurmrestd and what to do.

    client = SlurmClient.from_settings(settings)
    job_id = client.submit(script, name="radcloud-…", cpus=2, memory_mb=3072, time_limit_min=10)
    client.jobs([job_id])     # {job_id: job dict (job_state, state_reason, exit_code…)}
    client.cancel(job_id)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from typing import Any

from radcloud.core.errors import BadRequest, ConfigError, NotFound, RadcloudError, Unavailable, UpstreamError

API = "v0.0.38"
ENDED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
                   "DEADLINE", "PREEMPTED"})  # a job in one of these states runs no more


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one job may ask of a partition: the biggest node's CPUs and memory, the partition's time."""

    partition: str
    cpus: int
    memory_mb: int
    max_time_min: int | None  # None: unlimited
    gpus: int = 0


class SlurmClient:
    def __init__(self, url: str, user: str, token: str, *, partition: str = "", account: str = "",
                 timeout_s: float = 10.0, session: Any = None) -> None:
        if not url:
            raise ConfigError("no Slurm cluster configured: set slurm_url (RADCLOUD_SLURM_URL) to the "
                              "site's slurmrestd, or start the local one with `radcloud stack up --with-slurm`",
                              field="slurm_url")
        from radcloud.core.retry import session as retrying_session

        self.url = url.rstrip("/")
        self.user, self.partition, self.account, self.timeout_s = user or "root", partition, account, timeout_s
        self._token = token
        expiry = _token_expiry(token)
        if expiry is not None and expiry < time.time():
            raise ConfigError(f"the Slurm token (slurm_jwt, RADCLOUD_SLURM_JWT) expired at "
                              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(expiry))}: issue a new one "
                              "(`scontrol token username=… lifespan=…`)", field="slurm_jwt")
        self.http = session or retrying_session(budget_s=timeout_s)

    @classmethod
    def from_settings(cls, settings: Any, **kw: Any) -> "SlurmClient":
        return cls(settings.slurm_url, settings.slurm_user, settings.slurm_jwt.reveal(),
                   partition=settings.slurm_partition, account=settings.slurm_account, **kw)

    # -- transport ------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        import requests

        url = f"{self.url}/slurm/{API}/{path.lstrip('/')}"
        headers = {"X-SLURM-USER-NAME": self.user, "X-SLURM-USER-TOKEN": self._token}
        try:
            resp = self.http.request(method, url, json=body, headers=headers, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise Unavailable(f"slurmrestd at {self.url} cannot be reached ({type(exc).__name__}); "
                              "check slurm_url and that slurmrestd runs") from None
        try:
            data = resp.json()
        except ValueError:
            data = {}
        if resp.status_code == 401:
            raise ConfigError(f"slurmrestd at {self.url} rejected the token for user {self.user!r} (HTTP 401): "
                              "set slurm_jwt (RADCLOUD_SLURM_JWT) to a current one (`scontrol token`)",
                              field="slurm_jwt")
        errors = _errors(data)
        if resp.status_code >= 500 and not errors:
            raise UpstreamError(f"slurmrestd {method} {path} answered HTTP {resp.status_code}")
        if errors and resp.status_code >= 400:
            raise _error(method, path, resp.status_code, errors)
        if not isinstance(data, dict):
            raise UpstreamError(f"slurmrestd {method} {path} answered something that is not a JSON object")
        return data

    # -- the cluster ------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        """slurmctld's answer through slurmrestd: ``{"hostname", "ping": "UP", "mode"}``."""
        pings = self._call("GET", "ping").get("pings") or []
        if not pings:
            raise UpstreamError("slurmrestd answered the ping without any slurmctld")
        return dict(pings[0])

    def limits(self, partition: str | None = None) -> Limits:
        """The partition's time limit and its biggest node's CPUs, memory and GPUs."""
        name = partition or self.partition
        parts = self._call("GET", "partitions").get("partitions") or []
        if not name:
            part = next((p for p in parts if "default" in (p.get("flags") or [])), parts[0] if parts else None)
            if part is None:
                raise UpstreamError("the Slurm cluster has no partition")
        else:
            part = next((p for p in parts if p.get("name") == name), None)
            if part is None:
                raise ConfigError(f"Slurm partition {name!r} does not exist on {self.url} (it has: "
                                  f"{', '.join(str(p.get('name')) for p in parts) or 'none'}; set slurm_partition "
                                  "to one of them)", field="slurm_partition")
        nodes = [n for n in self._call("GET", "nodes").get("nodes") or []
                 if part.get("name") in (n.get("partitions") or [])]
        max_time = part.get("max_time_limit")
        unlimited = not isinstance(max_time, int) or max_time < 0 or max_time >= 0xFFFFFFFE
        memory_mb = max((int(n.get("real_memory") or 0) for n in nodes), default=0)
        per_node = part.get("maximum_memory_per_node")
        if isinstance(per_node, int) and 0 < per_node < memory_mb:
            memory_mb = per_node
        return Limits(partition=str(part.get("name")),
                      cpus=max((int(n.get("cpus") or 0) for n in nodes), default=0),
                      memory_mb=memory_mb, max_time_min=None if unlimited else int(max_time),
                      gpus=max((_gpus(n.get("gres") or "") for n in nodes), default=0))

    # -- jobs -------------------------------------------------------------------
    def submit(self, script: str, *, name: str, cpus: int = 1, memory_mb: int = 512, time_limit_min: int = 10,
               gpus: int = 0, environment: Mapping[str, str] | None = None, cwd: str = "/tmp",
               output: str = "/dev/null", partition: str | None = None, account: str | None = None) -> int:
        """Submit a batch job; returns its id. Raises BadRequest when Slurm refuses it (naming why)."""
        job: dict[str, Any] = {
            "name": name, "cpus_per_task": int(cpus), "memory_per_node": int(memory_mb),
            "time_limit": int(time_limit_min), "current_working_directory": cwd,
            "standard_output": output, "standard_error": output,
            "environment": {"PATH": "/usr/local/bin:/usr/bin:/bin", **(environment or {})},
            # No "requeue" key: Slurm 22.05's v0.0.38 takes the key itself as "yes" (false too), and
            # radcloud's retry is its own. Left out, the cluster's JobRequeue decides (docs/deploy.md).
        }
        if partition or self.partition:
            job["partition"] = partition or self.partition
        if account or self.account:
            job["account"] = account or self.account
        if gpus:
            job["tres_per_node"] = f"gres:gpu:{int(gpus)}"
        data = self._call("POST", "job/submit", {"job": job, "script": script})
        job_id = data.get("job_id")
        if not job_id:
            raise UpstreamError(f"slurmrestd accepted the job but returned no job id: {str(data)[:160]}")
        return int(job_id)

    def jobs(self, job_ids: Iterable[int | str] | None = None) -> dict[str, dict[str, Any]]:
        """The jobs slurmctld still knows, by id (as a string); ``job_ids`` filters.

        One request for all (slurmctld forgets a finished job after MinJobAge):
        a job missing from the answer is one Slurm no longer knows.
        """
        wanted = None if job_ids is None else {str(j) for j in job_ids}
        out: dict[str, dict[str, Any]] = {}
        for job in self._call("GET", "jobs").get("jobs") or []:
            key = str(job.get("job_id"))
            if wanted is None or key in wanted:
                out[key] = job
        return out

    def wait(self, job_id: int | str, states: Iterable[str], *, limit_s: float = 30.0,
             every_s: float = 0.2) -> dict[str, Any]:
        """Poll the job until its state is one of ``states`` or it has ended, at most ``limit_s``;
        its last answer ({} when Slurm does not know it)."""
        wanted, deadline = set(states), time.monotonic() + limit_s
        while True:
            job = self.jobs([job_id]).get(str(job_id)) or {}
            state = job.get("job_state")
            if state in wanted or state in ENDED or time.monotonic() >= deadline:
                return job
            time.sleep(every_s)

    def job(self, job_id: int | str) -> dict[str, Any] | None:
        try:
            found = self._call("GET", f"job/{int(job_id)}").get("jobs") or []
        except (NotFound, BadRequest):
            return None
        return found[0] if found else None

    def cancel(self, job_id: int | str, signal: str = "SIGKILL") -> None:
        """scancel: best effort, quiet for a job that ended or that Slurm forgot."""
        try:
            self._call("DELETE", f"job/{int(job_id)}?signal={signal}")
        except (NotFound, BadRequest):
            return


def _errors(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, dict):
        return []
    return [e for e in data.get("errors") or [] if isinstance(e, dict) and (e.get("error_number") or e.get("error"))]


def _error(method: str, path: str, status: int, errors: list[dict[str, Any]]) -> RadcloudError:
    text = "; ".join(" — ".join(dict.fromkeys(str(e[k]) for k in ("error", "description") if e.get(k)))
                     or str(e.get("error_number")) for e in errors)[:300]
    numbers = {int(e.get("error_number") or 0) for e in errors}
    if status == 404 or numbers & {2017}:  # ESLURM_INVALID_JOB_ID
        return NotFound(f"Slurm: {text}")
    if numbers == {-1}:
        # What slurmrestd says when slurmctld refused the request as a whole (a token it did not
        # sign, or for another user) or did not answer.
        return UpstreamError(f"Slurm {method} {path.split('?')[0]} failed: {text}; check that slurmctld runs "
                             "and that slurm_jwt (RADCLOUD_SLURM_JWT) is a token the cluster issued for slurm_user")
    if status < 500 or path.startswith("job/submit"):
        # slurmrestd answers a refused submit (no such partition, more than a node has) with 500.
        return BadRequest(f"Slurm refused {method} {path.split('?')[0]}: {text}")
    return UpstreamError(f"Slurm {method} {path.split('?')[0]} failed: {text}")


def _token_expiry(token: str) -> int | None:
    """The ``exp`` claim of a JWT (not verified: slurmctld does that), or None."""
    import base64
    import json

    try:
        claims = token.split(".")[1]
        return int(json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


def _gpus(gres: str) -> int:
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts and parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total
