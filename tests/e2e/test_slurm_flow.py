"""Heavy plugins on the real one-node Slurm cluster, through the deployed path (localwhisk + radcloud).

The session's ``job_world`` has Slurm: dispatch (a web action) routes
ct-resample there by its descriptor, the job on the node reports through
the ``shard_report`` web action with its shard ticket, and status, cancel
and retry are the deployed actions'. Waits are bounded polls, never sleeps.
"""

from __future__ import annotations

import time

import pytest

from jobflow import node_held, release_requeued, slurm_job

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SECRET_SETTINGS = ("RADCLOUD_S3_ACCESS_KEY", "RADCLOUD_S3_SECRET_KEY", "RADCLOUD_REDIS_URL", "RADCLOUD_TOKEN_SECRET",
                   "RADCLOUD_SLURM_JWT", "RADCLOUD_ORTHANC_PASSWORD")


@pytest.fixture(scope="module")
def world(job_world):
    return job_world


@pytest.fixture(scope="module")
def client(world):
    from radcloud.work.slurmclient import SlurmClient

    return SlurmClient.from_settings(world.endpoints.settings())


@pytest.fixture(scope="module")
def staged(world):
    study, _series = world.seed_study([6])
    return world.stage(study)


@pytest.fixture(scope="module")
def cli(world):
    """The ``radcloud`` command as an admin of the world types it (over HTTP, a login token)."""
    import secrets
    import subprocess

    import requests

    from clistack import RADCLOUD, clean_env
    from fast_hasher import FAST_HASHER
    from radcloud.access.users import UserStore

    name, password = f"slurm-cli-{secrets.token_hex(3)}", secrets.token_urlsafe(16)
    UserStore(world.redis, FAST_HASHER).add(name, "admin", password)
    web = world.whisk.api_host.rstrip("/") + "/api/v1/web/guest/radcloud/"
    answer = requests.post(web + "login", json={"username": name, "password": password}, timeout=60)
    answer.raise_for_status()
    env = {**clean_env(), "RADCLOUD_API_URL": web, "RADCLOUD_TOKEN": answer.json()["token"]}

    def run(*args: str, background: bool = False):
        argv = [*RADCLOUD, *args, "--state-dir", str(world.tmp / "cli")]
        if background:
            return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)

    return run


def shard_handle(world, job_id: str, limit_s: float = 30.0) -> str:
    """The Slurm job id of the job's one shard, once dispatch submitted it."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        shard = world.call("status", {"job_id": job_id})["shards"][0]
        if str(shard.get("activation_id") or "").isdigit():
            return str(shard["activation_id"])
        time.sleep(0.2)
    raise AssertionError(f"job {job_id}: its shard was never submitted to Slurm")


def dispatch_heavy(world, rid: str) -> str:
    answer = world.call("dispatch", {"plugin": "ct-resample", "params": {"spacing": 4.0},
                                     "inputs": {"retrieve": rid}, "options": {"force": True}})
    assert "job_id" in answer, answer
    return answer["job_id"]


def test_a_queued_heavy_job_shows_why_holds_no_secret_and_runs_when_the_node_frees(world, client, staged):
    from radcloud.ops.stack import slurm as stack_slurm

    with node_held(client):
        job_id = dispatch_heavy(world, staged)
        handle = shard_handle(world, job_id)
        queued = client.jobs([handle])[handle]
        assert (queued["cpus"], queued["memory_per_node"]) == (2, 3072)  # the descriptor's needs
        deadline, shard = time.monotonic() + 30, {}
        while time.monotonic() < deadline:  # Slurm says "None" until its scheduler has looked at the job
            shard = world.call("status", {"job_id": job_id})["shards"][0]
            if shard.get("queue_reason") == "queued: waiting for resources":
                break
            time.sleep(0.3)
        assert (shard["executor"], shard.get("queue_reason")) == ("slurm", "queued: waiting for resources"), shard

        # What Slurm keeps and shows of the job: no secret of the deployment anywhere in it.
        state = world.stack.state
        shown = stack_slurm.scontrol(state, "show", "job", "-dd", handle)
        script = stack_slurm.scontrol(state, "write", "batch_script", handle, "-")
        (env_file,) = (stack_slurm.slurm_dir(state) / "ctld").glob(f"hash.*/job.{handle}/environment")
        environment = env_file.read_bytes().decode(errors="replace")
        assert "RADCLOUD_SHARD_TICKET=" in environment and "/shard_report" in environment  # the right file
        assert "exec " in script and "radcloud.work.slurmjob" in script
        secrets = {name: world.env[name] for name in SECRET_SETTINGS if len(world.env.get(name) or "") >= 8}
        assert {"RADCLOUD_S3_SECRET_KEY", "RADCLOUD_REDIS_URL", "RADCLOUD_TOKEN_SECRET"} <= set(secrets)
        for name, value in secrets.items():
            for where, text in (("scontrol show job -dd", shown), ("the batch script", script),
                                ("the job's environment", environment)):
                assert value not in text, f"{name} is in {where}"
    job = world.wait_final(job_id, timeout_s=120)
    assert job["state"] == "succeeded", job["shards"][0].get("reason")
    assert slurm_job(client, handle, {"COMPLETED", "FAILED", "CANCELLED"})["job_state"] == "COMPLETED"
    names = [o["name"] for o in world.call("results", {"job_id": job_id})["outputs"]]
    assert any(n.endswith("-body.nii.gz") for n in names) and any(n.endswith(".dcm") for n in names), names


def test_radcloud_cancel_of_a_heavy_job_on_slurm_is_scancel_and_the_job_ends_cancelled(world, client, staged, cli):
    """`radcloud cancel JOB` (the CLI, through the deployed status action) on a heavy job waiting in
    Slurm's queue: its batch job is scancelled and the job ends cancelled; a second cancel is refused
    (409) naming the state."""
    with node_held(client):
        job_id = dispatch_heavy(world, staged)
        handle = shard_handle(world, job_id)
        cancelled = cli("cancel", job_id)
        assert cancelled.returncode == 0, cancelled.stderr
        assert cancelled.stdout.startswith(f"job {job_id}: "), cancelled.stdout
        job = world.wait_final(job_id, timeout_s=30)
        assert job["state"] == "cancelled" and job["shards"][0]["state"] == "cancelled", job
        assert slurm_job(client, handle, {"CANCELLED", "COMPLETED", "FAILED"})["job_state"] == "CANCELLED"
        again = cli("cancel", job_id)
        assert again.returncode != 0 and "cancelled" in again.stderr, (again.stdout, again.stderr)


def test_a_node_lost_mid_job_fails_the_shard_with_slurm_s_reason_and_retry_runs_it_again(world, client, staged):
    """slurmd and the job's steps killed (a node crash), and the node marked down as slurmctld does
    once it stops answering (here ~27 s after the kill: bench/slurm_bench.py measures that; the test
    says it at once, as a node health check would): the job ends NODE_FAIL (radcloud's jobs are not
    requeued by Slurm: a retry is radcloud's), reconcile fails the shard with that reason, and retry
    submits it again once slurmd is back."""
    from radcloud.ops.stack import slurm as stack_slurm

    answer = world.call("dispatch", {"plugin": "copy", "params": {"sleep": 5}, "inputs": {"retrieve": staged},
                                     "options": {"force": True, "executor": "slurm"}})
    job_id = answer["job_id"]
    world.wait_state(job_id, ("running",), timeout_s=30)
    handle = shard_handle(world, job_id)
    try:
        world.stack.kill("slurmd")
        stack_slurm.kill_leftovers(world.stack.state)
        stack_slurm.scontrol(world.stack.state, "update", f"NodeName={stack_slurm.NODE}", "State=DOWN",
                             "Reason=slurmd killed by a test")
        lost = slurm_job(client, handle, {"NODE_FAIL"})
    finally:
        world.stack.start("slurmd")
    assert lost["job_state"] == "NODE_FAIL"
    job = world.wait_final(job_id, timeout_s=30)
    assert job["state"] == "failed", job
    assert f"Slurm job {handle} lost its node {stack_slurm.NODE}: NODE_FAIL" in job["shards"][0]["reason"]
    world.call("status", {"job_id": job_id, "op": "retry"})
    job = world.wait_final(job_id, timeout_s=60)
    assert job["state"] == "succeeded", job["shards"][0].get("reason")
    again = job["shards"][0]["activation_id"]
    assert again != handle and slurm_job(client, again, {"COMPLETED"})["job_state"] == "COMPLETED"


def test_a_job_slurm_requeues_reports_into_the_same_shard_as_its_next_attempt(world, client, staged, cli):
    """`scontrol requeue` (an admin's, or a site's JobRequeue after a node failure) kills the running
    job and runs it again under the same id: its second run reports into the same shard, counted as
    attempt 2, and the job ends once with that run's outcome. radcloud's jobs are submitted without
    requeue (the cluster's JobRequeue=0), so the test allows it for this job first, as such a site
    would; Slurm holds a requeued job back (its BeginTime) and the test releases it (StartTime=now).
    The CLI says it all along: `radcloud status --watch` (started before the requeue) prints the
    requeue as it happens, `radcloud status` the queue reason while the job is held, then the attempt."""
    from radcloud.ops.stack import slurm as stack_slurm

    answer = world.call("dispatch", {"plugin": "copy", "params": {"sleep": 10}, "inputs": {"retrieve": staged},
                                     "options": {"force": True, "executor": "slurm"}})
    job_id = answer["job_id"]
    world.wait_state(job_id, ("running",), timeout_s=30)
    handle = shard_handle(world, job_id)
    running = slurm_job(client, handle, {"RUNNING"})
    assert running["job_state"] == "RUNNING", (running, world.call("status", {"job_id": job_id})["shards"])
    watching = cli("status", job_id, "--watch", "--timeout", "120", background=True)
    state = world.stack.state
    stack_slurm.scontrol(state, "update", f"JobId={handle}", "Requeue=1")
    stack_slurm.scontrol(state, "requeue", handle)
    deadline = time.monotonic() + 30
    while (client.jobs([handle]).get(handle) or {}).get("job_state") != "PENDING" and time.monotonic() < deadline:
        time.sleep(0.2)  # COMPLETING (the first run being killed), then PENDING until its BeginTime
    pending_at = time.time()
    assert client.jobs([handle])[handle]["restart_cnt"] == 1
    deadline, shard = time.monotonic() + 30, {}
    while time.monotonic() < deadline:  # each read ticks (reconcile, the alarm's work): Slurm's queue reason
        shard = world.call("status", {"job_id": job_id})["shards"][0]  # reaches the shard
        if "(requeued, run 2)" in (shard.get("queue_reason") or ""):
            break
        time.sleep(0.2)
    held = cli("status", job_id)
    assert held.returncode == 0, held.stderr
    assert f"s000: slurm job {handle}, queued: " in held.stdout and "(requeued, run 2)" in held.stdout, held.stdout
    release_requeued(state, handle, pending_at)  # Slurm holds it back: released in a later second
    job = world.wait_final(job_id, timeout_s=90)
    assert job["state"] == "succeeded", job["shards"][0].get("reason")
    (shard,) = job["shards"]
    assert (shard["activation_id"], shard["attempt"], shard["requeued"]) == \
        (handle, 2, {"handle": handle, "restarts": 1}), shard
    said = f"s000: slurm job {handle}, requeued by Slurm, attempt 2"
    assert shard["attempt_plain"] == "requeued by Slurm, attempt 2", shard
    shown = cli("status", job_id)
    assert shown.returncode == 0 and said in shown.stdout.splitlines(), shown.stdout
    out, err = watching.communicate(timeout=60)
    assert watching.returncode == 0, err
    assert said in err.splitlines() and said in out.splitlines(), (out, err)  # as it happened; at the end
    assert (int(job.get("shards_succeeded") or 0), int(job.get("shards_failed") or 0)) == (1, 0)  # one outcome
    ended = slurm_job(client, handle, {"COMPLETED"})
    assert (ended["job_state"], ended["restart_cnt"]) == ("COMPLETED", 1)
    assert world.call("results", {"job_id": job_id})["outputs"]


def test_a_plugin_past_its_memory_on_slurm_is_reported_as_oom(world, client, staged):
    """memhog (200 MiB declared) on Slurm: the job's memory cgroup (--mem from the descriptor) stops it;
    the runner on the node tells the OOM kill from another SIGKILL and says so, as on an action."""
    from radcloud.ops.stack.slurm import memory_cgroup

    job_id = world.call("dispatch", {"plugin": "memhog", "inputs": {"retrieve": staged},
                                     "options": {"force": True, "executor": "slurm"}})["job_id"]
    job = world.wait_final(job_id, timeout_s=60)
    assert job["state"] == "failed", job
    (shard,) = job["shards"]
    if memory_cgroup(world.stack.state) is None:  # sampling only (docs/deploy.md): Slurm's kill, no OOM count
        assert "Slurm job" in shard["reason"] or shard["reason"].startswith(("oom", "crash")), shard
        return
    assert shard["reason"].startswith("oom") and "OOM killer" in shard["reason"], shard
    assert client.wait(shard["activation_id"], set())["job_state"] == "OUT_OF_MEMORY"


def test_results_on_slurm_are_the_action_s_and_share_its_cache(world, staged):
    """The same request on both executors: the same images, byte for byte; the executor is no part
    of the cache key, so the next identical request is served from the cache whichever ran it."""
    images = {}
    for executor in ("action", "slurm"):
        job_id = world.call("dispatch", {"plugin": "dcm2png", "inputs": {"retrieve": staged},
                                         "options": {"force": True, "executor": executor}})["job_id"]
        job = world.wait_final(job_id, timeout_s=60)
        assert job["state"] == "succeeded" and {s["executor"] for s in job["shards"]} == {executor}, job
        outputs = world.call("results", {"job_id": job_id})["outputs"]
        images[executor] = {o["name"]: (o["size"], o["md5"]) for o in outputs if o["name"].endswith(".png")}
    assert images["action"] and images["action"] == images["slurm"]
    again = world.call("dispatch", {"plugin": "dcm2png", "inputs": {"retrieve": staged}})
    assert again["cached"] is True and again["results_of"] == job_id


def test_a_pipeline_step_routed_to_slurm_runs_there_on_the_previous_steps_outputs(world, staged):
    """A rule's pipeline with its second step on the cluster (step options.executor slurm): step 1
    (deidentify) runs as an action, step 2 (dcm2png) as a Slurm job on step 1's DICOM outputs; the
    pipeline ends succeeded with each step's job on its executor."""
    import secrets

    admin = {"_principal": {"name": "root", "role": "admin"}}
    name = f"slurm-step-{secrets.token_hex(3)}"
    saved = world.call("routing", {**admin, "rule": {
        "name": name, "enabled": False, "match": {"modality": "NONE"},
        "pipeline": [{"plugin": "deidentify"},
                     {"plugin": "dcm2png", "params": {"thumbnailSize": 0}, "options": {"executor": "slurm"}}]}})
    assert saved.get("saved", {}).get("name") == name, saved
    try:
        run = world.call("routing", {**admin, "run": name, "inputs": {"retrieve": staged}})["run"]
        pipeline = world.wait_final(run["pipeline"], timeout_s=240)
        assert pipeline["state"] == "succeeded", pipeline
        first, second = (world.call("status", {"job_id": s["job"]}) for s in pipeline["steps"])
        assert {s["executor"] for s in first["shards"]} == {"action"}, first["shards"]
        assert {s["executor"] for s in second["shards"]} == {"slurm"}, second["shards"]
        assert all(str(s["activation_id"]).isdigit() for s in second["shards"])   # Slurm job ids
        assert second["state"] == "succeeded"
    finally:
        world.call("routing", {**admin, "delete": name})
