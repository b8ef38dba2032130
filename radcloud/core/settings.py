"""Typed settings, read from an injectable mapping.

An action passes its params (OpenWhisk package parameters arrive there);
tools pass nothing and get the ``RADCLOUD_*`` environment. Params win over
the environment. Every value is parsed once, with an exact message naming
the source key when it is malformed, and secrets print as ``***``.

    settings = Settings.load(args)          # in an action
    settings = Settings.load(environ=env)   # in a test
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, get_type_hints

from radcloud.core.errors import ConfigError

ENV_PREFIX = "RADCLOUD_"


class Secret:
    """A string that never shows itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("is not a bool (use true/false)")


def _parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("is not an int") from None


def _parse_float(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError("is not a number") from None


_PARSERS = {bool: _parse_bool, int: _parse_int, float: _parse_float, str: str, Secret: Secret}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything radcloud needs to reach its external systems.

    Field names are the action-parameter names; the environment name is
    ``RADCLOUD_`` + the upper-cased field name.
    """

    # Orthanc (the hospital's PACS, or its gateway to one)
    orthanc_url: str = "http://127.0.0.1:8042"
    orthanc_user: str = "radcloud"
    orthanc_password: Secret = Secret("")
    orthanc_timeout_s: float = 30.0
    # Object storage (MinIO or any S3 API)
    s3_endpoint: str = "127.0.0.1:8333"
    s3_access_key: str = ""
    s3_secret_key: Secret = Secret("")
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    s3_bucket: str = "radcloud"
    # Redis: job state, progress, audit (the URL may hold a password)
    redis_url: Secret = Secret("redis://127.0.0.1:6379/0")
    # How long a request waits for the accounts' and audit trail's Redis to come
    # back (a restart) before it fails closed with 503 (radcloud.core.redisclient)
    user_store_retry_s: float = 5.0
    # OpenWhisk: where actions invoke other actions (defaults to __OW_* env)
    ow_api_host: str = ""
    ow_api_key: Secret = Secret("")
    ow_namespace: str = "_"
    ow_package: str = "radcloud"
    # Web-action authentication
    token_secret: Secret = Secret("")
    token_ttl_s: int = 8 * 3600
    # Failed logins (radcloud.access.auth.LoginThrottle): per (user, address) the first
    # ``login_free_failures`` cost nothing, then each waits twice as long as the
    # last, from ``login_backoff_base_s`` up to ``login_backoff_max_s``; one
    # address may fail at most ``login_address_budget`` times per
    # ``login_address_window_s`` across all users.
    login_free_failures: int = 3
    login_backoff_base_s: float = 1.0
    login_backoff_max_s: float = 60.0
    login_address_budget: int = 100
    login_address_window_s: int = 15 * 60
    # Proxies in front of OpenWhisk's edge whose X-Forwarded-For entries are
    # believed (comma-separated addresses or CIDRs, e.g. "10.0.0.5, 10.8.0.0/16").
    # Empty: the address the edge saw is the caller's.
    trusted_proxies: str = ""
    # De-identification: the HMAC key the deidentify plugin derives pseudonyms,
    # UIDs and date shifts from (>= 16 characters). Hospital-side only: given
    # to plugins whose descriptor declares ``radcloud.deid``, never to others.
    deid_secret: Secret = Secret("")
    # ChRIS compute resource (radcloud.pfcon): the credentials CUBE logs in with
    pfcon_user: str = ""
    pfcon_password: Secret = Secret("")
    # Web UI: the PACS viewer's study link, with {study_uid} as placeholder
    viewer_url: str = ""
    # Limits
    retrieve_workers: int = 4  # uploaders per series; memory stays ~190 MB at most (radcloud.work.retrieve)
    query_limit_max: int = 1000
    presign_ttl_s: int = 900
    shard_timeout_s: int = 300
    # How units of tracked work run (radcloud.work.executors): "action" (an
    # OpenWhisk action per shard) or another installed executor module
    executor: str = "action"
    # An HPC cluster for plugins bigger than an action (radcloud.work.slurmclient): slurmrestd's
    # URL, the user and JWT it authenticates (scontrol token), where jobs go;
    # empty slurm_url: no cluster configured
    slurm_url: str = ""
    slurm_user: str = ""
    slurm_jwt: Secret = Secret("")
    slurm_partition: str = ""
    slurm_account: str = ""
    # The command that runs radcloud's shard runner on a compute node (a Python with
    # radcloud and the plugins installed, or `apptainer exec <image> python3 …`)
    slurm_runner: str = "python3 -m radcloud.work.slurmjob"
    # Where a Slurm job reports (the shard_report web action as the cluster reaches it);
    # empty: this deployment's own (radcloud.work.shardchannel.report_url)
    slurm_report_url: str = ""
    # Watchers (radcloud.work.jobwatch): long-polls allowed to block at once, for a
    # lone watcher (off: the status action has one container; with N, give it
    # N + 1 instances; docs/jobs.md), and the status calls per second budgeted for polling
    watch_slots: int = 0
    watch_rate: float = 20.0
    # Arrivals (radcloud.arrivals.watch): a study is routed once it received nothing
    # for this long (match Orthanc's StableAge), the change log polled this often
    arrivals_stable_age_s: float = 5.0
    arrivals_poll_s: float = 0.5

    @classmethod
    def load(
        cls,
        params: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> "Settings":
        """Build settings from action params, then ``RADCLOUD_*`` environment.

        Raises:
            ConfigError: a value cannot be parsed; the message names the key.
        """
        params = params or {}
        environ = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            env_key = ENV_PREFIX + field.name.upper()
            if field.name in params and params[field.name] is not None:
                source, raw = field.name, params[field.name]
            elif env_key in environ:
                source, raw = env_key, environ[env_key]
            else:
                continue
            values[field.name] = _coerce(hints[field.name], raw, source, field.name)
        settings = cls(**values)
        return settings._with_openwhisk_defaults(environ)

    def _with_openwhisk_defaults(self, environ: Mapping[str, str]) -> "Settings":
        # Inside an action OpenWhisk sets __OW_API_HOST/__OW_API_KEY itself.
        updates: dict[str, Any] = {}
        if not self.ow_api_host and environ.get("__OW_API_HOST"):
            updates["ow_api_host"] = environ["__OW_API_HOST"]
        if not self.ow_api_key and environ.get("__OW_API_KEY"):
            updates["ow_api_key"] = Secret(environ["__OW_API_KEY"])
        return dataclasses.replace(self, **updates) if updates else self

    def require(self, *names: str) -> None:
        """Raise ConfigError naming every listed setting that is empty."""
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            keys = ", ".join(f"{n} (or {ENV_PREFIX}{n.upper()})" for n in missing)
            raise ConfigError(f"missing setting: {keys}")

    def public(self) -> dict[str, Any]:
        """A printable view: secrets masked."""
        return {f.name: str(v) if isinstance(v := getattr(self, f.name), Secret) else v
                for f in dataclasses.fields(self)}


def _coerce(kind: type, raw: Any, source: str, name: str) -> Any:
    if kind is Secret:
        if isinstance(raw, Secret):
            return raw
        if not isinstance(raw, str):
            raise ConfigError(f"{source} must be a string", field=name)
        return Secret(raw)
    if isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
        return raw
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if not isinstance(raw, str):
        raise ConfigError(f"{source}={raw!r} is not a {kind.__name__}", field=name)
    try:
        return _PARSERS[kind](raw)
    except ValueError as exc:
        raise ConfigError(f"{source}={raw!r} {exc}", field=name) from None
