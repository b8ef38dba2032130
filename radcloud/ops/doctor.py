"""``radcloud doctor``: check every dependency of a deployment and say what is wrong.

Each check answers a :class:`Check` (ok or not, what was found, what to do);
a check never raises, so one broken dependency cannot hide the others. The
checks talk to the real services with clients built from
:class:`~radcloud.core.settings.Settings` — the same values the actions get as
package parameters — plus the OpenWhisk API host and key.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

import requests

from radcloud.core.errors import reason_of
from radcloud.core.settings import Settings

log = logging.getLogger(__name__)

MIN_TOKEN_SECRET = 32  # radcloud.access.auth.MIN_SECRET: shorter secrets are refused by the login action
MIN_DEID_SECRET = 16   # plugins/deidentify refuses shorter HMAC keys


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _guard(name: str, fn: Callable[[], Check]) -> Check:
    try:
        return fn()
    except Exception as exc:  # a check reports; it never takes the others down
        log.debug("check %s failed", name, exc_info=True)
        return Check(name, False, f"{type(exc).__name__}: {str(exc)[:160]}", "see the message; rerun with -v")


def check_openwhisk(apihost: str, auth: str, expected: Iterable[str], package: str = "radcloud",
                    timeout_s: float = 5.0) -> list[Check]:
    """API reachable with the key, and every manifest action deployed in ``package``."""
    if not apihost or not auth:
        return [Check("openwhisk api", False, "no API host/key",
                      "pass --apihost/--auth, set RADCLOUD_OW_API_HOST/RADCLOUD_OW_API_KEY or write ~/.wskprops")]
    base = apihost.rstrip("/")
    user, _, key = auth.partition(":")
    try:
        resp = requests.get(f"{base}/api/v1/namespaces/_/actions", params={"limit": 200},
                            auth=(user, key), timeout=timeout_s)
    except requests.RequestException as exc:
        return [Check("openwhisk api", False, f"{base} unreachable ({type(exc).__name__})",
                      "start it (`radcloud stack up --with-whisk`) or fix the API host")]
    if resp.status_code in (401, 403):
        return [Check("openwhisk api", False, f"{base} refused the key (HTTP {resp.status_code})",
                      "use the namespace's key (`wsk property get --auth`)")]
    if resp.status_code != 200:
        return [Check("openwhisk api", False, f"{base} answered HTTP {resp.status_code}", "check the API host")]
    deployed = {a["name"] for a in resp.json() if str(a.get("namespace", "")).endswith("/" + package)}
    missing = sorted(set(expected) - deployed)
    checks = [Check("openwhisk api", True, f"{base}, key accepted")]
    if missing:
        checks.append(Check("radcloud actions", False, f"missing: {', '.join(missing)}",
                            "run `radcloud deploy` (or wskdeploy -m deploy/manifest.yaml)"))
    else:
        checks.append(Check("radcloud actions", True, f"all {len(set(expected))} deployed in {package}/"))
    return checks


def check_orthanc(settings: Settings, timeout_s: float = 5.0) -> Check:
    url = settings.orthanc_url.rstrip("/")
    try:
        resp = requests.get(f"{url}/system", auth=(settings.orthanc_user, settings.orthanc_password.reveal()),
                            timeout=timeout_s)
    except requests.RequestException as exc:
        return Check("orthanc", False, f"{url} unreachable ({type(exc).__name__})",
                     "start Orthanc or fix the tunnel/VPN; check orthanc_url")
    if resp.status_code == 401:
        return Check("orthanc", False, f"{url} rejected user {settings.orthanc_user!r}",
                     "fix orthanc_user / orthanc_password ($RADCLOUD_ORTHANC_*) and redeploy")
    if resp.status_code != 200:
        return Check("orthanc", False, f"{url} answered HTTP {resp.status_code}", "check orthanc_url")
    return Check("orthanc", True, f"{url} Orthanc {resp.json().get('Version', '?')}, credentials accepted")


def check_s3(settings: Settings, timeout_s: float = 5.0) -> list[Check]:
    from minio import Minio

    import urllib3

    scheme = "https" if settings.s3_secure else "http"
    endpoint, bucket = settings.s3_endpoint, settings.s3_bucket
    # A check asks once: the SDK's default transport retries a refused connection for seconds.
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s), retries=False)
    client = Minio(endpoint, access_key=settings.s3_access_key, secret_key=settings.s3_secret_key.reveal(),
                   secure=settings.s3_secure, region=settings.s3_region, http_client=http)
    try:
        requests.head(f"{scheme}://{endpoint}/", timeout=timeout_s)
    except requests.RequestException as exc:
        return [Check("s3 bucket", False, f"{scheme}://{endpoint} unreachable ({reason_of(exc)})",
                      "start the S3 server (`radcloud stack up`) or fix s3_endpoint / s3_secure")]

    def keyed() -> Check:
        if not client.bucket_exists(bucket):
            return Check("s3 bucket", False, f"bucket {bucket!r} does not exist at {endpoint}",
                         f"create it (mc mb {bucket}) or fix s3_bucket")
        return Check("s3 bucket", True, f"{scheme}://{endpoint}/{bucket} reachable with the keys")

    def anonymous() -> Check:
        fix = f"remove the anonymous policy (mc anonymous set none {bucket}): it holds patient images"
        resp = requests.get(f"{scheme}://{endpoint}/{bucket}/", timeout=timeout_s)
        if resp.status_code not in (401, 403):
            return Check("s3 not public", False, f"anonymous GET /{bucket}/ answered HTTP {resp.status_code}", fix)
        # A policy may allow GetObject without listing: try one real object without credentials.
        sample = next(iter(client.list_objects(bucket, recursive=True)), None)
        if sample is not None:
            got = requests.get(f"{scheme}://{endpoint}/{bucket}/{quote(sample.object_name)}", timeout=timeout_s,
                               stream=True)
            got.close()
            if got.status_code not in (401, 403):
                return Check("s3 not public", False, f"an object is readable without credentials "
                             f"(HTTP {got.status_code})", fix)
        return Check("s3 not public", True, f"anonymous listing and reads refused (HTTP {resp.status_code})")

    return [_guard("s3 bucket", keyed), _guard("s3 not public", anonymous)]


def check_redis(settings: Settings) -> Check:
    import redis

    url = settings.redis_url.reveal()
    where = url.rsplit("@", 1)[-1]
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
        try:
            aof = client.config_get("appendonly").get("appendonly")
        except redis.ResponseError:  # managed Redis forbids CONFIG: ask INFO instead
            aof = "yes" if client.info("persistence").get("aof_enabled") else "no"
    except redis.AuthenticationError:
        return Check("redis", False, f"{where} rejected the password", "fix redis_url ($RADCLOUD_REDIS_URL)")
    except redis.RedisError as exc:
        return Check("redis", False, f"{where} unreachable ({type(exc).__name__})", "start Redis or fix redis_url")
    finally:
        client.close()
    if aof != "yes":
        return Check("redis", False, f"{where} reachable but appendonly={aof}: job state is lost on restart",
                     "set `appendonly yes` (redis.conf) and restart Redis")
    return Check("redis", True, f"{where} reachable, AOF on")


def check_token_secret(settings: Settings) -> Check:
    secrets = [s for s in settings.token_secret.reveal().split(",") if s]
    if not secrets:
        return Check("token secret", False, "token_secret is not set: nobody can log in",
                     "set RADCLOUD_TOKEN_SECRET to 40+ random characters and redeploy")
    if len(secrets[0]) < MIN_TOKEN_SECRET:
        return Check("token secret", False, f"the signing secret has {len(secrets[0])} characters",
                     f"use at least {MIN_TOKEN_SECRET} random characters (python -c 'import secrets; "
                     "print(secrets.token_urlsafe(40))')")
    return Check("token secret", True, f"set ({len(secrets)} secret(s), signing one {len(secrets[0])} chars)")


def check_deid_secret(settings: Settings) -> Check:
    size = len(settings.deid_secret.reveal().encode())
    fix = ("set RADCLOUD_DEID_SECRET to 16+ random characters, keep it stable and hospital-side, "
           "and redeploy (docs/security.md)")
    if not size:
        return Check("deid secret", False, "deid_secret is not set: de-identification requests are refused (503)", fix)
    if size < MIN_DEID_SECRET:
        return Check("deid secret", False, f"deid_secret has {size} bytes: the deidentify plugin refuses it", fix)
    return Check("deid secret", True, f"set ({size} bytes)")


def check_slurm(settings: Settings, client: Any = None) -> Check | None:
    """The HPC cluster, when one is configured: slurmctld answers through slurmrestd, the partition's limits."""
    if not settings.slurm_url:
        return None
    from radcloud.core.errors import RadcloudError
    from radcloud.work.slurmclient import SlurmClient

    try:
        client = client or SlurmClient.from_settings(settings)
        ping = client.ping()
        limits = client.limits()
    except RadcloudError as exc:
        return Check("slurm", False, exc.message[:240],
                     "start it (`radcloud stack up --with-slurm`) or fix slurm_url / slurm_jwt / slurm_partition")
    if str(ping.get("ping", "")).upper() != "UP":
        return Check("slurm", False, f"slurmctld {ping.get('hostname', '?')} answers {ping.get('ping')!r}",
                     "see slurmctld's log on the cluster")
    time = "unlimited" if limits.max_time_min is None else f"{limits.max_time_min} min"
    return Check("slurm", True, f"{settings.slurm_url}: slurmctld up; partition {limits.partition}: "
                 f"{limits.cpus} CPUs, {limits.memory_mb} MB, {limits.gpus} GPUs per node, {time}")


def run_all(settings: Settings, apihost: str, auth: str, expected_actions: Iterable[str]) -> list[Check]:
    """Every check, in the order an admin would fix them."""
    checks = _guard_list("openwhisk api", lambda: check_openwhisk(apihost, auth, expected_actions))
    checks.append(_guard("orthanc", lambda: check_orthanc(settings)))
    checks += _guard_list("s3 bucket", lambda: check_s3(settings))
    checks.append(_guard("redis", lambda: check_redis(settings)))
    checks.append(_guard("token secret", lambda: check_token_secret(settings)))
    checks.append(_guard("deid secret", lambda: check_deid_secret(settings)))
    slurm = _guard("slurm", lambda: check_slurm(settings))  # type: ignore[arg-type, return-value]
    if slurm is not None:
        checks.append(slurm)
    return checks


def _guard_list(name: str, fn: Callable[[], list[Check]]) -> list[Check]:
    try:
        return fn()
    except Exception as exc:
        return [Check(name, False, f"{type(exc).__name__}: {str(exc)[:160]}", "rerun with -v")]
