"""A ChRIS backend's pfcon conversation with radcloud, end to end through localwhisk.

Replays, field for field, the requests CUBE sends an in-network pfcon
(pfcon ``req_resp_flow.md``): token → server info → copy job → poll →
plugin job → poll → output listing → upload job → poll → delete job →
poll → DELETE every job, against the real Redis + S3 with radcloud
deployed (the e2e tier's shared ``job_world``, tests/e2e/jobflow.py). ChRIS's files live in their own bucket of
the shared store; the ChRIS-style ``copy`` plugin (``prog [options]
inputdir outputdir``) runs as a radcloud shard and its outputs land under
``output_dir``. Also: wrong token → 401, unknown image → 400 naming it,
out-of-order jobs → 409; an fs plugin's jobs, which CUBE sends without
``input_dirs``, and pfcon's output filter (no symlink, no ``.chrislink``
reaches ChRIS's storage); a heavy plugin's job (ct-resample) running on the
world's Slurm cluster, routed by its descriptor.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest

from jobflow import CHRIS_BUCKET, PFCON_PASSWORD, PFCON_USER

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

BASE = "radcloud/pfcon/api/v1/"
USER, PASSWORD = PFCON_USER, PFCON_PASSWORD  # bound at the world's deploy (jobflow.E2E_WORLD_ENV)
FEED = "home/cube/feeds/feed_7"
INPUT_DIR = f"{FEED}/pl-dircopy_11/data"
OUTPUT_DIR = f"{FEED}/pl-copy_12/data"


@pytest.fixture(scope="module")
def world(job_world):
    # The e2e tier's world (tests/e2e/conftest.py), deployed with pfcon's account and bucket bound
    # (jobflow.E2E_WORLD_ENV). With Slurm: a plugin bigger than an action (ct-resample) runs there.
    from radcloud.store.storage import ObjectStore

    w = job_world
    radcloud_store = ObjectStore.from_settings(w.endpoints.settings())
    if not radcloud_store.client.bucket_exists(CHRIS_BUCKET):
        radcloud_store.client.make_bucket(CHRIS_BUCKET)
    w.chris = ObjectStore(radcloud_store.client, CHRIS_BUCKET)
    w.store = radcloud_store
    w.chris.put_bytes(f"{INPUT_DIR}/scan.txt", b"scan data\n")
    w.chris.put_bytes(f"{INPUT_DIR}/notes/report.txt", b"report\n")
    w.chris.put_bytes(f"{FEED}/pl-dircopy_11/data/prior.chrislink", b"home/cube/uploads/prior\n")
    w.chris.put_bytes("home/cube/uploads/prior/old.txt", b"older scan\n")
    return w


def call(world, method, route, *, token=None, form=None, json_body=None, query=""):
    headers = {}
    body = b""
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if form is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = urlencode(form, doseq=True).encode()
    if json_body is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(json_body).encode()
    status, _headers, raw = world.whisk.web(BASE + route, method=method, body=body, headers=headers,
                                            query=query)
    return status, (json.loads(raw) if raw else None)


def poll(world, route, token, timeout_s=120.0, seen=None, until=("finishedSuccessfully", "finishedWithError")):
    """GET ``route`` until its status is one of ``until`` (or ``seen``, a list, holds what
    ``until`` says when it is a function of the compute answers so far); returns the last answer."""
    deadline = time.monotonic() + timeout_s
    seen = [] if seen is None else seen
    while True:
        world.tick()  # reconcile, as the alarm trigger would (reads never write)
        status, body = call(world, "GET", route, token=token)
        assert status == 200, body
        seen.append(body["compute"])
        if until(seen) if callable(until) else body["compute"]["status"] in until:
            return body["compute"]
        assert time.monotonic() < deadline, f"{route} still {body['compute']['status']}"
        time.sleep(0.3)


def plugin_form(jid, image="local/copy", args=("--prefix", "le", "--sleep", "1")):
    # What CUBE sends (plugininstances/services/manager.py), as in pfcon's req_resp_flow.md.
    return [("jid", jid), *(("args", a) for a in args), ("auid", "cube"), ("number_of_workers", "1"),
            ("cpu_limit", "1000"), ("memory_limit", "300"), ("gpu_limit", "0"), ("image", image),
            ("entrypoint", "python3"), ("entrypoint", "/usr/local/bin/copy.py"), ("type", "ds"),
            ("env", f"CHRIS_JID={jid}"), ("env", "CHRIS_PLG_INST_ID=12"),
            ("input_dirs", INPUT_DIR), ("output_dir", OUTPUT_DIR)]


@pytest.fixture(scope="module")
def token(world):
    status, body = call(world, "POST", "auth-token/", json_body={"pfcon_user": USER, "pfcon_password": PASSWORD})
    assert status == 200, body
    return body["token"]


def test_health_and_credentials(world):
    assert call(world, "GET", "health/") == (200, {"health": "OK"})
    status, body = call(world, "POST", "auth-token/", json_body={"pfcon_user": USER, "pfcon_password": "wrong"})
    assert status == 400 and body["message"] == "Unable to log in with provided credentials."


def test_wrong_token_is_401_everywhere(world, token):
    for method, route in (("GET", "pluginjobs/"), ("POST", "copyjobs/"), ("GET", "pluginjobs/x/"),
                          ("DELETE", "deletejobs/x/")):
        status, body = call(world, method, route, token=token[:-4] + "AAAA")
        assert status == 401, (route, body)
        assert call(world, method, route)[0] == 401


def test_chris_backend_sequence(world, token):
    jid = "chris-jid-12"
    # Server info decides CUBE's flow: in-network S3, copy and upload jobs required.
    status, info = call(world, "GET", "pluginjobs/", token=token)
    assert status == 200 and info["pfcon_innetwork"] is True and info["storage_env"] == "s3"
    assert info["requires_copy_job"] is True and info["requires_upload_job"] is True

    # Out of order: a plugin job before its copy job.
    status, body = call(world, "POST", "pluginjobs/", token=token, form=plugin_form(jid))
    assert status == 409 and "copy" in body["message"], body

    status, body = call(world, "POST", "copyjobs/", token=token,
                        form=[("jid", jid), ("input_dirs", INPUT_DIR), ("output_dir", OUTPUT_DIR),
                              ("cpu_limit", "1000"), ("memory_limit", "300")])
    assert status == 201 and body["compute"]["jid"] == jid, body
    copied = poll(world, f"copyjobs/{jid}/", token)
    assert copied["status"] == "finishedSuccessfully" and "copied 3 files" in copied["message"], copied

    status, body = call(world, "POST", "pluginjobs/", token=token, form=plugin_form(jid, image="fnndsc/pl-nope:9"))
    assert status == 400 and "fnndsc/pl-nope:9" in body["message"], body

    status, body = call(world, "POST", "pluginjobs/", token=token, form=plugin_form(jid))
    assert status == 201, body
    compute = body["compute"]
    assert compute["cmd"] == ("python3 /usr/local/bin/copy.py --prefix le --sleep 1 "
                              "/share/incoming /share/outgoing")
    assert compute["status"] in ("notStarted", "started") and compute["image"] == "local/copy"
    # Idempotent: the same POST again is the same job, still running.
    status, again = call(world, "POST", "pluginjobs/", token=token, form=plugin_form(jid))
    assert status == 201 and again["compute"]["status"] in ("notStarted", "started")
    # Out of order: deleting the data while the plugin runs.
    status, body = call(world, "POST", "deletejobs/", token=token, form=[("jid", jid)])
    assert status == 409, body

    done = poll(world, f"pluginjobs/{jid}/", token)
    assert done["status"] == "finishedSuccessfully", done
    assert "exit code 0" in done["message"] and "done" in done["logs"] and done["timestamp"]

    status, listing = call(world, "GET", f"pluginjobs/{jid}/file/", token=token,
                           query=urlencode({"job_output_path": OUTPUT_DIR}))
    assert status == 200 and listing["job_output_path"] == OUTPUT_DIR
    assert {"lescan.txt", "lereport.txt", "leold.txt", "probe.json"} == set(listing["rel_file_paths"])

    status, body = call(world, "POST", "uploadjobs/", token=token,
                        form=[("jid", jid), ("job_output_path", OUTPUT_DIR)])
    assert status == 201, body
    assert poll(world, f"uploadjobs/{jid}/", token)["status"] == "finishedSuccessfully"
    landed = {i.key[len(OUTPUT_DIR) + 1:] for i in world.chris.list(OUTPUT_DIR + "/")}
    assert landed == set(listing["rel_file_paths"])
    probe = world.chris.get_json(f"{OUTPUT_DIR}/probe.json")
    assert probe["argv"][:2] == ["--prefix", "le"]
    assert probe["jid"] == jid and "CHRIS_PLG_INST_ID" in probe["env"]  # CUBE's env reached the plugin
    stream = world.chris.open(f"{OUTPUT_DIR}/leold.txt")
    assert stream.read() == b"older scan\n"  # reached through the .chrislink
    stream.close()

    status, body = call(world, "POST", "deletejobs/", token=token, form=[("jid", jid)])
    assert status == 201, body
    assert poll(world, f"deletejobs/{jid}/", token)["status"] == "finishedSuccessfully"
    assert list(world.store.list(f"pfcon/key-{jid}/")) == []

    for kind in ("copyjobs", "pluginjobs", "uploadjobs", "deletejobs"):
        assert call(world, "DELETE", f"{kind}/{jid}/", token=token)[0] == 204
    assert call(world, "GET", f"copyjobs/{jid}/", token=token)[0] == 404


def test_fs_plugin_as_cube_runs_it_and_its_links_never_reach_chris(world, token):
    # An fs plugin instance has no parent, so CUBE's copy and plugin jobs carry
    # input_dirs=[]: urlencode puts no such field on the wire (pfcon defaults it).
    jid = "chris-jid-fs-13"
    out_dir = f"{FEED}/pl-chris-fs_13/data"
    status, body = call(world, "POST", "copyjobs/", token=token,
                        form=[("jid", jid), ("output_dir", out_dir), ("cpu_limit", "1000"),
                              ("memory_limit", "300")])
    assert status == 201, body
    assert poll(world, f"copyjobs/{jid}/", token)["status"] == "finishedSuccessfully"

    form = [("jid", jid), ("args", "--name"), ("args", "hello"), ("auid", "cube"), ("number_of_workers", "1"),
            ("cpu_limit", "1000"), ("memory_limit", "300"), ("gpu_limit", "0"), ("image", "local/chris-fs"),
            ("entrypoint", "python3"), ("entrypoint", "/usr/local/bin/chris_fs.py"), ("type", "fs"),
            ("env", f"CHRIS_JID={jid}"), ("output_dir", out_dir)]
    assert not any(name == "input_dirs" for name, _ in form)
    status, body = call(world, "POST", "pluginjobs/", token=token, form=form)
    assert status == 201, body
    assert body["compute"]["cmd"] == "python3 /usr/local/bin/chris_fs.py --name hello /share/outgoing"
    done = poll(world, f"pluginjobs/{jid}/", token)
    assert done["status"] == "finishedSuccessfully", done

    # The plugin also left a symlink to /etc/passwd and a .chrislink naming
    # another user's files: neither is listed, uploaded or in radcloud's results.
    status, listing = call(world, "GET", f"pluginjobs/{jid}/file/", token=token,
                           query=urlencode({"job_output_path": out_dir}))
    assert status == 200 and listing["rel_file_paths"] == ["hello.txt"], listing
    status, body = call(world, "POST", "uploadjobs/", token=token,
                        form=[("jid", jid), ("job_output_path", out_dir)])
    assert status == 201, body
    assert poll(world, f"uploadjobs/{jid}/", token)["status"] == "finishedSuccessfully"
    assert [i.key for i in world.chris.list(out_dir + "/")] == [f"{out_dir}/hello.txt"]
    stream = world.chris.open(f"{out_dir}/hello.txt")
    assert stream.read() == b"made by an fs plugin\n"
    stream.close()
    results = [i.key for i in world.store.list("results/")]
    assert not any(k.endswith(("passwd", ".chrislink")) for k in results), results

    status, body = call(world, "POST", "deletejobs/", token=token, form=[("jid", jid)])
    assert status == 201, body
    assert poll(world, f"deletejobs/{jid}/", token)["status"] == "finishedSuccessfully"


def start_heavy_job(world, token, jid: str, feed: str, out_dir: str) -> None:
    """A CT series (6 slices) copied in, then ct-resample's plugin job as CUBE posts it."""
    from jobflow import ct_instance
    from pydicom.uid import generate_uid

    study, series = generate_uid(), generate_uid()
    for i in range(1, 7):
        world.chris.put_bytes(f"{feed}/ct/{i:03d}.dcm", ct_instance(study, series, i, 1))
    status, body = call(world, "POST", "copyjobs/", token=token,
                        form=[("jid", jid), ("input_dirs", feed), ("output_dir", out_dir)])
    assert status == 201, body
    assert poll(world, f"copyjobs/{jid}/", token)["status"] == "finishedSuccessfully"
    form = [("jid", jid), ("args", "--spacing"), ("args", "4"), ("auid", "cube"), ("number_of_workers", "1"),
            ("cpu_limit", "2000"), ("memory_limit", "3072"), ("gpu_limit", "0"),
            ("image", "radcloud/pl-ct-resample:1.0.0"), ("entrypoint", "python3"),
            ("entrypoint", "/usr/local/bin/ct_resample.py"), ("type", "ds"), ("env", f"CHRIS_JID={jid}"),
            ("input_dirs", feed), ("output_dir", out_dir)]
    status, body = call(world, "POST", "pluginjobs/", token=token, form=form)
    assert status == 201, body


def test_a_heavy_plugin_job_from_chris_runs_on_slurm(world, token):
    """ct-resample's job, routed to Slurm by its descriptor: pfcon's status is live on the way
    ("started", naming the Slurm job) and ends finishedSuccessfully with its outputs listed."""
    jid, feed = "chris-jid-ct-21", f"{FEED}/pl-dircopy_20/data"
    out_dir = f"{FEED}/pl-ct-resample_21/data"
    start_heavy_job(world, token, jid, feed, out_dir)
    seen = []
    done = poll(world, f"pluginjobs/{jid}/", token, seen=seen)
    assert done["status"] == "finishedSuccessfully", done
    radcloud_job = world.call("status", {"job_id": done["message"].split()[2]})
    assert radcloud_job["options"]["executor"] == "slurm", radcloud_job["options"]
    assert all(s["executor"] == "slurm" and s["activation_id"].isdigit() for s in radcloud_job["shards"])
    (handle,) = {s["activation_id"] for s in radcloud_job["shards"]}
    assert any(c["status"] == "started" and f"on Slurm job {handle}" in c["message"] for c in seen), seen
    status, listing = call(world, "GET", f"pluginjobs/{jid}/file/", token=token,
                           query=urlencode({"job_output_path": out_dir}))
    assert status == 200 and "ct-resample.json" in listing["rel_file_paths"], listing
    assert any(p.endswith("-body.nii.gz") for p in listing["rel_file_paths"]), listing


def test_chris_deleting_a_heavy_plugin_job_queued_on_slurm_scancels_it(world, token):
    """CUBE's DELETE pluginjobs/<jid>/ of a job waiting on a busy Slurm node: its status said why it
    waits ("queued: waiting for resources", reconcile's), and the delete cancels the radcloud job and
    its Slurm job (scancel: Slurm's record says CANCELLED), as the web UI's Cancel does."""
    from jobflow import node_held, slurm_job
    from radcloud.work.slurmclient import SlurmClient

    jid, feed = "chris-jid-ct-31", f"{FEED}/pl-dircopy_30/data"
    client = SlurmClient.from_settings(world.endpoints.settings())
    with node_held(client):
        start_heavy_job(world, token, jid, feed, f"{FEED}/pl-ct-resample_31/data")
        queued = poll(world, f"pluginjobs/{jid}/", token, timeout_s=60,
                      until=lambda seen: "queued: waiting for resources" in seen[-1]["message"])
        assert queued["status"] in ("notStarted", "started"), queued
        job_id = queued["message"].split()[2]
        (shard,) = world.call("status", {"job_id": job_id})["shards"]
        handle = shard["activation_id"]
        assert shard["executor"] == "slurm" and f"on Slurm job {handle}" in queued["message"], queued
        status, body = call(world, "DELETE", f"pluginjobs/{jid}/", token=token)
        assert status == 204, body
        assert slurm_job(client, handle, {"CANCELLED", "COMPLETED", "FAILED"})["job_state"] == "CANCELLED"
    job = world.wait_final(job_id, timeout_s=30)
    assert (job["state"], [s["state"] for s in job["shards"]]) == ("cancelled", ["cancelled"]), job
    assert call(world, "GET", f"pluginjobs/{jid}/", token=token)[0] == 404  # pfcon forgets a deleted job

