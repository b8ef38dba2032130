"""The world the reliability, security, fuzz and load tiers run in.

:class:`RcWorld` is tests/e2e/jobflow.py's :class:`JobWorld` (the real stack +
localwhisk + radcloud deployed from deploy/manifest.yaml) with this tier's
plugins dir (the fault fixture ``misbehave`` plus ``deidentify`` next to the
e2e ones), users of every role with tokens, and a web-action client that
speaks HTTP like a browser does (``/api/v1/web/guest/radcloud/<action>``),
through radcloud's retrying client as the CLI does.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from jobflow import JobWorld, ct_instance

HERE = Path(__file__).resolve().parent
PLUGINS_DIR = HERE / "plugins"  # each gets a plugin-<name> action (JobWorld.up)
ROLES = ("clinician", "researcher", "admin")
PASSWORD = "correct horse battery"


class RcWorld(JobWorld):
    tokens: dict[str, str]

    @classmethod
    def up(cls, tmp: Path, *, shard_timeout_s: int = 30,  # type: ignore[override]
           plugins_dir: Path = PLUGINS_DIR, max_containers: int | None = None,
           prewarm: int | None = None, prewarm_plugins: bool = True) -> "RcWorld":
        world = super().up(tmp, shard_timeout_s=shard_timeout_s, plugins_dir=plugins_dir,
                           max_containers=max_containers, prewarm=prewarm, prewarm_plugins=prewarm_plugins)
        world.__class__ = cls
        try:
            world.add_users()
        except BaseException:
            world.down()
            raise
        return world

    @classmethod
    def adopt(cls, world: JobWorld) -> "RcWorld":
        """``world`` (a running :class:`JobWorld`, e.g. the e2e tier's) as an RcWorld, with users of
        every role: its plugins are its own (deployed from its ``plugins_dir``)."""
        world.__class__ = cls
        world.add_users()
        return world  # type: ignore[return-value]

    # -- identities -------------------------------------------------------------------
    @property
    def settings(self):
        from radcloud.core.settings import Settings

        return Settings.load(environ=self.env)

    def add_users(self) -> None:
        from fast_hasher import FAST_HASHER  # tests/unit/fast_hasher.py: accounts, not guess costs, are tested
        from radcloud.access.auth import issue_token
        from radcloud.access.users import UserStore

        store = UserStore(self.redis, FAST_HASHER)
        self.tokens = {}
        for role in ROLES:
            user = store.get(role) or store.add(role, role, PASSWORD)
            self.tokens[role] = issue_token(self.settings, user)
        store.get("svc") or store.add("svc", "service")
        self.api_key = store.create_api_key("svc")

    # -- HTTP -------------------------------------------------------------------------
    def web(self, action: str, *, method: str = "GET", path: str = "", query: str = "",
            body: Any = None, raw: bytes | None = None, token: str | None = None,
            headers: dict[str, str] | None = None, timeout_s: float = 70) -> tuple[int, dict[str, str], Any]:
        """Call a web action like a browser: (status, headers, JSON body or text)."""
        url = f"{self.whisk.api_host}/api/v1/web/guest/radcloud/{action}{path}" + (f"?{query}" if query else "")
        hdrs = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        # The path goes on the wire as written: requests would resolve "/../" before
        # sending, and a traversal probe must reach the server as an attacker sends it.
        prepared = self.http.prepare_request(requests.Request(method, url, data=data, headers=hdrs))
        prepared.url = url
        # A 302 is an answer to check, not to follow.
        resp = self.http.send(prepared, timeout=(10, timeout_s), allow_redirects=False)
        status, rh, content = resp.status_code, dict(resp.headers), resp.content
        try:
            return status, rh, json.loads(content) if content else None
        except ValueError:
            return status, rh, content.decode("utf-8", "replace")

    # -- data -------------------------------------------------------------------------
    def seed_patient(self, name: str, pid: str, birth: str, sizes: list[int], *, size: int = 32) -> tuple[str, list[str]]:
        """A study for one named patient, one series per size; returns (study, series UIDs)."""
        from pydicom.uid import generate_uid

        orthanc = self.endpoints.orthanc
        study = generate_uid()
        series = [generate_uid() for _ in sizes]
        tags = {"PatientName": name, "PatientID": pid, "PatientBirthDate": birth, "OtherPatientIDs": pid + "X",
                "InstitutionName": "Leakcheck General", "ReferringPhysicianName": "Leak^Doctor"}
        # One connection for the whole study (a new one per instance tripled the cost of a POST).
        with requests.Session() as http:
            http.auth, http.trust_env = orthanc.auth, False
            for n, (uid, count) in enumerate(zip(series, sizes), 1):
                for i in range(1, count + 1):
                    r = http.post(orthanc.url + "/instances", data=ct_instance(study, uid, i, n, size, **tags),
                                  timeout=30)
                    r.raise_for_status()
        return study, series

    def run_job(self, plugin: str, rid: str, params: dict | None = None, timeout_s: float = 120,
                **options: Any) -> dict[str, Any]:
        answer = self.call("dispatch", {"plugin": plugin, "params": params or {}, "inputs": {"retrieve": rid},
                                        "options": {"force": True, **options}})
        assert "job_id" in answer, answer
        return self.wait_final(answer["job_id"], timeout_s=timeout_s)


def running_world(tmp: Path, require: Callable[[bool, str], None], **options: Any):
    """An :class:`RcWorld` for a tier's fixture (:meth:`JobWorld.running`)."""
    return RcWorld.running(tmp, require, **options)


def new_secret() -> str:
    return secrets.token_urlsafe(40)
