"""The pool: warm reuse, stem cells, the container cap under 100 parallel runs, forget, reaping."""

from __future__ import annotations

import subprocess
import threading
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from localwhisk.runtime import DEVELOPER_ERROR, SUCCESS, ActionCode, ImageSpec, Limits, Runtime

ECHO = "def main(args):\n    return args\n"


def echo(name: str = "echo", digest: str = "v1", code: str = ECHO) -> ActionCode:
    return ActionCode(fqn=f"/guest/pool/{name}", version="0.0.1", kind="python:3.11", code=code,
                      binary=False, digest=digest)


def invoke(rt: Runtime, act: ActionCode, value, limits: Limits = Limits()):
    return rt.run(act, limits, value, activation_id="a1", transaction_id="t1", namespace="guest",
                  api_key=None, deadline_ms=0)


def wait_for(predicate, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def make_runtime(tmp_path):
    made = []

    def make(**kw):
        kw.setdefault("prewarm", 0)
        rt = Runtime(api_host="http://127.0.0.1:1", state_dir=tmp_path / f"s{len(made)}", **kw)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.shutdown()


def test_100_parallel_runs_complete_none_lost(make_runtime):
    rt = make_runtime(max_containers=4, prewarm=1)
    acts = [echo("a"), echo("b")]
    with ThreadPoolExecutor(max_workers=24) as ex:
        outs = list(ex.map(lambda i: invoke(rt, acts[i % 2], {"i": i}), range(100)))
    assert [o.result for o in outs] == [{"i": i} for i in range(100)]
    assert all(o.status == SUCCESS for o in outs)
    stats = rt.stats()
    assert stats["containers"] <= 4
    assert sum(a["warm"] for a in stats["actions"].values()) >= 2
    assert all(a["busy"] == 0 for a in stats["actions"].values())


def test_cap_evicts_the_idle_container_of_another_action(make_runtime):
    rt = make_runtime(max_containers=1)
    assert invoke(rt, echo("one"), {}).status == SUCCESS
    assert invoke(rt, echo("two"), {}).status == SUCCESS
    assert list(rt.stats()["actions"]) == ["/guest/pool/two"]
    assert rt.stats()["containers"] == 1


def test_queued_runs_of_several_actions_reuse_their_warm_containers(make_runtime):
    """More actions with queued runs than the pool has slots for each (a job per plugin, a shard
    per series): a released container goes to a run of its own action waiting for it, not to
    another action's run that evicts it and pays a cold start (every run was cold: the
    real-file matrix's 90 shards of six plugins on 8 slots started 80 containers)."""
    rt = make_runtime(max_containers=4)
    slow = "import time\ndef main(a):\n    time.sleep(0.05)\n    return a\n"
    acts = [echo(f"a{n}", code=slow) for n in range(6)]
    with ThreadPoolExecutor(max_workers=60) as ex:
        outs = list(ex.map(lambda i: invoke(rt, acts[i % 6], {"i": i}), range(60)))
    assert [o.result for o in outs] == [{"i": i} for i in range(60)]
    cold = sum(o.init_time_ms is not None for o in outs)
    # each action starts cold at least once, a few more as slots move between actions whose
    # queues drain; evicting whatever was idle started 58 of the 60 cold
    assert cold <= 15, f"{cold} of 60 runs started cold"
    assert rt.stats()["containers"] <= 4


def test_a_long_queue_of_one_action_leaves_a_container_to_another_action(make_runtime):
    """Runs queued for their own action's containers do not keep them from an action that has
    none: its run gets the next one released (a dispatch while a job's shards queue), not
    the slot left when the whole queue has run."""
    rt = make_runtime(max_containers=2)
    slow = "import time\ndef main(a):\n    time.sleep(0.1)\n    return {'end': time.monotonic()}\n"
    clock = "import time\ndef main(a):\n    return {'end': time.monotonic()}\n"
    with ThreadPoolExecutor(max_workers=31) as ex:
        queue = [ex.submit(invoke, rt, echo("queue", code=slow), {}) for _ in range(30)]
        assert wait_for(lambda: rt.stats()["actions"].get("/guest/pool/queue", {}).get("busy") == 2)
        other = ex.submit(invoke, rt, echo("other", code=clock), {}).result()
        ends = [f.result().result["end"] for f in queue]
    assert other.status == SUCCESS
    assert other.result["end"] < sorted(ends)[-5], "the other action waited for the queue to drain"


def test_a_burst_of_one_action_does_not_evict_a_container_in_use(make_runtime):
    """A job's queued shards wait for their own containers rather than evict the one a page polls
    with between two polls (it would start cold at the next poll, ~1 s of CPU each time)."""
    rt = make_runtime(max_containers=2)
    slow = "import time\ndef main(a):\n    time.sleep(0.05)\n    return a\n"
    assert invoke(rt, echo("poll"), {}).init_time_ms is not None
    with ThreadPoolExecutor(max_workers=10) as ex:
        burst = list(ex.map(lambda i: invoke(rt, echo("burst", code=slow), {"i": i}), range(10)))
    assert [o.result for o in burst] == [{"i": i} for i in range(10)]
    assert sum(o.init_time_ms is not None for o in burst) == 1  # one container of its own, reused
    assert invoke(rt, echo("poll"), {}).init_time_ms is None  # still warm


def test_instances_caps_an_actions_containers_and_never_evicts_another_action(make_runtime):
    """limits.instances (OpenWhisk 2.0): at its cap an action's runs queue for its own containers."""
    rt = make_runtime(max_containers=4)
    slow = echo("capped", code="import time\ndef main(a):\n    time.sleep(0.2)\n    return a\n")
    assert invoke(rt, echo("other"), {}).status == SUCCESS  # a warm container of another action
    capped = Limits(instances=1)
    with ThreadPoolExecutor(max_workers=4) as ex:
        outs = list(ex.map(lambda i: invoke(rt, slow, {"i": i}, capped), range(4)))
    assert [o.result for o in outs] == [{"i": i} for i in range(4)]
    assert sum(o.init_time_ms is not None for o in outs) == 1  # one container, reused in turn
    actions = rt.stats()["actions"]
    assert actions["/guest/pool/capped"]["warm"] == 1 and actions["/guest/pool/other"]["warm"] == 1
    # a new version of the capped action replaces its idle old one, within the cap
    out = invoke(rt, echo("capped", digest="v2", code="def main(a):\n    return {'v': 2}\n"), {}, capped)
    assert out.result == {"v": 2} and rt.stats()["actions"]["/guest/pool/capped"]["warm"] == 1


def test_stem_cell_is_used_for_a_cold_start_and_replaced(make_runtime):
    rt = make_runtime(prewarm=1)
    assert wait_for(lambda: rt.stats()["prewarm"] == 1)
    out = invoke(rt, echo(), {"x": 1})
    assert out.result == {"x": 1} and out.init_time_ms is not None
    assert wait_for(lambda: rt.stats()["prewarm"] == 1)
    assert rt.stats()["containers"] == 2


def test_new_digest_means_a_new_container(make_runtime):
    rt = make_runtime()
    invoke(rt, echo(digest="v1"), {})
    out = invoke(rt, echo(digest="v2", code="def main(a):\n    return {'v': 2}\n"), {})
    assert out.result == {"v": 2} and out.init_time_ms is not None


def test_forget_drops_warm_containers(make_runtime):
    rt = make_runtime()
    invoke(rt, echo(), {})
    assert rt.stats()["actions"]["/guest/pool/echo"]["warm"] == 1
    rt.forget("/guest/pool/echo")
    assert "/guest/pool/echo" not in rt.stats()["actions"]
    assert invoke(rt, echo(), {}).init_time_ms is not None


def test_forget_while_running_retires_the_busy_container(make_runtime):
    rt = make_runtime()
    slow = echo("slow", code="import time\ndef main(a):\n    time.sleep(0.3)\n    return {}\n")
    with ThreadPoolExecutor(max_workers=1) as ex:
        future = ex.submit(invoke, rt, slow, {})
        assert wait_for(lambda: rt.stats()["actions"].get("/guest/pool/slow", {}).get("busy") == 1)
        rt.forget("/guest/pool/slow")
        assert future.result().status == SUCCESS
    assert "/guest/pool/slow" not in rt.stats()["actions"]


def test_idle_containers_are_reaped_after_the_ttl(make_runtime):
    rt = make_runtime(idle_ttl_s=0.2)
    invoke(rt, echo(), {})
    assert wait_for(lambda: rt.stats()["actions"] == {} and rt.stats()["containers"] == 0, 5)


def test_shutdown_ends_busy_runs_as_developer_errors(make_runtime):
    rt = make_runtime()
    slow = echo("sleepy", code="import time\ndef main(a):\n    time.sleep(30)\n    return {}\n")
    with ThreadPoolExecutor(max_workers=1) as ex:
        future = ex.submit(invoke, rt, slow, {})
        assert wait_for(lambda: rt.stats()["actions"].get("/guest/pool/sleepy", {}).get("busy") == 1)
        rt.shutdown()
        out = future.result(timeout=10)
    assert out.status == DEVELOPER_ERROR
    assert rt.stats()["containers"] == 0


def test_shutdown_and_the_last_release_close_the_memory_cgroup_once(make_runtime):
    """Both call _close_memory when the last busy run ends; a second close once
    crashed on the removed cgroup and turned that run into a whisk error."""
    rt = make_runtime()
    closes = []
    real_close = rt.memory.close

    def slow_close():
        closes.append(threading.current_thread().name)
        time.sleep(0.2)  # widens the window both callers used to pass through
        real_close()

    rt.memory.close = slow_close
    slow = echo("sleepy2", code="import time\ndef main(a):\n    time.sleep(30)\n    return {}\n")
    with ThreadPoolExecutor(max_workers=1) as ex:
        future = ex.submit(invoke, rt, slow, {})
        assert wait_for(lambda: rt.stats()["actions"].get("/guest/pool/sleepy2", {}).get("busy") == 1)
        rt.shutdown()
        assert future.result(timeout=10).status == DEVELOPER_ERROR
    racers = [threading.Thread(target=rt._close_memory) for _ in range(4)]
    for t in racers:
        t.start()
    for t in racers:
        t.join()
    assert len(closes) == 1, closes


def test_unsupported_kind_is_a_developer_error(make_runtime):
    rt = make_runtime()
    act = ActionCode(fqn="/guest/js", version="1", kind="nodejs:20", code="x", binary=False)
    out = invoke(rt, act, {})
    assert out.status == DEVELOPER_ERROR and "nodejs:20" in out.result["error"]


def test_runtime_imports_nothing_of_radcloud_or_dicom():
    probe = ("import sys, localwhisk.runtime, localwhisk.runtime.launcher; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('radcloud', 'pydicom', 'pynetdicom')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_stem_cells_preload_modules_and_actions_see_them(make_runtime):
    rt = make_runtime(prewarm=1, preload=("xml.dom.minidom",))
    assert wait_for(lambda: rt.stats()["prewarm"] == 1)
    probe = echo("pre", code="import sys\ndef main(a):\n    return {'pre': 'xml.dom.minidom' in sys.modules}\n")
    assert invoke(rt, probe, {}).result == {"pre": True}
    cold = echo("nopre", code="import sys\ndef main(a):\n    return {'pre': 'xml.dom.minidom' in sys.modules}\n")
    rt.shutdown()
    plain = make_runtime(prewarm=0, preload=("xml.dom.minidom",))
    assert invoke(plain, cold, {}).result == {"pre": False}  # only stem cells preload


PROBE = "import sys\ndef main(a):\n    return {m: m in sys.modules for m in ('xml.dom.minidom', 'json.tool')}\n"


def docker(name: str, image: str = "user/img:1", network: bool = True) -> ActionCode:
    return ActionCode(fqn=f"/guest/pool/{name}", version="0.0.1", kind="blackbox", image=image, code=PROBE,
                      binary=False, digest="v1", network=network)


def test_mapped_images_have_their_own_stem_pool_with_their_preload(make_runtime):
    rt = make_runtime(prewarm=1, sandbox="none", preload=("xml.dom.minidom",),
                      images={"user/img": ImageSpec(preload=("json.tool",))})
    assert wait_for(lambda: rt.stats()["stems"] == {"python": 1, "user/img": 1})
    out = invoke(rt, docker("a"), {})
    # the image's stem cell imported the global preload and the image's own
    assert out.result == {"xml.dom.minidom": True, "json.tool": True} and out.init_time_ms is not None
    assert wait_for(lambda: rt.stats()["stems"] == {"python": 1, "user/img": 1})  # replaced
    python_kind = echo("py", code=PROBE)
    assert invoke(rt, python_kind, {}).result == {"xml.dom.minidom": True, "json.tool": False}


def test_an_image_without_prewarm_gets_stem_cells_after_its_first_cold_start(make_runtime):
    rt = make_runtime(prewarm=1, sandbox="none", preload=("xml.dom.minidom",),
                      images={"user/img": ImageSpec(prewarm=False)})
    assert wait_for(lambda: rt.stats()["stems"] == {"python": 1})
    first = invoke(rt, docker("first"), {})
    assert first.result["xml.dom.minidom"] is False  # spawned for it: no preload
    assert wait_for(lambda: rt.stats()["stems"] == {"python": 1, "user/img:1": 1})
    assert invoke(rt, docker("second"), {}).result["xml.dom.minidom"] is True


def test_at_the_cap_stem_cells_are_evicted_before_warm_containers(make_runtime):
    """Stem pools (one per image) must not crowd warm containers out of the pool: with every
    slot taken, a cold start evicts another pool's stem cell, not an action's warm container."""
    rt = make_runtime(max_containers=3, prewarm=1, sandbox="none", images={"user/img": ImageSpec()})
    assert wait_for(lambda: rt.stats()["stems"] == {"python": 1, "user/img": 1})
    invoke(rt, echo("one"), {})
    assert wait_for(lambda: rt.stats()["stems"] == {"python": 1, "user/img": 1})  # the pool is full
    invoke(rt, echo("two"), {})  # takes the python stem cell; no room to replace it
    assert invoke(rt, echo("three"), {}).init_time_ms is not None  # no stem left for it
    assert rt.stats()["stems"] == {} and rt.stats()["containers"] == 3
    assert [invoke(rt, echo(n), {}).init_time_ms for n in ("one", "two", "three")] == [None] * 3


def test_no_stem_cells_at_all_with_prewarm_0(make_runtime):
    rt = make_runtime(prewarm=0, sandbox="none", images={"user/img": ImageSpec()})
    assert invoke(rt, docker("a"), {}).status == SUCCESS
    time.sleep(0.3)
    assert rt.stats()["stems"] == {} and rt.stats()["containers"] == 1


def test_image_stem_key_covers_what_the_process_was_started_with():
    base = ImageSpec(pythonpath=("/a",), env={"X": "1"})
    assert base.stem_key(True) == ImageSpec(pythonpath=("/a",), env={"X": "1"}).stem_key(True)
    assert base.stem_key(True) != base.stem_key(False)
    assert base.stem_key(True) != ImageSpec(pythonpath=("/b",), env={"X": "1"}).stem_key(True)
    assert base.stem_key(True) != ImageSpec(pythonpath=("/a",), env={"X": "2"}).stem_key(True)
    assert base.stem_key(True) != ImageSpec(pythonpath=("/a",), env={"X": "1"}, preload=("m",)).stem_key(True)
