"""The world an end-to-end job test runs in: the real stack + localwhisk + radcloud deployed.

``JobWorld.up(tmp)`` starts Orthanc, Redis and SeaweedFS (radcloud.ops.stack),
starts a localwhisk server with the images file ``radcloud deploy --local``
uses (radcloud.ops.deploy.local_images: every image is this checkout, common
modules preloaded) and deploys deploy/manifest.yaml the same way, plus one
``plugin-<name>`` action per fixture plugin in ``plugins_dir`` (derived from
its descriptor like the manifest's own). Shared by tests/e2e/test_job_flow.py,
test_pfcon_flow.py and tests/reliability/rcworld.py.

Reads never write (status, retrieve GET): what finishes a unit its executor
lost is the ``reconcile`` action, which a deployment fires on an alarm
trigger; this world does what the alarm does — :meth:`JobWorld.tick` invokes
``reconcile`` at most once a second, before a read of a job or a retrieve.

Every call goes through radcloud's own HTTP client (:mod:`radcloud.core.retry`),
so a namespace at its concurrency limit (OpenWhisk's 429) is waited out as a
real client would, never turned into a failed test; watching a job follows
the status answer's ``poll_after_ms`` like the CLI and the web UI do.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import secrets
import time
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pydicom
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

FINAL = ("succeeded", "failed", "partial", "cancelled")
RECONCILE_EVERY_S = 1.0  # what the alarm trigger does in a deployment, at most this often
BUSY_BUDGET_S = 180.0  # a saturated namespace frees slots within seconds; a test waits this long at most
# The invoker's container pool of a test fixture's world (localwhisk's default, 8, is a
# standalone OpenWhisk's 2 GB of 256 MB containers). A tier calls a dozen or more actions
# (web actions, reconcile, one per plugin): in 8 containers they evicted each other on
# nearly every call, and each eviction is a cold start (a Python process importing the
# action, ~0.2 s of CPU): 150 in the security tier, 250 in the real-file matrix. The load
# tier, which is about saturation, keeps the default. Benches (JobWorld.up) are unchanged.
FIXTURE_MAX_CONTAINERS = 20

# What the e2e tier's shared world (``job_world``, tests/e2e/conftest.py) is deployed with from
# the start: pfcon's account and ChRIS's bucket (test_pfcon_flow.py) and deidentify's secret
# (test_plugins_deployed.py). Each module used to bind its own and redeploy, and pfcon ran in a
# world of its own (a second stack, Slurm cluster and localwhisk); bound once, one deploy serves all.
PFCON_USER, PFCON_PASSWORD, CHRIS_BUCKET = "chris", "pfcon-e2e-password", "chris"
E2E_WORLD_ENV = {"RADCLOUD_PFCON_USER": PFCON_USER, "RADCLOUD_PFCON_PASSWORD": PFCON_PASSWORD,
                 "RADCLOUD_PFCON_BUCKET": CHRIS_BUCKET, "RADCLOUD_DEID_SECRET": "e2e-deid-secret-0123456789"}

# Outside /tmp on purpose: localwhisk gives each action a private /tmp.
PLUGINS_DIR = Path(__file__).resolve().parent / "plugins"  # dcm2png and copy are symlinks


def ct_instance(study: str, series: str, number: int, series_number: int, size: int = 64, **tags: Any) -> bytes:
    """A small CT instance (a disc in noise); ``tags`` (keyword → value) set or override attributes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Jobs", "JOBS1", "20000101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", "ACC1"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", series_number, number
    ds.SeriesDescription = f"series {series_number}"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.WindowCenter, ds.WindowWidth = -1024, 1, 40, 400
    ds.PixelSpacing, ds.SliceThickness = [0.8, 0.8], 1.0
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, float(number)], [1, 0, 0, 0, 1, 0]
    yy, xx = np.mgrid[:size, :size]
    c = size // 2
    img = np.where((yy - c) ** 2 + (xx - c) ** 2 < (size // 6 + number) ** 2, 1100, 24).astype(np.int16)
    img += (np.random.default_rng(number).normal(0, 20, img.shape)).astype(np.int16)
    ds.PixelData = img.tobytes()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


class MissingPrerequisite(RuntimeError):
    """A binary the world needs is not installed: the one reason a fixture may skip
    (and only outside CI, through the ``require`` fixture). A stack or localwhisk
    that fails to start is an error, never a skip."""


class JobWorld:
    """A running stack + localwhisk with radcloud deployed."""

    def __init__(self, tmp: Path, stack: Any, endpoints: Any, whisk: Any, redis: Any) -> None:
        from radcloud.core import retry

        self.tmp, self.stack, self.endpoints, self.whisk, self.redis = tmp, stack, endpoints, whisk, redis
        self.busy_answers = 0  # 429/503 the client waited out (a figure of the load tier)
        self.http = retry.session(budget_s=BUSY_BUDGET_S, pool=64, on_busy=self._count_busy)
        self.http.trust_env = False
        self._ticked = float("-inf")

    @classmethod
    def up(cls, tmp: Path, *, shard_timeout_s: int = 30, plugins_dir: Path = PLUGINS_DIR,
           extra_env: dict[str, str] | None = None, max_containers: int | None = None,
           prewarm: int | None = None, slurm: bool = False, prewarm_plugins: bool = True) -> "JobWorld":
        import redis as redis_lib

        from localwhisk.testing import Server
        from radcloud.ops import deploy
        from radcloud.ops.stack import DEFAULT_SERVICES, Ports, Stack
        from radcloud.ops.stack.install import find

        binaries = find()
        if binaries.missing:
            raise MissingPrerequisite(f"missing binaries: {binaries.missing}")
        if slurm:
            from radcloud.ops.stack.install import SLURM_REQUIREMENTS

            missing = find(SLURM_REQUIREMENTS).missing
            if missing:
                raise MissingPrerequisite(f"missing Slurm binaries: {missing}")
        stack = Stack(tmp / "stack", Ports.ephemeral(), binaries=binaries, timeout_s=60)
        whisk = None
        try:
            from radcloud.ops.stack.state import SLURM_SERVICES

            # slurm: also a one-node Slurm cluster, which the actions' settings then name (routing).
            endpoints = stack.up((*DEFAULT_SERVICES, *(SLURM_SERVICES if slurm else ())), install_missing=False)
            env = {**endpoints.env(), "RADCLOUD_SHARD_TIMEOUT_S": str(shard_timeout_s),
                   "RADCLOUD_TOKEN_SECRET": secrets.token_urlsafe(40),
                   # As deployed (docs/deploy.md, radcloud.ops.stack): successful blocking activations
                   # (every web action) leave no record; their answers carry PHI and tokens.
                   "CONFIG_whisk_activation_storeBlockingResultLevel": "STORE_FAILURES", **(extra_env or {})}
            env.update(deploy.local_image_env(env))
            images = tmp / "images.json"
            images.write_text(json.dumps(deploy.local_images(env, plugins_dir=plugins_dir,
                                                             prewarm_plugins=prewarm_plugins)))
            extra = ["--images-file", str(images)]
            if max_containers:  # the invoker's container pool (localwhisk's default: 8)
                extra += ["--max-containers", str(max_containers)]
            if prewarm:  # stem cells per kind of process (localwhisk's default: 1)
                extra += ["--prewarm", str(prewarm)]
            whisk = Server(tmp / "whisk", extra_args=extra, env=env, max_concurrent=30)
            whisk.start()
            world = cls(tmp, stack, endpoints, whisk,
                        redis_lib.Redis.from_url(endpoints.redis_url.reveal(), decode_responses=True))
            world.env, world.plugins_dir = env, plugins_dir
            world.deploy()
        except BaseException:
            # A world that fails half-way must not leave its services running.
            try:
                if whisk is not None:
                    whisk.stop()
            finally:
                stack.down()
            raise
        return world

    @classmethod
    @contextlib.contextmanager
    def running(cls, tmp: Path, require: Callable[[bool, str], None], **options: Any) -> Iterator["JobWorld"]:
        """A world for a test fixture, always taken down. ``require`` decides what a
        machine without the binaries means (fail in CI, skip elsewhere); a world that
        fails to start for any other reason is an error everywhere."""
        options.setdefault("max_containers", FIXTURE_MAX_CONTAINERS)
        # A fixture's world prewarms only the runtime image (every radcloud action) from the start.
        # Each start and restart of localwhisk otherwise started a stem cell per plugin image at
        # once (eleven in the reliability worlds, importing numpy, pydicom, minio...: about a second
        # of CPU each), though a tier runs two to four of those plugins: the first call after a
        # restart waited 16-18 s for the CPU instead of 6-12 s (load ~30). A plugin's image gets its
        # stem pool after its first cold start (localwhisk's rule for an image not prewarmed).
        options.setdefault("prewarm_plugins", False)
        try:
            world = cls.up(tmp, **options)
        except MissingPrerequisite as exc:
            require(False, str(exc))
            raise
        try:
            yield world
        finally:
            from background import stop_later

            stop_later(world.down, f"the {cls.__name__} in {tmp}")

    def _count_busy(self, status: int) -> None:
        self.busy_answers += 1

    def deploy(self) -> None:
        """Deploy (again, e.g. after changing ``self.env``) as ``radcloud deploy --local`` does."""
        from radcloud.ops import deploy

        deploy.deploy(self.whisk.api_host, self.whisk.auth, self.env, plugins_dir=self.plugins_dir)

    def down(self) -> None:
        try:
            self.whisk.stop()
        finally:
            self.stack.down()

    # -- data ------------------------------------------------------------------------
    def seed_study(self, sizes: list[int], *, size: int = 64) -> tuple[str, list[str]]:
        orthanc = self.endpoints.orthanc
        study = generate_uid()
        series = [generate_uid() for _ in sizes]
        for n, (uid, size) in enumerate(zip(series, sizes), 1):
            for i in range(1, size + 1):
                r = requests.post(orthanc.url + "/instances", data=ct_instance(study, uid, i, n, size),
                                  auth=orthanc.auth, timeout=30)
                r.raise_for_status()
        return study, series

    def orthanc_series(self, study: str) -> list[dict[str, Any]]:
        orthanc = self.endpoints.orthanc
        r = requests.post(orthanc.url + "/tools/find", auth=orthanc.auth, timeout=30,
                          json={"Level": "Series", "Expand": True, "Query": {"StudyInstanceUID": study}})
        r.raise_for_status()
        return r.json()

    # -- actions -----------------------------------------------------------------------
    def tick(self) -> None:
        """Reconcile (the alarm trigger's job in a deployment), at most once per RECONCILE_EVERY_S."""
        now = time.monotonic()
        if now - self._ticked >= RECONCILE_EVERY_S:
            self._ticked = now
            # Its answer is the alarm's business: an error here (Redis down in a fault test)
            # is the next tick's to retry, never the read's.
            self._invoke("reconcile", {})

    def call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """Invoke ``radcloud/<action>`` blocking, as the namespace's key; the result (or its error).

        Before a read of a job or a retrieve, the world ticks (reconcile, at most 1/s).
        """
        if action in ("status", "retrieve"):
            self.tick()
        return self._invoke(action, params)

    def _invoke(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        user, _, key = self.whisk.auth.partition(":")
        resp = self.http.post(f"{self.whisk.api_host}/api/v1/namespaces/_/actions/radcloud/{action}",
                              params={"blocking": "true", "result": "true"}, json=params, auth=(user, key),
                              timeout=(10, 75))
        body = resp.json() if resp.content else None
        if resp.status_code not in (200, 502):
            raise RuntimeError(f"{action} answered {resp.status_code}: {body}")
        return body

    def stage(self, study: str, timeout_s: float = 60) -> str:
        answer = self.call("retrieve", {"StudyInstanceUID": study})
        rid = answer["retrieve_id"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.call("retrieve", {"retrieve_id": rid})["state"]
            if state in ("succeeded", "failed", "partial"):
                assert state == "succeeded", state
                return rid
            time.sleep(0.2)
        raise TimeoutError(f"retrieve {rid} did not finish")

    def wait_state(self, job_id: str, states: tuple[str, ...], timeout_s: float = 30) -> dict[str, Any]:
        """Watch the job as the CLI does: offer to long-poll, wait ``poll_after_ms`` between calls.

        A passing state (``running``) can last less than one paced poll, so a test
        that must act while the job is in it watches the job's record in Redis
        itself, then reads the job through ``status`` once.
        """
        deadline = time.monotonic() + timeout_s
        if not set(states) <= set(FINAL):
            self.wait_record(job_id, states, timeout_s)
            return self.call("status", {"job_id": job_id})
        job = self.call("status", {"job_id": job_id})
        while job.get("state") not in states and time.monotonic() < deadline:
            time.sleep(min(max(0.0, deadline - time.monotonic()),
                           float(job.get("poll_after_ms") or 0) / 1000 * random.uniform(0.8, 1.2)))
            job = self.call("status", {"job_id": job_id, "wait": 10, "since": job["version"]})
        return job

    def wait_record(self, job_id: str, states: tuple[str, ...], timeout_s: float = 30) -> str | None:
        """The state the job's Redis record was seen in, watched every 50 ms until it is one of ``states``.

        What a test that must act *while* the job is running asserts on: on a busy
        machine the ``status`` answer read afterwards can already be final.
        """
        from radcloud.work.jobs import JobStore

        key, deadline = JobStore(self.redis).key(job_id), time.monotonic() + timeout_s
        state = self.redis.hget(key, "state")
        while state not in states and time.monotonic() < deadline:
            time.sleep(0.05)
            state = self.redis.hget(key, "state")
        return state

    def wait_final(self, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
        """Watch the job until it is final; TimeoutError naming its state if it is not in time."""
        job = self.wait_state(job_id, FINAL, timeout_s)
        if job.get("state") not in FINAL:
            raise TimeoutError(f"job {job_id} still {job.get('state')}")
        return job


# -- the world's Slurm cluster (JobWorld.up(slurm=True)) -----------------------------------
def slurm_job(client: Any, job_id: str, states: set[str], limit_s: float = 30.0) -> dict[str, Any]:
    """Slurm's record of a job once it is in one of ``states`` (asserted)."""
    job = client.wait(job_id, states, limit_s=limit_s)
    assert job.get("job_state") in states, f"Slurm job {job_id}: {job.get('job_state')}, not {sorted(states)}"
    return job


def release_requeued(state: Any, handle: str, pending_at: float) -> None:
    """Release a requeued Slurm job that Slurm holds back (its BeginTime): ``StartTime=now``, once a
    later second than ``pending_at`` (``time.time()`` when the job was seen PENDING again) has begun.

    slurmd refuses a launch whose credential was made in the same second as the revoked one ("Killing
    non-startable batch JobId=9: Job credential revoked", seen once in a fresh-clone run). The
    revocation is stamped when slurmctld kills the first run, before the job is PENDING again: a
    launch in a later second than ``pending_at`` is in a later second than it (was a fixed 2 s).
    """
    from radcloud.ops.stack import slurm as stack_slurm

    time.sleep(max(0.0, int(pending_at) + 1.05 - time.time()))
    stack_slurm.scontrol(state, "update", f"JobId={handle}", "StartTime=now")


@contextlib.contextmanager
def node_held(client: Any) -> Iterator[str]:
    """A job holding every CPU of the node: what the cluster runs next waits in its queue."""
    blocker = client.submit("#!/bin/sh\nsleep 120\n", name="radcloud-test-blocker", cpus=client.limits().cpus,
                            memory_mb=64, time_limit_min=5)
    try:
        slurm_job(client, blocker, {"RUNNING"})
        yield blocker
    finally:
        client.cancel(blocker)

