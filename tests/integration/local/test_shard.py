"""radcloud.run.shard: the shard runner end to end with fixture plugins.

Each failure path has a deliberately broken plugin under
tests/fixtures/plugins; the store and reporter are in-memory fakes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import pytest

from radcloud.core.errors import BadRequest
from radcloud.run.registry import Registry
from radcloud.run.shard import ShardSpec, collect_outputs, content_type, run_shard, safe_relpath
from radcloud.run import landlock, sandbox
from shard_fakes import FIXTURES, FakeStore, RecordingReporter

# The bwrap case needs bubblewrap (conftest.py: fails in CI without it, skips elsewhere).
BWRAP = [pytest.param(False, id="rlimits"), pytest.param(True, id="bwrap")]
CHECKOUT = os.path.dirname(os.path.dirname(sandbox.__file__))


def drops_to_nobody() -> bool:
    """Whether the fallback (no bubblewrap) should run the fixtures as uid 65534:
    as root, when that uid can reach the interpreter, its venv, radcloud and the fixtures."""
    return os.geteuid() == 0 and sandbox.others_can_run(sys.executable) and all(
        sandbox.others_can_read(p) for p in (sys.prefix, CHECKOUT, str(FIXTURES)))


def spec(plugin: str, params: dict | None = None, **extra) -> dict:
    return {"job_id": "j1", "shard_id": "j1-0", "plugin": plugin, "params": params or {},
            "inputs": ["staged/j1/a.dcm", "staged/j1/sub/b.dcm"], "input_prefix": "staged/j1/",
            "output_prefix": "results/j1/0/", **extra}


def run(plugin, params=None, reporter=None, use_bwrap=False, store=None, memory=None, **extra):
    store = store or FakeStore({"staged/j1/a.dcm": b"AAAA", "staged/j1/sub/b.dcm": b"BB"})
    reporter = reporter or RecordingReporter()
    summary = run_shard(spec(plugin, params, **extra), store=store, reporter=reporter,
                        registry=Registry(FIXTURES), use_bwrap=use_bwrap, memory=memory)
    return summary, reporter, store


@pytest.mark.parametrize("use_bwrap", BWRAP)
def test_happy_path_uploads_outputs_with_md5_and_type(use_bwrap):
    summary, rep, store = run("copy", {"prefix": "c-"}, use_bwrap=use_bwrap)
    out = rep.outcome
    assert out["status"] == "finishedSuccessfully" and out["reason"] == "ok" and out["exit_code"] == 0
    keys = {o["key"]: o for o in out["outputs"]}
    assert set(keys) == {"results/j1/0/c-a.dcm", "results/j1/0/c-b.dcm", "results/j1/0/probe.json"}
    assert keys["results/j1/0/c-a.dcm"]["md5"] == hashlib.md5(b"AAAA").hexdigest()
    assert keys["results/j1/0/c-a.dcm"]["content_type"] == "application/dicom"
    assert store.objects["results/j1/0/c-b.dcm"] == b"BB"
    assert summary == {"job_id": "j1", "shard_id": "j1-0", "status": "finishedSuccessfully",
                       "reason": "ok", "exit_code": 0, "bytes_out": out["bytes_out"],
                       "duration_s": out["duration_s"], "n_outputs": 3,
                       "memory_peak_mib": out["memory_peak_mib"]}
    assert "done" in out["stderr_tail"] and "copied 2" in rep.lines
    started = [e for kind, e in rep.events if kind == "started"][0]
    assert started["argv"][2:4] == ["--prefix", "c-"] and started["n_inputs"] == 2
    probe = json.loads(store.objects["results/j1/0/probe.json"])
    isolated = use_bwrap or drops_to_nobody()
    if isolated or os.geteuid() != 0:  # root without isolation ignores chmod
        assert probe["input_writable"] is False
    if use_bwrap:  # a private network namespace: its own loopback, nothing else
        assert probe["netns"] != os.readlink("/proc/self/ns/net")
        assert probe["tcp"] == "ECONNREFUSED" and out["sandbox"].startswith("bubblewrap")
    else:  # the host's network, but seccomp refuses internet sockets (and Landlock TCP)
        assert "no internet sockets (seccomp)" in out["sandbox"], out["sandbox"]
        assert probe["tcp"] == "EACCES" and probe["udp"] == "EACCES", probe
    if not use_bwrap:  # a signal to the runner: refused by Landlock's scope (ABI 6), or by the uid
        assert probe["signal_parent"] == ("EPERM" if landlock.abi() >= 6 or isolated else "allowed")
    assert probe["uid"] == (65534 if isolated else os.geteuid())
    assert out["sandbox"].count(f"uid {probe['uid']}") == 1, out["sandbox"]
    assert probe["jid"] == "j1"
    # radcloud's own settings never reach the plugin
    assert not [k for k in probe["env"] if k.startswith(("RADCLOUD_S3", "RADCLOUD_REDIS", "AWS_"))]


def test_the_deid_secret_reaches_only_plugins_that_declare_it():
    store = FakeStore({"staged/j1/a.dcm": b"AAAA", "staged/j1/sub/b.dcm": b"BB"})
    rep = RecordingReporter()
    run_shard(spec("copy"), store=store, reporter=rep, registry=Registry(FIXTURES), use_bwrap=False,
              deid_secret="a-hospital-side-secret-0123456789")
    probe = json.loads(store.objects["results/j1/0/probe.json"])
    assert rep.outcome["reason"] == "ok" and "RADCLOUD_DEID_SECRET" not in probe["env"]
    assert not [k for k in store.objects if k.startswith("deid-maps/")]


def test_crash_reports_exit_code_and_keeps_partial_output():
    summary, rep, store = run("crash")
    out = rep.outcome
    assert (out["status"], out["reason"], out["exit_code"]) == ("finishedWithError", "crash", 1)
    assert "RuntimeError" in out["stderr_tail"]
    assert store.objects["results/j1/0/partial.txt"] == b"half done\n"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("use_bwrap", BWRAP)
def test_hang_is_killed_at_the_wall_clock_limit(use_bwrap):
    summary, rep, _ = run("hang", use_bwrap=use_bwrap)
    out = rep.outcome
    assert out["reason"] == "timeout" and out["status"] == "finishedWithError"
    assert 1.9 < out["run_s"] < 8


@pytest.mark.timeout(30)
def test_activation_deadline_cuts_the_wall_clock():
    import time
    store = FakeStore({"staged/j1/a.dcm": b"A", "staged/j1/sub/b.dcm": b"B"})
    rep = RecordingReporter()
    run_shard(spec("copy", {"sleep": 30}), store=store, reporter=rep, registry=Registry(FIXTURES),
              use_bwrap=False, deadline=time.time() + 13)
    assert rep.outcome["reason"] == "timeout" and rep.outcome["run_s"] < 6  # 13 s - 10 s reserve
    rep = RecordingReporter()
    run_shard(spec("copy"), store=store, reporter=rep, registry=Registry(FIXTURES), deadline=time.time() + 5)
    assert rep.outcome["reason"] == "error" and "deadline" in rep.outcome["message"]


class CgroupSnapshots:
    """A container cgroup whose OOM count reads ``counts`` in turn (before, after the run)."""

    def __init__(self, *counts: int | None) -> None:
        self.counts = list(counts)

    def oom_kills(self):
        return self.counts.pop(0)

    def limit(self):
        return 200 * 1024**2

    def peak(self):
        return 199 * 1024**2


def test_sigkill_counted_as_an_oom_kill_by_the_container_is_oom():
    # The kernel's OOM kill is a SIGKILL plus the cgroup's count going up (tests/e2e proves it
    # with a real cgroup; memhog is not run here: without a cgroup nothing would stop it).
    _, rep, _ = run("sigkill", memory=CgroupSnapshots(3, 4))
    assert rep.outcome["reason"] == "oom", rep.outcome
    assert "OOM killer" in rep.outcome["message"] and "200 MiB limit" in rep.outcome["message"]


@pytest.mark.parametrize("counts, why", [((3, 3), "no OOM kill was counted"), ((None, None), "cannot be told")])
def test_sigkill_for_another_reason_is_a_crash_not_oom(counts, why):
    _, rep, _ = run("sigkill", memory=CgroupSnapshots(*counts))
    assert rep.outcome["reason"] == "crash", rep.outcome
    assert "SIGKILL" in rep.outcome["message"] and why in rep.outcome["message"]
    assert "about to be killed" in rep.outcome["stderr_tail"]


def test_runner_errors_carry_the_exception_text_and_what_to_do():
    from radcloud.run.shard import runner_error
    import subprocess

    msg = runner_error(subprocess.SubprocessError("Exception occurred in preexec_fn."))
    assert "preexec_fn" in msg and "docs/plugins.md" in msg
    msg = runner_error(OSError(28, "No space left on device", "/tmp/radcloud-shard-x/outgoing/a"))
    assert "No space left on device" in msg and "/tmp/radcloud-shard-x" in msg and "disk space" in msg
    try:
        {}["md5"]
    except KeyError as exc:
        msg = runner_error(exc)
    assert msg.startswith("shard runner error: KeyError at test_shard.py:") and "`{}[\"md5\"]`" in msg
    assert "traceback" in msg and "md5'" not in msg  # an exception's text may quote data: not copied


@pytest.mark.parametrize("use_bwrap", BWRAP)
def test_writes_outside_and_symlink_escapes_are_refused(use_bwrap):
    summary, rep, store = run("escape", use_bwrap=use_bwrap)
    out = rep.outcome
    uploaded = {o["key"].rsplit("/", 1)[1] for o in out["outputs"]}
    assert uploaded == {"ok.txt", "inside-link.txt", "tried.json"}
    refused = {r["path"]: r["why"] for r in out["rejected"]}
    assert refused == {"passwd": "symlink outside the output dir", "rootdir": "directory symlink",
                       "input-link": "symlink outside the output dir"}
    tried = json.loads(store.objects["results/j1/0/tried.json"])
    beside, world_writable = sorted(tried, key=lambda path: path.startswith("/var/tmp/"))
    try:
        if use_bwrap or landlock.abi() >= 1:  # a read-only root, or Landlock
            refusal = "Read-only file system" if use_bwrap else "Permission denied"
            assert tried == {beside: refusal, world_writable: refusal}, (tried, out["sandbox"])
            assert not os.path.exists(world_writable)
        elif drops_to_nobody():  # uid 65534 alone: /var/tmp is anyone's (docs/plugins.md)
            assert tried == {beside: "Permission denied", world_writable: "written"}, tried
        else:  # root without isolation: writes happen, but nothing outside is uploaded
            assert tried == {beside: "written", world_writable: "written"}, tried
    finally:  # a file left there would fail the next run
        if os.path.exists(world_writable):
            os.unlink(world_writable)
    assert store.objects["results/j1/0/inside-link.txt"] == b"fine"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["bigfile", "files", "bytes"])
def test_output_flood_is_stopped(mode):
    summary, rep, store = run("flood", {"mode": mode})
    out = rep.outcome
    assert out["reason"] == "error" and out["status"] == "finishedWithError"
    assert "exceeded" in out["message"]
    assert out["bytes_out"] == 0 and out["outputs"] == []


def test_log_flood_is_capped_but_tail_kept():
    summary, rep, _ = run("flood", {"mode": "log"})
    assert rep.outcome["reason"] == "ok"
    assert len(rep.lines) == 2000
    assert rep.outcome["stderr_tail"].endswith("line 49999")


def test_the_runner_reports_running_before_it_fetches_or_looks_up_anything():
    """The shard shows running (\"fetching 2 inputs\") as soon as its runner is up: on Slurm that is
    the batch job's start, not the end of its downloads (issue 18: state change -> visible <= 1 s)."""
    rep = RecordingReporter()

    class Store(FakeStore):
        def get_to_file(self, key, path):
            rep.events.append(("get", key))
            return super().get_to_file(key, path)

    _, rep, _ = run("copy", reporter=rep, store=Store({"staged/j1/a.dcm": b"AAAA", "staged/j1/sub/b.dcm": b"BB"}))
    kinds = [kind for kind, _ in rep.events]
    assert rep.events[0] == ("running", {"job_id": "j1", "plugin": "copy", "n_inputs": 2})
    assert kinds.count("running") == 1 and kinds.count("started") == 1
    assert kinds.index("get") > 0 and kinds.index("started") > max(i for i, k in enumerate(kinds) if k == "get")
    assert rep.outcome["reason"] == "ok"
    # A spec that cannot even be parsed still said it ran, then why it ended.
    _, bad, _ = run("no-such-plugin")
    assert [kind for kind, _ in bad.events] == ["running"] and bad.outcome["status"] == "finishedWithError"


def test_cancel_before_the_plugin_starts():
    rep = RecordingReporter(cancel_after_lines=0)  # the flag is up from the start
    summary, rep, store = run("copy", reporter=rep)
    assert rep.outcome["status"] == "cancelled" and rep.outcome["reason"] == "cancelled"
    assert not [e for kind, e in rep.events if kind == "started"]
    assert rep.outcome["outputs"] == [] and not [k for k in store.objects if k.startswith("results/")]


@pytest.mark.timeout(30)
def test_cancel_while_running():
    class CancelLater(RecordingReporter):
        def cancelled(self):
            return any(kind == "started" for kind, _ in self.events)
    rep = CancelLater()
    summary, rep, _ = run("copy", {"sleep": 20}, reporter=rep)
    assert rep.outcome["reason"] == "cancelled" and rep.outcome["run_s"] < 10


def test_chris_plugin_decorated_plugin_runs_unchanged():
    summary, rep, store = run("chris-hello", {"greeting": "hi", "shout": True})
    assert rep.outcome["reason"] == "ok", rep.outcome["stderr_tail"]
    # PathMapper swaps the suffix and keeps the sub-directory layout
    assert store.objects["results/j1/0/a.txt"] == b"HI a.dcm 4\n"
    assert store.objects["results/j1/0/sub/b.txt"] == b"HI b.dcm 2\n"


def test_bad_params_and_missing_input_still_record_an_outcome():
    summary, rep, _ = run("copy", {"times": "x"})
    assert rep.outcome["reason"] == "error" and "times" in rep.outcome["message"]
    summary, rep, _ = run("copy", store=FakeStore({}))
    assert rep.outcome["reason"] == "error" and "staged/j1/a.dcm" in rep.outcome["message"]
    summary, rep, _ = run("nope")
    assert rep.outcome["status"] == "finishedWithError" and "nope" in rep.outcome["message"]


def test_broken_reporter_notifications_do_not_break_the_shard():
    summary, rep, _ = run("copy", reporter=RecordingReporter(broken=True))
    assert rep.outcome["reason"] == "ok"


def test_unexpected_exception_still_records_outcome():
    class ExplodingStore(FakeStore):
        def put_file(self, key, path, *, content_type=None):
            raise RuntimeError("disk on fire, patient Doe^John")
    summary, rep, _ = run("copy", store=ExplodingStore({"staged/j1/a.dcm": b"A", "staged/j1/sub/b.dcm": b"B"}))
    assert rep.outcome["reason"] == "error" and "Doe" not in rep.outcome["message"]
    assert "RuntimeError at shard.py:" in rep.outcome["message"] and "store.put_file" in rep.outcome["message"]
    assert summary["status"] == "finishedWithError"


def test_spec_validation_names_the_field():
    with pytest.raises(BadRequest) as err:
        ShardSpec.from_dict({"job_id": "j", "shard_id": "s", "plugin": "p", "output_prefix": "o",
                             "inputs": "not-a-list"})
    assert err.value.field == "inputs"


def test_presigned_url_inputs_use_the_injected_fetcher():
    fetched = []

    def fetch(url, path):
        fetched.append(url)
        open(path, "wb").write(b"URL")
    rep = RecordingReporter()
    run_shard({**spec("copy"), "inputs": ["https://s3.example/bucket/x/IM1.dcm?X-Amz-Signature=abc"]},
              store=FakeStore(), reporter=rep, registry=Registry(FIXTURES), use_bwrap=False, fetch_url=fetch)
    assert fetched and rep.outcome["reason"] == "ok"
    assert [o["key"] for o in rep.outcome["outputs"]][0] == "results/j1/0/IM1.dcm"


def test_presigned_urls_are_fetched_and_a_refusal_says_what_to_do(tmp_path):
    """The real downloader against a loopback HTTP server: the bytes arrive; a 403 (an
    expired URL) is an UpstreamError naming the status, never the URL's signature."""
    import http.server
    import threading

    from radcloud.core.errors import UpstreamError
    from radcloud.run.shard import _fetch_url

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            ok = self.path.startswith("/ok")
            self.send_response(200 if ok else 403)
            self.send_header("Content-Length", "3" if ok else "0")
            self.end_headers()
            if ok:
                self.wfile.write(b"DCM")

        def log_message(self, *_args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        _fetch_url(f"{base}/ok/IM1.dcm?X-Amz-Signature=abc", str(tmp_path / "IM1.dcm"))
        assert (tmp_path / "IM1.dcm").read_bytes() == b"DCM"
        with pytest.raises(UpstreamError) as err:
            _fetch_url(f"{base}/gone?X-Amz-Signature=secret", str(tmp_path / "x.dcm"))
        assert "HTTP 403" in err.value.message and "secret" not in err.value.message
    finally:
        server.shutdown()


def test_safe_relpath():
    assert safe_relpath("a/./b//c.png") == "a/b/c.png"
    for bad in ("/etc/passwd", "../x", "a/../../x", "", "a\nb"):
        assert safe_relpath(bad) is None


def test_collect_outputs_refuses_special_files(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "ok.png").write_bytes(b"x")
    files, rejected = collect_outputs(tmp_path)
    assert [rel for rel, _ in files] == ["ok.png"]
    assert rejected == [{"path": "pipe", "why": "not a regular file"}]


def test_content_types():
    assert content_type("x.nii.gz") == "application/gzip"
    assert content_type("a/b.PNG") == "image/png"
    assert content_type("weird.zzz") == "application/octet-stream"


def test_shard_action_refuses_a_spec_without_job_id_before_any_connection():
    import runpy
    from pathlib import Path
    action = runpy.run_path(str(Path(__file__).resolve().parents[3] / "functions" / "shard" / "__main__.py"))
    answer = action["main"]({"shard_id": "s", "plugin": "copy"})
    assert answer["error"]["statusCode"] == 400 and answer["error"]["field"] == "job_id"


def test_without_landlock_the_fallback_refuses_only_what_file_permissions_do(monkeypatch):
    monkeypatch.setattr(landlock, "abi", lambda: 0)  # an old kernel, or Landlock not enabled
    summary, rep, store = run("escape")
    out = rep.outcome
    tried = json.loads(store.objects["results/j1/0/tried.json"])
    beside, world_writable = sorted(tried, key=lambda path: path.startswith("/var/tmp/"))
    try:
        assert out["sandbox"].startswith("no Landlock on this kernel"), out["sandbox"]
        if drops_to_nobody():  # uid 65534 cannot write beside its output dir, but /var/tmp is anyone's
            assert tried == {beside: "Permission denied", world_writable: "written"}, tried
            assert os.stat(world_writable).st_uid == 65534
        elif os.geteuid() == 0:  # root without isolation: writes happen, nothing outside is uploaded
            assert tried == {beside: "written", world_writable: "written"}, tried
        assert {o["key"].rsplit("/", 1)[1] for o in out["outputs"]} == {"ok.txt", "inside-link.txt", "tried.json"}
    finally:
        if os.path.exists(world_writable):
            os.unlink(world_writable)
