"""Layout of the stack's state directory and what is persisted in it.

Everything the local stack writes lives under one directory (default
``.radcloud/``): generated credentials (``credentials.json``, mode 0600),
the chosen ports (``ports.json``), configs rendered from templates, data,
logs and the PID records ``down`` relies on. Nothing outside it is touched.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

# Orthanc instances the stack knows: name -> (DICOM AET, HTTP user).
# "orthanc" is radcloud's own; "pacs" plays a remote hospital PACS in
# query/retrieve tests. Each knows every other one as a DICOM modality.
ORTHANCS: dict[str, str] = {"orthanc": "RADCLOUD", "pacs": "HOSPITAL_PACS"}
# Services `radcloud stack up` starts by default, and every service it knows.
DEFAULT_SERVICES = ("orthanc", "redis", "s3")
# `stack up --with-slurm`: a one-node Slurm cluster (radcloud.ops.stack.slurm), munge first.
SLURM_SERVICES = ("munge", "slurmctld", "slurmd", "slurmrestd")
# `stack up --with-arrivals`: the arrivals watcher (radcloud.arrivals.watch) firing localwhisk's trigger.
ALL_SERVICES = (*ORTHANCS, "redis", "s3", "whisk", "arrivals", *SLURM_SERVICES)
TEST_AET = "RADCLOUD_TEST"
ORTHANC_USER = "radcloud"
S3_ACCESS_KEY_PREFIX = "radcloud-"
BUCKET = "radcloud"


_NOT_SECRET = {"user", "access_key"}


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every one of ``secrets`` replaced by ``***`` (longest first)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (it holds secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)  # O_CREAT's mode is masked by umask and ignored for existing files
    os.replace(tmp, path)


class StateDir:
    """Paths under the state directory; creates nothing until asked."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    @property
    def credentials(self) -> Path:
        return self.root / "credentials.json"

    @property
    def ports_file(self) -> Path:
        return self.root / "ports.json"

    @property
    def env_file(self) -> Path:
        return self.root / "radcloud.env"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def service_dir(self, service: str) -> Path:
        return self.root / service

    def log(self, service: str) -> Path:
        return self.log_dir / f"{service}.log"

    def pid_file(self, service: str) -> Path:
        return self.run_dir / f"{service}.json"

    def remember_credential(self, name: str, value: Any) -> None:
        """Add or replace one entry of the credentials file (e.g. the demo user's password)."""
        creds = self.credentials_data()
        creds[name] = value
        write_private(self.credentials, json.dumps(creds, indent=2) + "\n")

    @property
    def whisk_dir(self) -> Path:
        return self.root / "whisk"

    def create(self) -> None:
        for path in (self.root, self.run_dir, self.log_dir):
            path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def load_json(self, path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def secret_values(self) -> list[str]:
        """Every secret the stack holds: generated credentials and localwhisk's namespace key.

        For redacting what is printed (``radcloud stack logs``); user names
        and the S3 access key are identifiers, not secrets, and stay readable.
        """
        found: list[str] = []

        def walk(value: Any, key: str = "") -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(v, k)
            elif isinstance(value, str) and key not in _NOT_SECRET:
                found.append(value)

        walk(self.load_json(self.credentials) or {})
        for path in (self.whisk_dir / ".wskprops", *sorted((self.whisk_dir / "auth").glob("*"))):
            try:
                text = path.read_text(encoding="utf-8")
            except OSError:
                continue
            for line in text.splitlines():
                key = line.split("=", 1)[1] if line.startswith("AUTH=") else line if ":" in line else ""
                if key.strip():
                    found += [key.strip(), key.strip().partition(":")[2]]  # "uuid:key" and the key alone
        return sorted({v for v in found if len(v) >= 8}, key=len, reverse=True)

    def credentials_data(self) -> dict[str, Any]:
        """Generated credentials, created (and persisted 0600) on first use.

        Kept across ``down``/``up`` because Orthanc's and Redis's data
        outlive a restart and clients hold the keys in ``radcloud.env``.
        """
        from radcloud.ops.stack.weed import new_keys

        existing = self.load_json(self.credentials)
        if existing is not None:
            added = [k for k in ("token_secret", "deid_secret") if k not in existing]
            for key in added:  # a state dir from before these secrets existed
                existing[key] = secrets.token_urlsafe(40)
            if "weed" not in existing:
                existing["weed"] = new_keys()
                added.append("weed")
            if added:
                write_private(self.credentials, json.dumps(existing, indent=2) + "\n")
            return existing
        creds: dict[str, Any] = {
            name: {"user": ORTHANC_USER, "password": secrets.token_urlsafe(18)} for name in ORTHANCS
        }
        creds["redis"] = {"password": secrets.token_urlsafe(24)}
        creds["s3"] = {
            "access_key": S3_ACCESS_KEY_PREFIX + secrets.token_hex(6),
            "secret_key": secrets.token_urlsafe(30),
        }
        creds["token_secret"] = secrets.token_urlsafe(40)  # signs users' tokens (the login action)
        creds["deid_secret"] = secrets.token_urlsafe(40)  # deidentify's HMAC key (pseudonyms, UIDs)
        creds["weed"] = new_keys()  # SeaweedFS's JWT signing keys (filer and volume servers)
        self.create()
        write_private(self.credentials, json.dumps(creds, indent=2) + "\n")
        return creds
