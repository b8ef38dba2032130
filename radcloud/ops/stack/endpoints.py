"""Where the running stack answers, as radcloud settings or ``RADCLOUD_*`` lines.

Built from the state dir alone (ports + credentials), so any tool can get
the endpoints of a stack another process started.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from radcloud.core.settings import Secret, Settings
from radcloud.ops.stack.install import OHIF_BUILD, OHIF_STUDY_LINK, ohif_built
from radcloud.ops.stack.ports import Ports
from radcloud.ops.stack.state import BUCKET, ORTHANCS, TEST_AET, StateDir


@dataclasses.dataclass(frozen=True)
class OrthancEndpoint:
    name: str
    url: str
    user: str
    password: Secret
    aet: str
    dicom_port: int

    @property
    def auth(self) -> tuple[str, str]:
        return self.user, self.password.reveal()


@dataclasses.dataclass(frozen=True)
class Endpoints:
    state_dir: Path
    credentials_file: Path
    orthancs: dict[str, OrthancEndpoint]
    s3_endpoint: str  # host:port, as the minio SDK wants it (presigned URLs are signed for it)
    s3_access_key: str
    s3_secret_key: Secret
    s3_bucket: str
    redis_url: Secret
    test_aet: str
    test_scp_port: int
    token_secret: Secret = Secret("")
    deid_secret: Secret = Secret("")
    whisk_url: str = ""  # localwhisk's API host (``stack up --with-whisk``)
    # slurmrestd and the stack's token for it (``stack up --with-slurm``; empty before the first)
    slurm_url: str = ""
    slurm_user: str = ""
    slurm_jwt: Secret = Secret("")
    slurm_partition: str = ""
    # The results page's "Open study in the PACS viewer" link: OHIF in the stack's Orthanc, when
    # `make install` built it (Orthanc then serves it, radcloud.ops.stack.config); no credentials in it.
    viewer_url: str = ""

    @classmethod
    def from_state(cls, state: StateDir, ports: Ports, credentials: dict[str, Any],
                   ohif: Path = OHIF_BUILD) -> "Endpoints":
        orthancs = {
            name: OrthancEndpoint(
                name=name, url=f"http://127.0.0.1:{getattr(ports, name + '_http')}",
                user=credentials[name]["user"], password=Secret(credentials[name]["password"]),
                aet=aet, dicom_port=getattr(ports, name + "_dicom"))
            for name, aet in ORTHANCS.items()
        }
        redis_password = credentials["redis"]["password"]
        return cls(
            state_dir=state.root, credentials_file=state.credentials, orthancs=orthancs,
            s3_endpoint=f"127.0.0.1:{ports.s3}", s3_access_key=credentials["s3"]["access_key"],
            s3_secret_key=Secret(credentials["s3"]["secret_key"]), s3_bucket=BUCKET,
            redis_url=Secret(f"redis://:{redis_password}@127.0.0.1:{ports.redis}/0"),
            test_aet=TEST_AET, test_scp_port=ports.test_scp,
            token_secret=Secret(credentials.get("token_secret", "")),
            deid_secret=Secret(credentials.get("deid_secret", "")),
            whisk_url=f"http://127.0.0.1:{ports.whisk}",
            viewer_url=orthancs["orthanc"].url + OHIF_STUDY_LINK if ohif_built(ohif) else "",
            **_slurm(credentials, ports),
        )

    @property
    def orthanc(self) -> OrthancEndpoint:
        return self.orthancs["orthanc"]

    def env(self) -> dict[str, str]:
        """``RADCLOUD_*`` variables (secrets revealed: this is for child processes and radcloud.env)."""
        env = {
            "RADCLOUD_ORTHANC_URL": self.orthanc.url,
            "RADCLOUD_ORTHANC_USER": self.orthanc.user,
            "RADCLOUD_ORTHANC_PASSWORD": self.orthanc.password.reveal(),
            "RADCLOUD_ORTHANC_AET": self.orthanc.aet,
            "RADCLOUD_ORTHANC_DICOM_PORT": str(self.orthanc.dicom_port),
            "RADCLOUD_S3_ENDPOINT": self.s3_endpoint,
            "RADCLOUD_S3_ACCESS_KEY": self.s3_access_key,
            "RADCLOUD_S3_SECRET_KEY": self.s3_secret_key.reveal(),
            "RADCLOUD_S3_SECURE": "false",
            "RADCLOUD_S3_BUCKET": self.s3_bucket,
            "RADCLOUD_REDIS_URL": self.redis_url.reveal(),
            "RADCLOUD_TEST_AET": self.test_aet,
            "RADCLOUD_TEST_SCP_PORT": str(self.test_scp_port),
        }
        if self.viewer_url:
            env["RADCLOUD_VIEWER_URL"] = self.viewer_url
        if self.token_secret:
            env["RADCLOUD_TOKEN_SECRET"] = self.token_secret.reveal()
        if self.deid_secret:
            env["RADCLOUD_DEID_SECRET"] = self.deid_secret.reveal()
        if self.slurm_jwt:
            env.update({"RADCLOUD_SLURM_URL": self.slurm_url, "RADCLOUD_SLURM_USER": self.slurm_user,
                        "RADCLOUD_SLURM_JWT": self.slurm_jwt.reveal(),
                        "RADCLOUD_SLURM_PARTITION": self.slurm_partition,
                        # The node is this machine: this venv's Python runs the shard runner.
                        "RADCLOUD_SLURM_RUNNER": f"{sys.executable} -m radcloud.work.slurmjob"})
        for name, o in self.orthancs.items():
            if name == "orthanc":
                continue
            prefix = f"RADCLOUD_{name.upper()}_"
            env.update({prefix + "URL": o.url, prefix + "USER": o.user,
                        prefix + "PASSWORD": o.password.reveal(), prefix + "AET": o.aet,
                        prefix + "DICOM_PORT": str(o.dicom_port)})
        return env

    def settings(self, **overrides: Any) -> Settings:
        """radcloud Settings pointing at this stack; ``overrides`` are action-style params."""
        return Settings.load(overrides, environ=self.env())

    def public(self) -> dict[str, Any]:
        """A printable view: every secret masked, where the credentials are named instead."""
        return {
            "state_dir": str(self.state_dir),
            "credentials_file": str(self.credentials_file),
            "orthanc": {name: {"url": o.url, "user": o.user, "password": str(o.password),
                               "aet": o.aet, "dicom": f"127.0.0.1:{o.dicom_port}"}
                        for name, o in self.orthancs.items()},
            "s3": {"endpoint": f"http://{self.s3_endpoint}", "access_key": self.s3_access_key,
                   "secret_key": str(self.s3_secret_key), "bucket": self.s3_bucket},
            "redis": {"url": str(self.redis_url), "address": self.redis_url.reveal().rsplit("@", 1)[-1]},
            "test_scp": {"aet": self.test_aet, "port": self.test_scp_port},
            "whisk": {"api_host": self.whisk_url, "web": f"{self.whisk_url}/api/v1/web/guest/radcloud/"},
            "slurm": {"url": self.slurm_url, "user": self.slurm_user, "jwt": str(self.slurm_jwt),
                      "partition": self.slurm_partition},
        }


def _slurm(credentials: dict[str, Any], ports: Ports) -> dict[str, Any]:
    entry = credentials.get("slurm") or {}
    if not entry.get("jwt"):
        return {}
    from radcloud.ops.stack.slurm import PARTITION

    return {"slurm_url": f"http://127.0.0.1:{ports.slurmrestd}", "slurm_user": entry.get("user", "root"),
            "slurm_jwt": Secret(entry["jwt"]), "slurm_partition": PARTITION}
