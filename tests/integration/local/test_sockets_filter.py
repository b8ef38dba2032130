"""The sandbox's no-network seccomp filter (radcloud.run.sockets) on a real child,
and sandbox.run leaving it out for a plugin that declares network."""

from __future__ import annotations

import json
import subprocess
import sys

from radcloud.run import sandbox, sockets

PROBE = r"""
import ctypes, errno, json, socket
out = {}
for name, family, kind in (("udp", socket.AF_INET, socket.SOCK_DGRAM), ("tcp6", socket.AF_INET6, socket.SOCK_STREAM),
                           ("unix", socket.AF_UNIX, socket.SOCK_STREAM)):
    try:
        socket.socket(family, kind).close()
        out[name] = "opened"
    except OSError as exc:
        out[name] = errno.errorcode[exc.errno]
libc = ctypes.CDLL(None, use_errno=True)
params = (ctypes.c_char * 120)()
fd = libc.syscall(425, 1, params)  # io_uring_setup: io_uring can open sockets by itself
out["io_uring"] = "opened" if fd >= 0 else errno.errorcode[ctypes.get_errno()]
print(json.dumps(out))
"""


def test_the_filter_refuses_internet_sockets_and_io_uring_but_not_unix_sockets():
    rules, why_not = sockets.filter_or_reason()
    assert rules is not None, why_not  # libseccomp is part of the reference machine (Debian's libseccomp2)
    proc = subprocess.run([sys.executable, "-c", PROBE], preexec_fn=rules.load, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"udp": "EACCES", "tcp6": "EACCES", "unix": "opened", "io_uring": "EPERM"}


def test_a_plugin_that_declares_network_gets_no_filter(tmp_path):
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    out.mkdir()
    scratch.mkdir()
    for network, expected in ((True, "opened"), (False, "EACCES")):
        result = sandbox.run([sys.executable, "-c", PROBE], cwd=str(scratch), env={},
                             limits=sandbox.Limits(timeout_s=60, network=network), read_only=[],
                             writable=[str(out), str(scratch)], use_bwrap=False)
        assert result.reason == "ok", result
        seen = json.loads(result.tail.splitlines()[-1])
        assert seen["udp"] == expected, (network, seen, result.sandbox)
        assert ("no internet sockets (seccomp)" in result.sandbox) is (not network), result.sandbox
