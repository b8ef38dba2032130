"""radcloud.run.memory: the action container's memory cgroup, found and read on a fake /proc and cgroup dir."""

from __future__ import annotations

from pathlib import Path

from radcloud.run import memory

V1 = "35 31 0:32 / {point} rw,relatime - cgroup cgroup rw,memory\n"
V2 = "30 23 0:27 / {point} rw,relatime - cgroup2 cgroup2 rw\n"


def proc_with(tmp: Path, cgroup: str, mountinfo: str) -> Path:
    proc = tmp / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup)
    (proc / "self" / "mountinfo").write_text(mountinfo)
    return proc


def cgroup_dir(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def test_v1_cgroup_of_this_process_limit_peak_and_oom_kills(tmp_path):
    point = tmp_path / "memory"
    own = cgroup_dir(point / "lw" / "c000004", {
        "memory.limit_in_bytes": "536870912\n", "memory.usage_in_bytes": "1000\n",
        "memory.max_usage_in_bytes": "113246208\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"})
    found = memory.find(proc_with(tmp_path, "4:memory:/lw/c000004\n0::/\n", V1.format(point=point)))
    assert found == memory.ContainerMemory(own.resolve(), 1)
    assert (found.limit(), found.usage(), found.peak(), found.oom_kills()) == (512 << 20, 1000, 108 << 20, 3)


def test_inside_a_sandbox_its_own_cgroup_is_the_mount_point(tmp_path):
    # cgroup namespace: /proc/self/cgroup says "/", and the container's cgroup is bound over the mount
    point = cgroup_dir(tmp_path / "memory", {"memory.limit_in_bytes": "209715200\n",
                                             "memory.oom_control": "oom_kill 0\n"})
    found = memory.find(proc_with(tmp_path, "4:memory:/\n", V1.format(point=point)))
    assert found.path == point.resolve() and found.limit() == 200 << 20 and found.oom_kills() == 0


def test_v2_reads_memory_events_and_treats_max_as_unlimited(tmp_path):
    point = tmp_path / "cg2"
    cgroup_dir(point / "act", {"memory.max": "max\n", "memory.peak": "4096\n",
                               "memory.events": "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n"})
    found = memory.find(proc_with(tmp_path, "0::/act\n", V2.format(point=point)))
    assert found.version == 2 and found.limit() is None and found.peak() == 4096 and found.oom_kills() == 1


def test_old_v1_kernels_count_limit_hits_and_unlimited_is_none(tmp_path):
    point = tmp_path / "memory"
    cgroup_dir(point, {"memory.limit_in_bytes": "9223372036854771712\n",
                       "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\n", "memory.failcnt": "2\n"})
    found = memory.find(proc_with(tmp_path, "4:memory:/\n", V1.format(point=point)))
    assert found.limit() is None and found.oom_kills() == 2


def test_no_memory_cgroup_means_cannot_tell(tmp_path):
    found = memory.find(proc_with(tmp_path, "0::/\n", ""))
    assert found is memory.NOT_FOUND
    assert (found.limit(), found.peak(), found.oom_kills()) == (None, None, None)
