"""The Slurm executor and its state table, with a fake slurmrestd client (the real cluster: tests/integration)."""

from __future__ import annotations

import json

import pytest

from radcloud.core.errors import BadRequest, ConfigError, Unavailable, UpstreamError
from radcloud.core.settings import Secret, Settings
from radcloud.work.executors import Executor, ExecutorBusy, Resources, Unit, executor_for, known
from radcloud.work.executors.slurm import SlurmExecutor
from radcloud.work.slurmstate import queue_reason, status_of

UNIT = Unit(job_id="j1", unit_id="s000", action="plugin-ct-resample",
            payload={"job_id": "j1", "shard_id": "s000", "inputs": ["a/b.dcm"], "output_prefix": "results/j1/s000/"},
            resources=Resources(memory_mb=3072, cpus=2.0, gpus=0, timeout_s=1200))


class FakeSlurm:
    def __init__(self, raise_on_submit: Exception | None = None) -> None:
        self.raise_on_submit = raise_on_submit
        self.submitted: list[tuple[str, dict]] = []
        self.known: dict[str, dict] = {}
        self.cancelled: list[str] = []

    def submit(self, script, **kw):
        if self.raise_on_submit:
            raise self.raise_on_submit
        self.submitted.append((script, kw))
        return 41 + len(self.submitted)

    def jobs(self, ids):
        return {k: v for k, v in self.known.items() if k in {str(i) for i in ids}}

    def cancel(self, handle):
        self.cancelled.append(str(handle))


def test_slurm_is_an_installed_executor_built_from_settings():
    assert "slurm" in known() and "slurmstate" not in known()
    settings = Settings.load({"slurm_url": "http://127.0.0.1:1", "slurm_jwt": "a.b.c", "redis_url": "redis://:pw@h/0",
                              "s3_secret_key": "sk"}, environ={})
    executor = executor_for("slurm", settings, client=FakeSlurm())
    assert isinstance(executor, Executor) and executor.name == "slurm"
    with pytest.raises(ConfigError, match="RADCLOUD_SLURM_URL"):
        executor_for("slurm", Settings.load({}, environ={}))


def test_submit_asks_slurm_for_the_descriptor_s_resources_and_runs_the_shard_runner():
    fake = FakeSlurm()
    handle = SlurmExecutor(fake, runner="/venv/bin/python -m radcloud.work.slurmjob",
                           env={"RADCLOUD_SHARD_TIMEOUT_S": "300"}, ticket=lambda unit, ttl: f"t-{unit.unit_id}-{ttl}",
                           report_url=lambda: "https://h/api/v1/web/ns/radcloud/shard_report").submit(UNIT)
    assert handle == "42"
    script, kw = fake.submitted[0]
    assert script == "#!/bin/sh\nexec /venv/bin/python -m radcloud.work.slurmjob\n"
    assert (kw["cpus"], kw["memory_mb"], kw["gpus"], kw["time_limit_min"]) == (2, 3072, 0, 21)  # 1200 s + upload grace
    assert kw["name"] == "radcloud-j1-s000"
    assert json.loads(kw["environment"]["RADCLOUD_SHARD_SPEC"]) == dict(UNIT.payload)
    assert kw["environment"]["RADCLOUD_SLURM_TIME_LIMIT_S"] == "1260"
    # The ticket lives as long as the shard may stay open: its queue allowance and its time limit.
    assert kw["environment"]["RADCLOUD_SHARD_TICKET"] == f"t-s000-{1260 + 6 * 3600}"
    assert kw["environment"]["RADCLOUD_REPORT_URL"] == "https://h/api/v1/web/ns/radcloud/shard_report"


def test_a_cluster_that_cannot_take_the_job_now_leaves_the_unit_pending_and_a_refusal_fails_it():
    with pytest.raises(ExecutorBusy, match="submitted again later"):
        SlurmExecutor(FakeSlurm(Unavailable("slurmrestd at x cannot be reached"))).submit(UNIT)
    with pytest.raises(ExecutorBusy, match="refuses more jobs"):
        SlurmExecutor(FakeSlurm(BadRequest("Slurm refused POST job/submit: Job violates accounting/QOS policy"))).submit(UNIT)
    with pytest.raises(BadRequest, match="node configuration"):
        SlurmExecutor(FakeSlurm(BadRequest("Slurm refused POST job/submit: Requested node configuration is not "
                                           "available"))).submit(UNIT)


def test_poll_is_one_batch_and_a_forgotten_job_is_absent():
    fake = FakeSlurm()
    fake.known = {"42": {"job_id": 42, "job_state": "RUNNING", "batch_host": "n1", "state_reason": "None"}}
    statuses = SlurmExecutor(fake).poll(["42", "43"])
    assert set(statuses) == {"42"} and statuses["42"].phase == "running"
    assert statuses["42"].detail["slurm_job_id"] == 42


def test_cancel_is_scancel_and_never_raises():
    class Broken(FakeSlurm):
        def cancel(self, handle):
            raise UpstreamError("slurmrestd down")
    fake = FakeSlurm()
    SlurmExecutor(fake).cancel("42")
    assert fake.cancelled == ["42"]
    SlurmExecutor(Broken()).cancel("42")


def test_a_job_s_env_reaches_every_slurm_submit_of_its_shards_retries_included():
    """pfcon's CHRIS_* variables live in the job (options.env): the spec a Slurm job gets carries them
    whether the shard is submitted the first time or again (a retry builds the unit from the job)."""
    from radcloud.work.dispatch import shard_unit

    job = {"id": "j1", "plugin": "copy", "params": {}, "output_prefix": "results/j1/",
           "options": {"env": {"CHRIS_JID": "cube-7"}, "executor": "slurm",
                       "resources": {"memory_mb": 256, "cpus": 1.0, "gpus": 0, "timeout_s": 60}}}
    shard = {"id": "s000", "inputs": ["a.dcm"], "attempt": 2}
    fake = SlurmExecutor(FakeSlurm())
    fake.submit(shard_unit(job, shard, 60))
    spec = json.loads(fake.client.submitted[0][1]["environment"]["RADCLOUD_SHARD_SPEC"])
    assert spec["env"] == {"CHRIS_JID": "cube-7"}
    assert "env" not in shard_unit({**job, "options": {}}, shard, 60).payload  # none asked, none sent


@pytest.mark.parametrize("job, phase, outcome, reason", [
    ({"job_state": "PENDING", "state_reason": "Resources"}, "queued", None, "queued: waiting for resources"),
    ({"job_state": "PENDING", "state_reason": "Priority"}, "queued", None, "queued: waiting for priority"),
    ({"job_state": "PENDING", "state_reason": "QOSMaxJobsPerUserLimit"}, "queued", None,
     "queued: QOSMaxJobsPerUserLimit"),
    ({"job_state": "PENDING", "state_reason": "BeginTime", "restart_cnt": 1}, "queued", None,
     "queued: waiting for its start time (requeued, run 2)"),
    ({"job_state": "RUNNING", "batch_host": "node7"}, "running", None, "running on node7"),
    ({"job_state": "COMPLETED", "exit_code": 0}, "ended", "succeeded", "Slurm job 7 completed"),
    ({"job_state": "FAILED", "exit_code": 3 << 8}, "ended", "failed", "Slurm job 7 failed with exit code 3"),
    ({"job_state": "FAILED", "exit_code": 9}, "ended", "failed", "Slurm job 7 failed: killed by signal 9"),
    ({"job_state": "TIMEOUT", "time_limit": 2}, "ended", "failed",
     "Slurm job 7 ran past its time limit (2 min): TIMEOUT"),
    ({"job_state": "OUT_OF_MEMORY", "memory_per_node": 64}, "ended", "failed",
     "Slurm job 7 ran out of memory (64 MB): OUT_OF_MEMORY"),
    ({"job_state": "NODE_FAIL", "batch_host": "node7"}, "ended", "failed", "Slurm job 7 lost its node node7: NODE_FAIL"),
    ({"job_state": "CANCELLED"}, "ended", "cancelled", "Slurm job 7 was cancelled"),
    ({"job_state": "PREEMPTED"}, "ended", "failed", "Slurm job 7 ended PREEMPTED"),
])
def test_slurm_states_map_onto_radcloud_s(job, phase, outcome, reason):
    status = status_of({"job_id": 7, **job})
    assert (status.phase, status.outcome, status.reason) == (phase, outcome, reason)
    assert status.detail["state"] == job["job_state"]
    # What to do comes with the limits a plugin's descriptor sets, and only with them.
    wanted = {"TIMEOUT": "radcloud.timeout_s", "OUT_OF_MEMORY": "max_memory_limit"}.get(job["job_state"])
    assert (wanted in status.advice) if wanted else status.advice == ""


def test_queue_reasons_are_words():
    assert queue_reason("Resources") == "queued: waiting for resources"
    assert queue_reason(None) == "queued: waiting to be scheduled"


def test_the_job_gets_no_secret_of_the_deployment(monkeypatch):
    """S3 keys, the Redis URL, the token, de-id and Slurm secrets never reach the job: a ticket does."""
    from radcloud.access.auth import shard_ticket_claims

    secrets = {"redis_url": "redis://:redispw@h:1/0", "s3_secret_key": "s3secretkey", "s3_access_key": "s3accesskey",
               "token_secret": "t" * 40, "deid_secret": "d" * 20, "slurm_jwt": "a.b.c", "orthanc_password": "orthpw"}
    settings = Settings.load({**secrets, "slurm_url": "http://127.0.0.1:1", "shard_timeout_s": "120"}, environ={})
    monkeypatch.setenv("__OW_API_HOST", "https://whisk.example")
    monkeypatch.setenv("__OW_NAMESPACE", "hospital")
    fake = FakeSlurm()
    unit = Unit(job_id="j1", unit_id="s000", action="plugin-x", resources=Resources(timeout_s=60),
                payload={"job_id": "j1", "shard_id": "s000", "inputs": ["a/b.dcm"], "output_prefix": "results/j1/s000/"})
    executor_for("slurm", settings, client=fake).submit(unit)
    script, kw = fake.submitted[0]
    env = kw["environment"]
    text = script + json.dumps(kw)
    for value in (*secrets.values(), "redispw"):
        assert value not in text
    assert not {"RADCLOUD_REDIS_URL", "RADCLOUD_S3_SECRET_KEY", "RADCLOUD_S3_ACCESS_KEY"} & set(env)
    assert env["RADCLOUD_REPORT_URL"] == "https://whisk.example/api/v1/web/hospital/radcloud/shard_report"
    claims = shard_ticket_claims(env["RADCLOUD_SHARD_TICKET"], ["t" * 40])
    assert (claims["job"], claims["shard"], claims["out"]) == ("j1", "s000", "results/j1/s000/")
    assert env["RADCLOUD_SHARD_TIMEOUT_S"] == "120"


def test_without_a_url_to_report_to_submit_names_the_setting(monkeypatch):
    monkeypatch.delenv("__OW_API_HOST", raising=False)
    settings = Settings.load({"slurm_url": "http://127.0.0.1:1", "token_secret": "t" * 40}, environ={})
    with pytest.raises(ConfigError, match="RADCLOUD_SLURM_REPORT_URL"):
        executor_for("slurm", settings, client=FakeSlurm()).submit(UNIT)


# -- routing (radcloud.work.routing) -------------------------------------------
from radcloud.core.errors import Conflict  # noqa: E402
from radcloud.work.slurmclient import Limits  # noqa: E402
from radcloud.work.routing import check_partition, choose, route, unit_resources  # noqa: E402

HEAVY = {"name": "ct-resample", "min_memory_limit": "1Gi", "max_memory_limit": "3Gi", "max_cpu_limit": "2000m",
         "radcloud": {"timeout_s": 1200}}
LIGHT = {"name": "dcm2png", "max_memory_limit": "256Mi", "radcloud": {"timeout_s": 120}}


def test_a_plugin_bigger_than_an_action_goes_to_slurm_when_a_cluster_is_configured():
    chosen = route(HEAVY, requested=None, default="action", cluster=True)
    assert chosen.executor == "slurm" and "exceed an action" in chosen.why
    assert chosen.resources == Resources(memory_mb=3072, cpus=2.0, gpus=0, timeout_s=1200)
    assert route(LIGHT, requested=None, default="action", cluster=True).executor == "action"


def test_without_a_cluster_dispatch_refuses_it_with_both_numbers():
    with pytest.raises(Conflict) as err:
        route(HEAVY, requested=None, default="action", cluster=False)
    assert "min_memory_limit 1Gi (1024 MiB)" in err.value.message and "memorySize 512 MB" in err.value.message
    assert "no Slurm cluster is configured" in err.value.message


def test_options_executor_overrides_per_job_and_the_deployment_sets_the_default():
    assert route(LIGHT, requested="slurm", default="action", cluster=True).executor == "slurm"
    assert route(LIGHT, requested="action", default="slurm", cluster=True).executor == "action"
    assert route(LIGHT, requested=None, default="slurm", cluster=True).executor == "slurm"
    with pytest.raises(Conflict, match="options.executor is 'action'"):
        route(HEAVY, requested="action", default="action", cluster=True)
    with pytest.raises(Conflict, match="no Slurm cluster is configured"):
        route(LIGHT, requested="slurm", default="action", cluster=False)
    with pytest.raises(BadRequest, match="not one of action, slurm"):
        route(LIGHT, requested="k8s", default="action", cluster=True)


DEID = {"name": "deidentify", "max_memory_limit": "256Mi",
        "radcloud": {"timeout_s": 300, "deid": {"secret_param": "secretEnv", "map_param": "mapDir"}}}


def test_a_de_identifier_stays_on_actions_where_its_secret_is():
    for default in ("action", "slurm"):
        chosen = route(DEID, requested=None, default=default, cluster=True)
        assert (chosen.executor, chosen.why) == ("action", "de-identification stays hospital side (it needs deid_secret)")
    assert route(DEID, requested="action", default="slurm", cluster=True).executor == "action"
    with pytest.raises(Conflict) as err:
        route(DEID, requested="slurm", default="action", cluster=True)
    assert err.value.status == 409 and err.value.field == "executor"
    assert "deid_secret, which never leaves the hospital side" in err.value.message
    assert "options.deidentify: true" in err.value.message  # what to do instead
    with pytest.raises(Conflict, match="runs only as an OpenWhisk action"):
        route({**DEID, "min_memory_limit": "2Gi"}, requested=None, default="action", cluster=True)


def test_more_than_the_partition_has_is_a_400_naming_the_limit():
    limits = Limits(partition="radcloud", cpus=2, memory_mb=2048, max_time_min=60)
    with pytest.raises(BadRequest) as err:
        check_partition("ct-resample", unit_resources(HEAVY), limits)
    assert err.value.status == 400
    assert "3072 MB of memory but the largest node of partition radcloud has 2048 MB" in err.value.message
    with pytest.raises(BadRequest, match="21 minutes .* allows 10"):
        check_partition("ct-resample", unit_resources({**HEAVY, "max_memory_limit": "1Gi"}),
                        Limits("radcloud", 2, 4096, 10))
    check_partition("ct-resample", unit_resources(HEAVY), Limits("radcloud", 2, 4096, 60))


def test_choose_reads_the_settings_and_asks_the_partition_only_for_slurm():
    settings = Settings.load({"slurm_url": "http://x", "slurm_jwt": "a.b.c"}, environ={})
    asked = []
    small = lambda: asked.append(1) or Limits("radcloud", 1, 1024, 60)  # noqa: E731
    with pytest.raises(BadRequest, match="2 CPUs but the largest node"):
        choose(HEAVY, {}, settings, slurm_limits=small)
    assert choose(LIGHT, {}, settings, slurm_limits=small).executor == "action" and asked == [1]
