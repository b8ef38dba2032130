"""The channel of a shard running off-site (radcloud.work.shardchannel): its ticket, its events, its URLs.

Real Redis (the job model's Lua scripts); the object store is the in-memory
one, which signs nothing: its "presigned" URLs name the key (the real S3's
are used end to end in tests/e2e/test_slurm_flow.py).
"""

from __future__ import annotations

import types

import pytest

from radcloud.access import auth
from radcloud.core.errors import Forbidden, Unauthorized
from radcloud.work.jobs import JobSpec, JobStore, ShardSpec
from radcloud.work.reporter import Finaliser
from radcloud.core.settings import Settings
from radcloud.access.users import UserStore
from radcloud.work.shardchannel import FLUSH_S, RemoteReporter, apply
from fast_hasher import FAST_HASHER
from jobs_fakes import MemStore

SECRET = "s1-" + "a" * 40
SETTINGS = Settings.load({"token_secret": SECRET}, environ={})
INPUTS = ["studies/1/2/a.dcm", "studies/1/2/b.dcm"]


class SigningStore(MemStore):
    def presign_get(self, key, ttl_s):
        return f"https://s3.example/{key}?get&ttl={ttl_s}"

    def presign_put(self, key, ttl_s):
        return f"https://s3.example/{key}?put&ttl={ttl_s}"


@pytest.fixture
def world(redis_client):
    jobs = JobStore(redis_client)
    saved = []
    finaliser = Finaliser(jobs, results=types.SimpleNamespace(
        save_manifest=lambda job: saved.append(job["id"]) or {"outputs": []}))
    job_id = jobs.create(JobSpec(plugin="ct-resample", plugin_version="1", owner="alice", params={}, cache_key="",
                                 options={"executor": "slurm"}, shards=[ShardSpec(id="s000", instances_total=2)]))
    services = types.SimpleNamespace(jobs=jobs, finaliser=finaliser, store=SigningStore())
    token = auth.issue_shard_ticket(SETTINGS, job_id, "s000", output_prefix=f"results/{job_id}/s000/",
                                    inputs=INPUTS, ttl_s=600)
    return types.SimpleNamespace(jobs=jobs, job_id=job_id, services=services, saved=saved, token=token,
                                 ticket=auth.shard_ticket_claims(token, [SECRET]))


def test_a_ticket_names_one_shard_expires_and_is_nobody_s_login(world, redis_client):
    claims = world.ticket
    assert (claims["job"], claims["shard"], claims["out"]) == (world.job_id, "s000", f"results/{world.job_id}/s000/")
    assert claims["in"] == auth.inputs_digest(INPUTS) and claims["exp"] - claims["iat"] == 600
    guard = auth.Guard(UserStore(redis_client, FAST_HASHER), [SECRET])
    headers = {"authorization": f"Bearer {world.token}"}
    principal = guard.check("post", headers, (auth.SHARD_ROLE,))
    assert (principal.role, principal.kind) == ("shard", "shard")
    with pytest.raises(Forbidden):  # no other action accepts it
        guard.check("post", headers, ("clinician", "researcher", "admin", "service"))
    with pytest.raises(Unauthorized, match="shard ticket"):  # expired
        auth.Guard(UserStore(redis_client), [SECRET], clock=lambda: claims["exp"] + 1).identify("post", headers)
    with pytest.raises(Unauthorized, match="shard ticket"):  # signed by someone else
        auth.shard_ticket_claims(world.token, ["s2-" + "b" * 40])
    store = UserStore(redis_client, FAST_HASHER)
    user_token = auth.issue_token(SETTINGS, store.add("root", "admin", "correct horse battery"))
    assert auth.shard_ticket_claims(user_token, [SECRET]) is None  # a person's token is no ticket


def test_events_drive_the_shard_as_an_action_s_do_call_by_call(world):
    out = f"results/{world.job_id}/s000/"
    calls = [[{"type": "running", "info": {"n_inputs": 2}}],  # first, before any download
             [{"type": "progress", "done": 1, "total": 2}],
             [{"type": "progress", "done": 2, "total": 2}, {"type": "started", "info": {"argv": ["ct-resample"]}}],
             [{"type": "log", "lines": ["resampling", "done"]}, {"type": "progress", "done": 1, "total": 1}]]
    for events in calls:  # each call a new reporter, as each is a new activation
        assert apply(world.services, world.ticket, {"events": events, "activation_id": "77"}, ttl_s=60) == \
            {"cancelled": False}
    shard = world.jobs.shard(world.job_id, "s000")
    assert shard["state"] == "running" and shard["activation_id"] == "77" and shard["argv"] == ["ct-resample"]
    assert shard["n_inputs"] == 2 and [e["type"] for e in world.jobs.events(world.job_id)].count("started") == 1
    outcome = {"shard_id": "s000", "status": "finishedSuccessfully", "reason": "ok", "exit_code": 0,
               "outputs": [{"key": out + "a.nii.gz", "size": 1, "md5": "x", "content_type": "application/gzip"},
                           {"key": "results/another-job/s000/theirs.dcm", "size": 1, "md5": "y"}]}
    apply(world.services, world.ticket, {"events": [{"type": "finished", "outcome": outcome}]}, ttl_s=60)
    job = world.jobs.get(world.job_id)
    assert job["state"] == "succeeded" and world.saved == [world.job_id]  # finalised hospital-side, once
    assert [o["key"] for o in job["shards"][0]["outputs"]] == [out + "a.nii.gz"]  # never another's key
    lines = [e["data"].get("line") for e in world.jobs.events(world.job_id) if e["type"] == "log"]
    assert lines == ["resampling", "done"]
    # A second outcome (a retried call whose answer was lost) changes nothing.
    apply(world.services, world.ticket, {"events": [{"type": "finished", "outcome": {**outcome, "status": "x"}}]},
          ttl_s=60)
    assert world.jobs.get(world.job_id)["state"] == "succeeded" and world.saved == [world.job_id]


def test_a_requeued_job_reports_into_the_same_shard_as_one_more_attempt(world):
    """Slurm requeues a batch job under the same id and SLURM_RESTART_COUNT tells its runs apart: the
    new run counts one attempt more and starts the plugin anew; the earlier run is refused from then on
    (409), so the shard ends once, with the latest run's outcome."""
    from radcloud.core.errors import Conflict

    world.jobs.shard_invoked(world.job_id, "s000", "77", executor="slurm")
    first = {"activation_id": "77", "restarts": 0}
    apply(world.services, world.ticket, {**first, "events": [{"type": "progress", "done": 2, "total": 2},
                                                              {"type": "started", "info": {"argv": ["a"]}}]}, ttl_s=60)
    assert world.jobs.shard(world.job_id, "s000")["plugin_started_at"]
    again = {"activation_id": "77", "restarts": 1}  # `scontrol requeue 77`: the same job runs again
    apply(world.services, world.ticket, {**again, "get": INPUTS}, ttl_s=60)
    shard = world.jobs.shard(world.job_id, "s000")
    assert (shard["state"], shard["attempt"], shard["activation_id"]) == ("running", 2, "77")
    assert shard["requeued"] == {"handle": "77", "restarts": 1} and not shard.get("plugin_started_at")
    requeued = [e["data"] for e in world.jobs.events(world.job_id) if e["type"] == "requeued"]
    assert requeued == [{"handle": "77", "restarts": 1, "attempt": 2}]
    with pytest.raises(Conflict, match="requeued since") as late:  # the killed run's last word
        apply(world.services, world.ticket, {**first, "events": [{"type": "finished", "outcome": {
            "shard_id": "s000", "status": "finishedWithError", "reason": "crash", "exit_code": 1}}]}, ttl_s=60)
    assert late.value.status == 409 and world.jobs.shard(world.job_id, "s000")["state"] == "running"
    apply(world.services, world.ticket, {**again, "restarts": 1, "events": [{"type": "finished", "outcome": {
        "shard_id": "s000", "status": "finishedSuccessfully", "reason": "ok", "exit_code": 0}}]}, ttl_s=60)
    job = world.jobs.get(world.job_id)
    assert (job["state"], job["shards"][0]["attempt"], world.saved) == ("succeeded", 2, [world.job_id])
    assert [e["type"] for e in world.jobs.events(world.job_id)].count("requeued") == 1


def test_urls_are_given_for_the_ticket_s_own_keys_only(world):
    out = f"results/{world.job_id}/s000/"
    answer = apply(world.services, world.ticket, {"get": INPUTS, "put": [out + "a.nii.gz", out + "dcm/1.dcm"]},
                   ttl_s=900)
    assert answer["get"] == {k: f"https://s3.example/{k}?get&ttl=900" for k in INPUTS}
    assert set(answer["put"]) == {out + "a.nii.gz", out + "dcm/1.dcm"}
    own_map = f"deid-maps/{world.job_id}/s000.json"
    assert set(apply(world.services, world.ticket, {"put": [own_map]}, ttl_s=60)["put"]) == {own_map}
    for asked in ({"get": ["studies/9/9/other.dcm"]}, {"get": INPUTS[:1]}, {"put": ["results/other/s000/x"]},
                  {"put": [out + "../../other/x"]}, {"put": [f"deid-maps/{world.job_id}/s001.json"]}):
        with pytest.raises(Forbidden, match="this shard's|own"):
            apply(world.services, world.ticket, asked, ttl_s=60)
    world.jobs.cancel(world.job_id)
    assert apply(world.services, world.ticket, {}, ttl_s=60)["cancelled"] is True


def test_the_node_s_reporter_sends_log_lines_in_batches_and_learns_of_cancel():
    sent = []

    class Channel:
        def call(self, events=(), **asks):
            sent.append([e["type"] for e in events])
            return {"cancelled": len(sent) >= 3}

    now = [0.0]
    reporter = RemoteReporter(Channel(), clock=lambda: now[0])
    reporter.started("s000", {})
    for n in range(5):
        reporter.log("s000", f"line {n}")  # within FLUSH_S of the last call: buffered
    assert sent == [["started"]] and reporter.cancelled() is False
    now[0] += FLUSH_S
    reporter.log("s000", "line 5")
    assert sent[-1] == ["log"] and reporter.cancelled() is False
    now[0] += FLUSH_S
    assert reporter.cancelled() is True  # asked again after FLUSH_S: the job was cancelled
    reporter.log("s000", "last")
    reporter.finished("s000", {})
    assert sent[-1] == ["log", "finished"]


def test_the_node_s_first_report_goes_out_before_requests_is_imported():
    """What a Slurm job imports up to its first report (radcloud.work.slurmjob -> run()): not requests,
    half of the runner's start (Channel.first sends that report with the standard library)."""
    import subprocess
    import sys

    probe = ("import sys\n"
             "import radcloud.work.slurmjob\n"
             "from radcloud.work.shardchannel import Channel, RemoteReporter, RemoteStore, run\n"
             "from radcloud.run.registry import Registry\n"
             "from radcloud.run.shard import run_shard\n"
             "channel = Channel('http://127.0.0.1:9/', 'ticket')\n"
             "RemoteStore(channel, ['a.dcm']), RemoteReporter(channel), Registry()\n"
             "print(sorted(m for m in ('requests', 'urllib3') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_first_report_over_the_standard_library_reads_answers_as_the_other_calls_do():
    import http.server
    import json
    import threading

    from radcloud.core.errors import Unavailable, UpstreamError
    from radcloud.work.shardchannel import Channel

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.headers["Authorization"], body))
            code, answer = (200, {"cancelled": True}) if len(seen) == 1 else (409, {"error": "run 0 was requeued"})
            data = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        channel = Channel(f"http://127.0.0.1:{server.server_port}/", "tkt", activation_id="77", restarts=1)
        running = [{"type": "running", "info": {"n_inputs": 2}}]
        assert channel.first(running) == {"cancelled": True}
        assert seen[0] == ("Bearer tkt", {"events": running, "activation_id": "77", "restarts": 1})
        with pytest.raises(UpstreamError, match="answered HTTP 409: run 0 was requeued"):
            channel.first(running)
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(Unavailable, match="cannot be reached from this node .*check slurm_report_url"):
        Channel(f"http://127.0.0.1:{server.server_port}/", "tkt", timeout_s=2).first(running)


def test_a_radcloud_package_left_in_the_job_s_working_dir_does_not_run_in_place_of_the_runner(tmp_path):
    """A batch job starts in its working dir (/tmp on a node, writable by every user of the cluster) and
    `python3 -m` would put that dir first on sys.path: the job's environment (job_env) keeps it out."""
    import os
    import subprocess
    import sys

    from radcloud.core.settings import Settings
    from radcloud.work.executors.slurm import SlurmExecutor, job_env

    planted = tmp_path / "radcloud"
    planted.mkdir()
    (planted / "__init__.py").write_text("open(__file__ + '.ran', 'w').close()\n")
    script = SlurmExecutor(None, runner=f"{sys.executable} -m radcloud.work.slurmjob").script()
    env = {"PATH": os.environ["PATH"], **job_env(Settings.load({}, environ={}))}

    def job(environment):
        return subprocess.run(["sh", "-c", script], cwd=tmp_path, env=environment, capture_output=True,
                              text=True, timeout=60)

    unsafe = job({k: v for k, v in env.items() if k != "PYTHONSAFEPATH"})
    assert (planted / "__init__.py.ran").exists(), unsafe.stderr  # the hazard is real without it
    (planted / "__init__.py.ran").unlink()
    safe = job(env)
    assert not (planted / "__init__.py.ran").exists()
    assert safe.returncode == 2 and "cannot start" in safe.stderr, safe.stderr  # the real runner: no spec given
