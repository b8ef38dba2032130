"""Landlock rulesets (radcloud.run.landlock) applied to a real child process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from radcloud.run import landlock



@pytest.fixture(autouse=True)
def _needs_landlock(require):
    require(landlock.abi() >= 1, "this kernel has no Landlock (Linux >= 5.13 with lsm=...,landlock): "
            "the sandbox's fallback then confines by file permissions only")

PROBE = r"""
import errno, json, os, socket, sys
out = {}
for name, path in (("inside", sys.argv[1] + "/a.txt"), ("beside", sys.argv[2] + "/b.txt"),
                   ("devnull", "/dev/null")):
    try:
        open(path, "w").write("x")
        out[name] = "written"
    except OSError as exc:
        out[name] = errno.errorcode[exc.errno]
try:
    os.unlink(sys.argv[3])
    out["remove"] = "removed"
except OSError as exc:
    out["remove"] = errno.errorcode[exc.errno]
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[4])), timeout=5).close()
    out["tcp"] = "connected"
except OSError as exc:
    out["tcp"] = errno.errorcode.get(exc.errno, str(exc))
print(json.dumps(out))
"""


def confined(tmp_path, *, network: bool) -> dict:
    inside, beside = tmp_path / "in", tmp_path / "beside"
    inside.mkdir()
    beside.mkdir()
    victim = beside / "keep.txt"
    victim.write_text("keep")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        rules = landlock.build([str(inside)], network=network)
        try:
            proc = subprocess.run([sys.executable, "-c", PROBE, str(inside), str(beside), str(victim),
                                   str(server.getsockname()[1])], preexec_fn=rules.restrict,
                                  capture_output=True, text=True, timeout=60)
        finally:
            rules.close()
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "keep"
    return json.loads(proc.stdout)


def test_writes_land_only_in_the_writable_dirs_and_tcp_is_refused(tmp_path):
    seen = confined(tmp_path, network=False)
    assert seen["inside"] == "written" and seen["devnull"] == "written"
    assert seen["beside"] == "EACCES" and seen["remove"] == "EACCES"
    assert (tmp_path / "in" / "a.txt").read_text() == "x" and not (tmp_path / "beside" / "b.txt").exists()
    if landlock.abi() >= 4:
        assert seen["tcp"] == "EACCES"


def test_a_plugin_that_declares_network_may_connect(tmp_path):
    seen = confined(tmp_path, network=True)
    assert seen["tcp"] == "connected" and seen["beside"] == "EACCES"


def test_the_ruleset_says_what_it_confines(tmp_path):
    rules = landlock.build([str(tmp_path)], network=False)
    try:
        text = rules.describe()
    finally:
        rules.close()
    assert text.startswith(f"Landlock ABI {landlock.abi()}: writes only in its output and scratch dirs")
    assert ("no TCP" in text) == (landlock.abi() >= 4)


def test_a_writable_dir_that_does_not_exist_is_an_error_not_a_silent_gap(tmp_path):
    with pytest.raises(FileNotFoundError):
        landlock.build([str(tmp_path / "missing")], network=False)
