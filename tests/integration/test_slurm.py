"""The stack's real one-node Slurm cluster, driven through slurmrestd (radcloud.work.slurmclient).

One cluster for the session (the ``slurm`` fixture: ``stack up --with-slurm``
on the session's stack); no mock of Slurm anywhere. Waits are bounded polls
of the job's state, never timed asserts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from radcloud.core.errors import BadRequest, ConfigError, UpstreamError
from radcloud.core.settings import Secret
from radcloud.work.slurmclient import ENDED, SlurmClient
from radcloud.ops.stack import Ports, Stack
from radcloud.ops.stack.slurm import NODE, PARTITION, mint_token
from radcloud.ops.stack.state import SLURM_SERVICES

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def client(slurm) -> SlurmClient:
    return SlurmClient.from_settings(slurm.settings())


def wait_state(client: SlurmClient, job_id: int, states: set[str], limit_s: float = 30.0) -> dict:
    job = client.wait(job_id, states, limit_s=limit_s)
    assert job.get("job_state") in states, (f"job {job_id} never reached {sorted(states)}; last: "
                                            f"{job.get('job_state')} ({job.get('state_reason')})")
    return job


def test_stack_up_with_slurm_reports_a_healthy_cluster(stack, slurm, client):
    status = stack.stack.status(SLURM_SERVICES)
    assert all(status[name]["running"] and status[name]["healthy"] for name in SLURM_SERVICES), status
    assert client.ping()["ping"] == "UP"
    limits = client.limits()
    assert (limits.partition, limits.cpus) == (PARTITION, os.cpu_count())
    assert limits.memory_mb > 1024 and limits.max_time_min == 60
    env = slurm.env()
    assert env["RADCLOUD_SLURM_URL"].startswith("http://127.0.0.1:") and env["RADCLOUD_SLURM_PARTITION"] == PARTITION
    # The token is a secret: masked in what is printed, and the munge key is the stack's own, private.
    assert slurm.slurm_jwt.reveal() not in json.dumps(slurm.public())
    key = stack.state_dir / "slurm" / "munge" / "munge.key"
    assert key.stat().st_mode & 0o777 == 0o600


def test_doctor_checks_the_cluster(slurm):
    from radcloud.ops.doctor import check_slurm

    check = check_slurm(slurm.settings())
    assert check.ok and f"partition {PARTITION}: {os.cpu_count()} CPUs" in check.detail, check
    broken = check_slurm(dataclasses.replace(slurm.settings(), slurm_partition="nope"))
    assert not broken.ok and "'nope' does not exist" in broken.detail
    assert check_slurm(dataclasses.replace(slurm.settings(), slurm_url="")) is None


def test_a_batch_job_runs_on_the_node_and_completes(client, tmp_path):
    out = tmp_path / "out.txt"
    job_id = client.submit(f"#!/bin/sh\necho \"$SLURM_JOB_ID on $SLURMD_NODENAME\" > {out}\n",
                           name="radcloud-test-ok", cpus=1, memory_mb=64, time_limit_min=1)
    job = wait_state(client, job_id, ENDED)
    assert (job["job_state"], job["exit_code"]) == ("COMPLETED", 0)
    assert out.read_text().split() == [str(job_id), "on", NODE]


def test_a_failing_job_keeps_its_exit_code(client):
    job_id = client.submit("#!/bin/sh\nexit 3\n", name="radcloud-test-fail", memory_mb=64, time_limit_min=1)
    job = wait_state(client, job_id, ENDED)
    assert job["job_state"] == "FAILED"
    assert os.waitstatus_to_exitcode(job["exit_code"]) == 3  # v0.0.38 gives the raw wait status


def test_cancel_is_scancel(client):
    job_id = client.submit("#!/bin/sh\nsleep 120\n", name="radcloud-test-cancel", memory_mb=64, time_limit_min=5)
    wait_state(client, job_id, {"RUNNING"})
    client.cancel(job_id)
    assert wait_state(client, job_id, ENDED)["job_state"] == "CANCELLED"
    client.cancel(job_id)  # again, ended: quiet
    client.cancel(999999)  # unknown: quiet


def test_a_job_over_its_memory_ends_out_of_memory_where_there_is_a_memory_cgroup(stack, client):
    """With a memory cgroup (radcloud.ops.stack.slurm.memory_cgroup: root and a writable cgroup v1
    memory controller, as here) the kernel stops the job at its --mem and Slurm says OUT_OF_MEMORY;
    without one (most containers) Slurm's sampling kills it and says FAILED — docs/deploy.md."""
    from radcloud.ops.stack.slurm import memory_cgroup
    from radcloud.work.slurmstate import status_of

    job_id = client.submit("#!/bin/sh\nexec python3 -c 'b = bytearray(400 * 2**20); import time; time.sleep(5)'\n",
                           name="radcloud-test-oom", memory_mb=100, time_limit_min=1)
    job = wait_state(client, job_id, ENDED)
    status = status_of(job)
    if memory_cgroup(stack.stack.state) is not None:
        assert job["job_state"] == "OUT_OF_MEMORY", job["job_state"]
        assert (status.outcome, status.reason) == \
            ("failed", f"Slurm job {job_id} ran out of memory (100 MB): OUT_OF_MEMORY")
    else:
        assert job["job_state"] == "FAILED" and status.outcome == "failed", job["job_state"]
    small = client.submit("#!/bin/sh\nexec python3 -c 'b = bytearray(20 * 2**20)'\n", name="radcloud-test-fits",
                          memory_mb=100, time_limit_min=1)
    assert wait_state(client, small, ENDED)["job_state"] == "COMPLETED"  # within its memory: untouched


def test_more_than_the_node_has_is_refused_by_slurm(client):
    limits = client.limits()
    with pytest.raises(BadRequest, match="node configuration is not available"):
        client.submit("#!/bin/sh\ntrue\n", name="radcloud-test-big", memory_mb=limits.memory_mb * 4)


def test_a_token_slurm_did_not_sign_is_refused_with_what_to_do(slurm):
    forged = SlurmClient(slurm.slurm_url, "root", mint_token(b"not the cluster's key" * 2))
    with pytest.raises(UpstreamError, match="RADCLOUD_SLURM_JWT"):
        forged.ping()
    key = (Path(slurm.state_dir) / "slurm" / "jwt.key").read_bytes()
    with pytest.raises(ConfigError, match="expired"):
        SlurmClient(slurm.slurm_url, "root", mint_token(key, lifespan_s=60, now=time.time() - 3600))


def test_stack_down_stops_the_cluster_and_its_jobs(tmp_path_factory):
    """A second, slurm-only stack: `down` with a job running leaves no daemon and no job process."""
    stk = Stack(tmp_path_factory.mktemp("slurm-only"), Ports.ephemeral(), timeout_s=30)
    endpoints = stk.up(SLURM_SERVICES, install_missing=False)
    try:
        other = SlurmClient.from_settings(endpoints.settings())
        marker = f"radcloud-down-{os.getpid()}-{time.monotonic_ns()}"
        job_id = other.submit(f"#!/bin/bash\nexec -a {marker} sleep 300\n", name="radcloud-test-down",
                              memory_mb=64, time_limit_min=10)
        wait_state(other, job_id, {"RUNNING"})
        deadline = time.monotonic() + 10
        while not _processes_named(marker) and time.monotonic() < deadline:
            time.sleep(0.1)  # RUNNING comes before the batch script has started
        assert _processes_named(marker)
    finally:
        assert set(stk.down()) == set(SLURM_SERVICES)
    assert not any(stk.running(name) for name in SLURM_SERVICES)
    assert not _processes_named(marker)
    assert not _processes_named(str(stk.state.root))  # no daemon of that state dir left


def _processes_named(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return [p for p in found if p != os.getpid()]


# -- the executor under the job model: dispatch -> Slurm, status, cancel, reconcile --------
def _stage_ct(store, tmp_path, count: int = 40) -> str:
    """A phantom CT series staged in S3 as retrieve stages one (instances + manifest); its series UID."""
    import hashlib

    import pydicom

    from plugin_helpers import write_ct_series

    paths = write_ct_series(tmp_path / "ct", count=count, rows=128, thickness=3.0)
    first = pydicom.dcmread(paths[0], stop_before_pixels=True)
    study, series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    prefix = f"studies/{study}/{series}/"
    instances = []
    for path in paths:
        data = path.read_bytes()
        info = store.put_bytes(f"{prefix}{path.name}", data)
        instances.append({"key": info.key, "size": info.size, "md5": hashlib.md5(data).hexdigest()})
    store.put_json(f"manifests/{study}/{series}.json", {"prefix": prefix, "StudyInstanceUID": study,
                                                        "SeriesInstanceUID": series, "expected": len(paths),
                                                        "instances": instances, "complete": True})
    return series


@pytest.fixture(scope="module")
def services(slurm):
    """In-process dispatch and reconcile; these jobs never start (their node reports through the deployed
    shard_report action: a running one is tests/e2e/test_slurm_flow.py's)."""
    from radcloud.work.jobservices import JobServices

    return JobServices.from_settings(dataclasses.replace(
        slurm.settings(), token_secret=Secret("t" * 40), slurm_report_url="http://127.0.0.1:9/not-reached"))


@pytest.fixture(scope="module", autouse=True)
def past_its_time_limit(stack, slurm, services, tmp_path_factory):
    """A shard whose Slurm job is already past its time limit, started before this module's other tests.

    Its runner is held (``sleep``, as a runner stuck in an upload would be) so
    only Slurm can end it, and once RUNNING ``scontrol update TimeLimit=0``
    puts its end at its start. slurmctld tests time limits every 30 s
    (PERIODIC_TIMEOUT, compiled in) and Slurm's limits are whole minutes, so
    the TIMEOUT comes within ~30 s of the update however the cluster is
    configured: started first, that wait overlaps the module's other tests and
    :func:`test_a_shard_past_its_slurm_time_limit_fails_with_timeout_and_what_to_do`
    (placed before the slurmctld restart, which starts that 30 s cycle again)
    waits only what is left of it. Yields ``(job_id, slurm job id, when updated)``.
    """
    from radcloud.ops.stack.slurm import scontrol
    from radcloud.work.jobservices import JobServices

    held = JobServices.from_settings(dataclasses.replace(services.settings, slurm_runner="sleep 600"))
    series = _stage_ct(held.store, tmp_path_factory.mktemp("timeout"), count=1)
    answer = held.dispatcher().dispatch({"plugin": "dicom-tags", "inputs": {"series": [series]},
                                         "options": {"force": True, "executor": "slurm"}}, "alice")
    job_id = answer["job_id"]
    slurm_id = held.jobs.get(job_id)["shards"][0]["activation_id"]
    client = SlurmClient.from_settings(slurm.settings())
    wait_state(client, int(slurm_id), {"RUNNING"})
    scontrol(stack.stack.state, "update", f"JobId={slurm_id}", "TimeLimit=0")
    yield job_id, slurm_id, time.monotonic()
    client.cancel(slurm_id)  # ended by then, unless the module stopped early


def _settle(services, job_id: str, until, limit_s: float = 120.0) -> dict:
    """Reconcile the job (as the alarm-triggered sweep does) until ``until(job)``; bounded."""
    from radcloud.work import reconcile

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        reconcile.reconcile_job(services.jobs, job_id, services.executor_named, finaliser=services.finaliser)
        job = services.jobs.get(job_id)
        if until(job):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} never settled: {job['state']} {[(s['state'], s.get('reason')) for s in job['shards']]}")


def test_a_job_slurm_no_longer_knows_is_failed_with_a_reason(services, tmp_path):
    series = _stage_ct(services.store, tmp_path, count=2)
    answer = services.dispatcher().dispatch({"plugin": "ct-resample", "inputs": {"series": [series]},
                                             "options": {"force": True}}, "alice")
    job_id, sid = answer["job_id"], services.jobs.get(answer["job_id"])["shards"][0]["id"]
    real = services.jobs.get(job_id)["shards"][0]["activation_id"]
    services.executor_named("slurm").cancel(real)
    # As if slurmctld lost it (purged, its state wiped): the shard now names a job Slurm never had.
    services.jobs.update_shard(job_id, sid, {"activation_id": "987654"}, allowed=("invoked", "running"), event="test")
    job = _settle(services, job_id, lambda j: j["state"] in ("failed", "partial", "succeeded"), limit_s=30)
    assert job["state"] == "failed"
    assert job["shards"][0]["reason"] == "the slurm executor no longer knows unit 987654; it ended without an outcome"


def test_deidentify_is_refused_on_slurm_before_any_job_exists(services, tmp_path):
    """Its key (deid_secret) never goes to a node: options.executor slurm is a 409 saying what to do."""
    from radcloud.core.errors import Conflict

    series = _stage_ct(services.store, tmp_path, count=1)
    before = set(services.jobs.open_jobs(1000))
    with pytest.raises(Conflict) as err:
        services.dispatcher().dispatch({"plugin": "deidentify", "inputs": {"series": [series]},
                                        "options": {"force": True, "executor": "slurm"}}, "alice")
    assert err.value.status == 409 and "cannot run on Slurm" in err.value.message
    assert "options.deidentify: true" in err.value.message
    assert set(services.jobs.open_jobs(1000)) == before


def test_a_shard_past_its_slurm_time_limit_fails_with_timeout_and_what_to_do(services, past_its_time_limit):
    """Slurm's own TIMEOUT (the job killed by slurmctld, its runner never reporting) reaches the shard
    through reconcile with the limit and what to do. Near the module's end: see past_its_time_limit."""
    from radcloud.work.slurmstate import TIME_ADVICE

    job_id, slurm_id, updated = past_its_time_limit
    # 30 s between slurmctld's time-limit passes, +30 s if test_slurmctld_restart_keeps_the_queue restarted it.
    job = _settle(services, job_id, lambda j: j["state"] in ("failed", "partial", "succeeded", "cancelled"),
                  limit_s=max(5.0, 75.0 - (time.monotonic() - updated)))
    assert job["state"] == "failed"
    shard = job["shards"][0]
    assert shard["executor"] == "slurm"
    assert shard["reason"] == (f"Slurm job {slurm_id} ran past its time limit (0 min): TIMEOUT without an outcome; "
                               f"{TIME_ADVICE}")
    assert "radcloud.timeout_s" in shard["reason"]


def test_slurmctld_restart_keeps_the_queue(stack, slurm, client):
    """After the TIMEOUT test: a restart starts slurmctld's 30 s time-limit cycle again."""
    job_id = client.submit("#!/bin/sh\nsleep 3\n", name="radcloud-test-restart", memory_mb=64, time_limit_min=1)
    wait_state(client, job_id, {"RUNNING"})
    stack.restart("slurmctld")  # its state is in <state dir>/slurm/ctld: the running job is recovered
    assert wait_state(client, job_id, ENDED)["job_state"] == "COMPLETED"
