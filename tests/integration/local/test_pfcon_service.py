"""pfcon's copy/plugin/upload/delete jobs on radcloud's dispatch: ordering, idempotency,
statuses and messages (in-memory S3, real Redis, shards run inline through FakeInvoker)."""

from __future__ import annotations

import hashlib
import io

import pytest
from jobs_fakes import FIXTURE_PLUGINS, FakeInvoker, MemStore, job_wiring

from radcloud.work.dispatch import Dispatcher
from radcloud.core.errors import BadRequest, Conflict, NotFound
from radcloud.pfcon import protocol as P
from radcloud.pfcon.service import PfconService, Records, staging_prefix
from radcloud.run.registry import Registry
from radcloud.work.staging import ManifestStaging
from radcloud.store.storage import ObjectInfo

REGISTRY = Registry(FIXTURE_PLUGINS)


class Store(MemStore):
    """MemStore plus the streaming and deleting calls the pfcon jobs use."""

    def open(self, key):
        if key not in self.objects:
            raise NotFound(f"no object {key!r}")
        return io.BytesIO(self.objects[key])

    def put_stream(self, key, stream, length, *, md5=None, content_type="application/octet-stream"):
        data = stream.read()
        assert len(data) == length and (md5 is None or md5 == hashlib.md5(data).hexdigest())
        return self.put_bytes(key, data, content_type=content_type)

    def delete_prefix(self, prefix):
        gone = [k for k in self.objects if k.startswith(prefix)]
        for k in gone:
            del self.objects[k]
        return len(gone)


@pytest.fixture
def world(redis_client):
    return make_world(redis_client, REGISTRY)


def make_world(redis_client, registry, use_bwrap=None):
    store, chris = Store(), Store()
    wired = job_wiring(redis_client, store, registry, use_bwrap=use_bwrap)
    jobs, cache, results, finaliser = wired.jobs, wired.cache, wired.results, wired.finaliser

    class World:
        invoker = FakeInvoker(wired.runner)

        def service(self, invoker=None):
            inv = invoker or self.invoker
            return PfconService(Records(redis_client), store, chris, jobs=jobs, results=results,
                                registry=registry, finaliser=finaliser, images={"local/crash": "crash"},
                                dispatcher=lambda: Dispatcher(jobs, cache, registry,
                                                              ManifestStaging(store, redis_client), inv,
                                                              finaliser=finaliser))

    w = World()
    w.store, w.chris, w.jobs = store, chris, jobs
    chris.put_bytes("home/u/feed_1/pl-dircopy_1/data/a.txt", b"alpha")
    chris.put_bytes("home/u/feed_1/pl-dircopy_1/data/sub/b.txt", b"beta")
    chris.put_bytes("home/u/feed_1/pl-dircopy_1/data/more.chrislink", b"home/u/other\n")
    chris.put_bytes("home/u/other/c.txt", b"gamma")
    return w


def plugin_job(jid="j1", image="local/copy", args=("--prefix", "le"), **extra):
    fields = {"jid": [jid], "entrypoint": ["python3", "/usr/local/bin/copy.py"], "args": list(args),
              "auid": ["cube"], "number_of_workers": ["1"], "cpu_limit": ["1000"], "memory_limit": ["200"],
              "gpu_limit": ["0"], "image": [image], "type": ["ds"],
              "input_dirs": ["home/u/feed_1/pl-dircopy_1/data"], "output_dir": ["home/u/feed_1/pl-copy_2/data"]}
    fields.update({k: [v] if isinstance(v, str) else v for k, v in extra.items()})
    return P.PluginJob.parse(fields)


def copy_job(jid="j1"):
    return P.CopyJob(jid=jid, input_dirs=["home/u/feed_1/pl-dircopy_1/data"], output_dir="home/u/out")


def test_whole_sequence_copy_plugin_files_upload_delete(world):
    svc = world.service()
    copied = svc.copy(copy_job())
    assert copied["status"] == "finishedSuccessfully" and "copied 3 files" in copied["message"]
    incoming = staging_prefix("j1") + "incoming/"
    assert world.store.objects[incoming + "more/c.txt"] == b"gamma"  # the .chrislink was followed
    assert svc.status("copy", "j1") == copied

    started = svc.plugin(plugin_job(env=["CHRIS_JID=j1", "CHRIS_USER_TOKEN=secret", "PATH=/evil"]),
                         owner="pfcon:cube")
    assert world.invoker.calls[0][1]["env"] == {"CHRIS_JID": "j1"}  # CUBE's vars, no token, no PATH
    assert started["cmd"] == "python3 /usr/local/bin/copy.py --prefix le /share/incoming /share/outgoing"
    done = svc.status("plugin", "j1")  # the FakeInvoker ran the shard inline
    assert done["status"] == "finishedSuccessfully", done
    assert "exit code 0" in done["message"] and "done" in done["logs"] and done["timestamp"]

    assert world.store.get_json(f"results/{world.invoker.calls[0][1]['job_id']}/s000/probe.json")["jid"] == "j1"
    listing = svc.output_files("j1", "home/u/feed_1/pl-copy_2/data")
    assert listing["job_output_path"] == "home/u/feed_1/pl-copy_2/data"
    assert {"lea.txt", "leb.txt", "lec.txt", "probe.json"} <= set(listing["rel_file_paths"])

    up = svc.upload(P.UploadJob("j1", "home/u/feed_1/pl-copy_2/data"))
    assert up["status"] == "finishedSuccessfully"
    assert world.chris.objects["home/u/feed_1/pl-copy_2/data/lea.txt"] == b"alpha"

    gone = svc.delete(P.DeleteJob("j1"))
    assert gone["status"] == "finishedSuccessfully" and "removed" in gone["message"]
    assert not [k for k in world.store.objects if k.startswith(staging_prefix("j1"))]
    for kind in ("copy", "plugin", "upload", "delete"):
        svc.remove(kind, "j1")
    with pytest.raises(NotFound):
        svc.status("copy", "j1")


def test_plugin_before_copy_is_409_and_runs_nothing(world):
    svc = world.service()
    with pytest.raises(Conflict) as err:
        svc.plugin(plugin_job(), owner="pfcon:cube")
    assert "copy job is missing" in err.value.message
    assert world.invoker.calls == []


def test_upload_before_plugin_and_delete_while_running_are_409(world):
    idle = FakeInvoker()  # records invokes, never runs the shard: the job stays active
    svc = world.service(idle)
    svc.copy(copy_job())
    with pytest.raises(Conflict):
        svc.upload(P.UploadJob("j1", "home/u/out"))
    svc.plugin(plugin_job(), owner="pfcon:cube")
    assert svc.status("plugin", "j1")["status"] == "notStarted"
    with pytest.raises(Conflict):
        svc.upload(P.UploadJob("j1", "home/u/out"))
    with pytest.raises(Conflict):
        svc.delete(P.DeleteJob("j1"))
    # Idempotent by jid: a repeated copy answers the finished one and cannot swap the inputs.
    assert "copied 3 files" in svc.copy(P.CopyJob("j1", ["home/u/other"], "home/u/out2"))["message"]
    svc.remove("plugin", "j1")  # DELETE pluginjobs/j1/ stops the job
    assert svc.delete(P.DeleteJob("j1"))["status"] == "finishedSuccessfully"


def test_posts_are_idempotent(world):
    svc = world.service()
    first = svc.copy(copy_job())
    world.chris.put_bytes("home/u/feed_1/pl-dircopy_1/data/late.txt", b"late")
    assert svc.copy(copy_job()) == first  # no second copy
    svc.plugin(plugin_job(), owner="pfcon:cube")
    again = svc.plugin(plugin_job(), owner="pfcon:cube")
    assert len(world.invoker.calls) == 1 and again["status"] == "finishedSuccessfully"
    up = svc.upload(P.UploadJob("j1", "home/u/o"))
    assert svc.upload(P.UploadJob("j1", "home/u/o")) == up
    d = svc.delete(P.DeleteJob("j1"))
    assert svc.delete(P.DeleteJob("j1")) == d


def test_same_work_again_is_a_cache_hit_reported_in_message(world):
    svc = world.service()
    for jid in ("a1", "a2"):
        svc.copy(copy_job(jid))
        svc.plugin(plugin_job(jid), owner="pfcon:cube")
    second = svc.status("plugin", "a2")
    assert second["status"] == "finishedSuccessfully" and "cache hit" in second["message"]
    assert len(world.invoker.calls) == 1
    assert "lea.txt" in svc.output_files("a2", "out")["rel_file_paths"]


def test_crash_reports_exit_code_and_partial_outputs_can_be_uploaded(world):
    svc = world.service()
    svc.copy(copy_job())
    svc.plugin(plugin_job(image="docker.io/local/crash:1.0", args=()), owner="pfcon:cube")
    status = svc.status("plugin", "j1")
    assert status["status"] == "finishedWithError"
    assert "exit code 1" in status["message"] and "division by zero" in status["logs"]
    assert svc.upload(P.UploadJob("j1", "home/u/o"))["status"] == "finishedSuccessfully"
    assert world.chris.objects["home/u/o/partial.txt"] == b"half done\n"


def test_a_retried_shard_gets_cubes_chris_variables_again(world):
    """CUBE's CHRIS_* variables live with the job (options.env), not with the first submit: the
    status action's retry (reopen + fan_out, whatever executor runs the shard) sends them again."""
    svc = world.service()
    svc.copy(copy_job())
    svc.plugin(plugin_job(image="local/crash", args=(), env=["CHRIS_JID=j1", "CHRIS_PREV_JID=j0",
                                                              "CHRIS_USER_TOKEN=secret"]), owner="pfcon:cube")
    assert svc.status("plugin", "j1")["status"] == "finishedWithError"
    job_id = world.invoker.calls[0][1]["job_id"]
    wanted = {"CHRIS_JID": "j1", "CHRIS_PREV_JID": "j0"}
    assert world.invoker.calls[0][1]["env"] == wanted
    assert world.jobs.get(job_id)["options"]["env"] == wanted  # kept, without CUBE's token

    shard_ids = world.jobs.reopen_failed(job_id)
    assert shard_ids
    svc.dispatcher().fan_out(job_id, shard_ids)  # what the status action's retry does
    assert len(world.invoker.calls) == 2 and world.invoker.calls[1][1]["job_id"] == job_id
    assert world.invoker.calls[1][1]["env"] == wanted


def test_unknown_image_bad_args_gpus_and_path_params_are_400(world):
    svc = world.service()
    svc.copy(copy_job())
    with pytest.raises(BadRequest) as err:
        svc.plugin(plugin_job(image="fnndsc/pl-nope:1.0"), owner="pfcon:cube")
    assert "fnndsc/pl-nope:1.0" in err.value.message and "local/copy" in err.value.message
    with pytest.raises(BadRequest) as err:
        svc.plugin(plugin_job(args=["--bogus"]), owner="pfcon:cube")
    assert "--bogus" in err.value.message
    with pytest.raises(BadRequest) as err:
        svc.plugin(plugin_job(gpu_limit="1"), owner="pfcon:cube")
    assert err.value.field == "gpu_limit"
    assert world.invoker.calls == []


def test_path_options_get_the_staged_input_dir_fs_ones_are_400(redis_client, tmp_path):
    import json as _json
    import shutil

    for name, kind in (("pathds", "ds"), ("pathfs", "fs")):
        d = tmp_path / name
        d.mkdir()
        (d / "descriptor.json").write_text(_json.dumps({
            "name": name, "version": "1", "type": kind, "dock_image": f"local/{name}", "selfpath": ".",
            "selfexec": "p.py", "execshell": "python3",
            "parameters": [{"name": "dir", "type": "path", "optional": True, "flag": "--dir", "action": "store"}]}))
        (d / "p.py").write_text("import json, os, sys\n"
                                "d = sys.argv[sys.argv.index('--dir') + 1]\n"
                                "json.dump(sorted(os.listdir(d)), open(os.path.join(sys.argv[-1], 'seen.json'), 'w'))\n")
    w = make_world(redis_client, Registry(tmp_path), use_bwrap=False)  # bwrap hides the host's /tmp
    svc = w.service()
    svc.copy(copy_job())
    job = plugin_job(image="local/pathds", args=["--dir", "/home/u/feed_1/pl-dircopy_1/data"],
                     args_path_flags=["--dir"])
    assert "--dir /share/incoming /share/incoming /share/outgoing" in svc.plugin(job, owner="pfcon:cube")["cmd"]
    done = svc.status("plugin", "j1")
    assert done["status"] == "finishedSuccessfully", done
    seen = [k for k in w.store.objects if k.endswith("seen.json")]
    assert _json.loads(w.store.objects[seen[0]]) == ["a.txt", "more", "sub"]
    svc.copy(copy_job("j2"))
    with pytest.raises(BadRequest) as err:
        svc.plugin(plugin_job("j2", image="local/pathfs", args=["--dir", "home/x"], type="fs"), owner="pfcon:cube")
    assert err.value.field == "args_path_flags" and "--dir" in err.value.message
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_copy_failure_is_a_finished_with_error_status_and_can_be_retried(world):
    svc = world.service()
    world.chris.put_bytes("home/bad/loop.chrislink", b"home/bad")
    failed = svc.copy(P.CopyJob("j9", ["home/bad"], "out"))
    assert failed["status"] == "finishedWithError" and "chrislink" in failed["message"]
    del world.chris.objects["home/bad/loop.chrislink"]
    world.chris.put_bytes("home/bad/x.txt", b"x")
    assert svc.copy(P.CopyJob("j9", ["home/bad"], "out"))["status"] == "finishedSuccessfully"


def test_empty_input_gets_a_placeholder_so_fs_style_jobs_still_run(world):
    svc = world.service()
    assert svc.copy(P.CopyJob("e1", ["home/empty"], "out"))["message"].startswith("copied 0 files")
    svc.plugin(plugin_job("e1", args=["--ignoreInputDir"]), owner="pfcon:cube")
    assert svc.status("plugin", "e1")["status"] == "finishedSuccessfully"


def test_gone_job_is_undefined_and_unknown_jid_404(world):
    svc = world.service()
    svc.copy(copy_job())
    svc.plugin(plugin_job(), owner="pfcon:cube")
    rec = svc.records.get("j1", "plugin")
    world.jobs.r.delete(world.jobs.key(rec["job_id"]))
    assert svc.status("plugin", "j1")["status"] == "undefined"
    with pytest.raises(NotFound):
        svc.status("upload", "nope")


def test_server_info_says_in_network_s3_with_copy_and_upload_jobs():
    info = PfconService.server_info()
    assert info["pfcon_innetwork"] is True and info["storage_env"] == "s3"
    assert info["requires_copy_job"] is True and info["requires_upload_job"] is True
    assert info["container_env"] == "openwhisk" and info["server_version"].startswith("6.")


def test_object_info_shape_is_what_the_copier_returns():
    assert ObjectInfo("k", 1, "0" * 32).md5 == "0" * 32


def test_message_names_exit_code_and_oom_or_timeout_reason():
    from radcloud.pfcon.service import _message

    oom = {"id": "j9", "state": "failed", "reason": "1 shard(s) failed",
           "shards": [{"exit_code": -9, "reason": "oom: memory limit 100 MiB exceeded"}]}
    assert _message(oom) == "radcloud job j9 failed; exit code -9; oom: memory limit 100 MiB exceeded; " \
                            "1 shard(s) failed"
    slow = {"id": "j8", "state": "failed", "shards": [{"exit_code": None, "reason": "timeout: killed after 30 s"}]}
    assert "timeout: killed after 30 s" in _message(slow)
    assert "cache hit, results of j1" in _message({"id": "j2", "state": "succeeded", "cached": 1, "results_of": "j1"})


def test_a_post_while_another_request_works_on_it_answers_started_and_waits(world):
    svc = world.service()
    assert svc.records.claim("j1", "copy")  # another request is copying j1
    svc.records.put("j1", "copy", {"status": "started", "message": "copying", "timestamp": ""})
    assert svc.copy(copy_job())["status"] == "started"
    assert not [k for k in world.store.objects if k.startswith(staging_prefix("j1"))]  # did not copy twice
    assert svc.status("copy", "j1")["status"] == "started"
    with pytest.raises(Conflict) as err:
        svc.delete(P.DeleteJob("j1"))
    assert err.value.details["active"] == ["copy"]
    # The other request died without a word: its claim expires, the status says so, a POST redoes it.
    svc.records.release("j1", "copy")
    interrupted = svc.status("copy", "j1")
    assert interrupted["status"] == "finishedWithError" and "interrupted" in interrupted["message"]
    assert svc.copy(copy_job())["status"] == "finishedSuccessfully"


def test_plugin_post_during_another_submission_does_not_dispatch_twice(world):
    svc = world.service()
    svc.copy(copy_job())
    assert svc.records.claim("j1", "plugin")
    answer = svc.plugin(plugin_job(), owner="pfcon:cube")
    assert answer["status"] == "notStarted" and world.invoker.calls == []
