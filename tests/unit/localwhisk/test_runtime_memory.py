"""localwhisk.runtime.memory and memwatch: detection, cgroup files and the RSS watcher, on fake directories.

A fake cgroup is a plain directory holding the files the kernel would show; a
fake /proc holds ``self/cgroup``, ``self/mountinfo`` and ``<pid>/stat|statm``.
The real kernel path is covered by test_runtime_conformance.py (an OOM kill
reported as such) and tests/e2e/test_plugins_deployed.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from localwhisk.runtime import memory as mem
from localwhisk.runtime import memwatch

V1_MOUNTINFO = ("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
                "35 31 0:32 / {point} rw,relatime - cgroup cgroup rw,memory\n"
                "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
V2_MOUNTINFO = "30 23 0:27 / {point} rw,relatime - cgroup2 cgroup2 rw\n"


def fake_proc(tmp: Path, cgroup: str, mountinfo: str) -> Path:
    proc = tmp / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup)
    (proc / "self" / "mountinfo").write_text(mountinfo)
    return proc


def test_own_cgroups_of_a_hybrid_host_and_of_a_sandbox_that_binds_over_the_mount():
    own = mem.own_cgroups("4:memory:/process_api/abc\n0::/\n",
                          V1_MOUNTINFO.format(point="/sys/fs/cgroup/memory"))
    assert own["cgroup1"] == (Path("/sys/fs/cgroup/memory/process_api/abc"), "/sys/fs/cgroup/memory")
    assert own["cgroup2"] == (Path("/sys/fs/cgroup/unified"), "/sys/fs/cgroup/unified")
    # inside the sandbox: its own cgroup is bound over the mount point (the last mount wins)
    bound = V1_MOUNTINFO.format(point="/sys/fs/cgroup/memory") + \
        "90 35 0:32 /process_api/abc/lw/c1 /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n"
    assert mem.own_cgroups("4:memory:/\n", bound)["cgroup1"][0] == Path("/sys/fs/cgroup/memory")


def test_v1_without_oom_kill_counts_limit_hits(tmp_path):
    box = mem.CgroupV1Box(tmp_path)
    (tmp_path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")  # kernel < 4.13
    (tmp_path / "memory.failcnt").write_text("7\n")
    assert box.oom_kills() == 7


def test_detect_v2_needs_the_memory_controller_delegated(tmp_path):
    point = tmp_path / "cg2"
    (point / "user").mkdir(parents=True)
    (point / "user" / "cgroup.controllers").write_text("cpu io memory pids\n")
    (point / "user" / "cgroup.subtree_control").write_text("")
    proc = fake_proc(tmp_path, "0::/user\n", V2_MOUNTINFO.format(point=point))
    limiter = mem.detect(proc=proc, name="lw")
    assert limiter.kind == "cgroup2" and (limiter.base / "cgroup.subtree_control").read_text() == "+memory"
    box = limiter.box("c1")
    box.set_limit(256 * 2**20)
    assert (box.path / "memory.max").read_text() == str(256 * 2**20)
    (box.path / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n")
    (box.path / "memory.peak").write_text("268435456\n")
    assert box.oom_kills() == 1 and box.peak() == 256 * 2**20


def test_detect_falls_back_to_the_watcher_and_says_why(tmp_path):
    point = tmp_path / "cg2"
    (point / "user").mkdir(parents=True)
    (point / "user" / "cgroup.controllers").write_text("cpu io pids\n")  # memory not delegated
    proc = fake_proc(tmp_path, "0::/user\n", V2_MOUNTINFO.format(point=point))
    limiter = mem.detect(proc=proc, name="lw")
    assert limiter.kind == "watch" and "not delegated" in limiter.reason
    assert "cgroup1: no memory hierarchy" in limiter.reason
    with pytest.raises(ValueError, match="cgroup2 does not work here"):
        mem.detect("cgroup2", proc=proc, name="lw")


def _fake_process(proc: Path, pid: int, ppid: int, rss_pages: int, comm: str = "python3") -> None:
    d = proc / str(pid)
    d.mkdir(parents=True)
    (d / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1\n")
    (d / "statm").write_text(f"1000 {rss_pages} 10 1 0 100 0\n")


def test_watcher_kills_a_tree_past_its_limit_and_counts_an_oom_kill(tmp_path):
    proc = tmp_path / "proc"
    _fake_process(proc, 100, 1, 1000)               # the launcher: 4 MB
    _fake_process(proc, 101, 100, 20000, "a (b) c")  # its plugin, in its own session: 80 MB
    _fake_process(proc, 102, 101, 10000)            # the plugin's child: 40 MB
    _fake_process(proc, 200, 1, 99999)              # not in the tree
    killed = []
    watcher = memwatch.Watcher(proc, page_size=4096, kill=lambda pid, sig: killed.append((pid, sig)))
    box = memwatch.WatchedBox(watcher)
    watcher._boxes.add(box)  # add() would start the polling thread; one pass is enough here
    box.pid = 100
    box.set_limit(200 * 2**20)
    watcher.check()
    assert killed == [] and box.oom_kills() == 0 and box.peak() == 31000 * 4096
    box.set_limit(100 * 2**20)
    watcher.check()
    assert sorted(killed) == [(100, signal.SIGKILL), (101, signal.SIGKILL), (102, signal.SIGKILL)]
    assert box.oom_kills() == 1


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="not one of"):
        mem.detect("docker")


def test_cgroups_of_a_killed_localwhisk_are_removed_at_the_next_start(tmp_path):
    point = tmp_path / "memory"
    own = point / "me"
    (own / "localwhisk-999999999-1" / "c000003").mkdir(parents=True)  # its localwhisk is gone
    (own / f"localwhisk-{os.getpid()}-7" / "c000001").mkdir(parents=True)  # a live one: kept
    proc = fake_proc(tmp_path, "4:memory:/me\n", V1_MOUNTINFO.format(point=point))
    mem.detect(proc=proc, name="lw-new")
    assert sorted(p.name for p in own.iterdir()) == ["localwhisk-" + str(os.getpid()) + "-7", "lw-new"]
