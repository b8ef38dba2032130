"""localwhisk's v1 memory cgroups on a fake cgroup tree, joined by a real /bin/sh (a process: not the unit tier)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from localwhisk.runtime import memory as mem

from test_runtime_memory import V1_MOUNTINFO, fake_proc  # noqa: E402  (tests/unit/localwhisk is on the path)


def test_detect_v1_makes_a_base_and_boxes_get_limits_without_swap(tmp_path):
    point = tmp_path / "memory"
    (point / "me").mkdir(parents=True)
    proc = fake_proc(tmp_path, "4:memory:/me\n", V1_MOUNTINFO.format(point=point))
    limiter = mem.detect(proc=proc, name="lw-test")
    assert (limiter.kind, limiter.base, limiter.mount_point) == ("cgroup1", point / "me" / "lw-test", str(point))
    box = limiter.box("c000001")
    (box.path / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    box.set_limit(300 * 2**20)
    box.set_limit(128 * 2**20)
    assert (box.path / "memory.limit_in_bytes").read_text() == str(128 * 2**20)
    assert (box.path / "memory.memsw.limit_in_bytes").read_text() == str(128 * 2**20)  # no swap
    (box.path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (box.path / "memory.max_usage_in_bytes").write_text("123456\n")
    assert box.oom_kills() == 2 and box.peak() == 123456
    box.reset_peak()
    assert (box.path / "memory.max_usage_in_bytes").read_text() == "0"
    (box.path / "cgroup.procs").write_text("")
    # the container's command joins first (its own pid), then execs in that pid
    done = subprocess.run(box.wrap(["/bin/sh", "-c", "echo $$"]), capture_output=True, text=True)
    assert done.returncode == 0 and (box.path / "cgroup.procs").read_text().strip() == done.stdout.strip()
    (box.path / "cgroup.procs").unlink()
    (box.path / "cgroup.procs").mkdir()  # cannot be written: the command must not run at all
    refused = subprocess.run(box.wrap(["/bin/echo", "ran"]), capture_output=True, text=True)
    assert refused.returncode != 0 and "ran" not in refused.stdout
