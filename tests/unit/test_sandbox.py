"""radcloud.sandbox: the outcome classification (the OOM heuristic) and the bwrap command."""

from __future__ import annotations

import signal

import pytest

from radcloud.sandbox import Limits, _bwrap_argv, _classify

LIMITED = Limits(timeout_s=10, memory_bytes=256 * 1024**2)
UNLIMITED = Limits(timeout_s=10)


@pytest.mark.parametrize("code, killed_for, tail, limits, bwrap, reason", [
    (0, "", "", LIMITED, False, "ok"),
    (1, "", "Traceback...\nMemoryError", LIMITED, False, "oom"),
    (1, "", "numpy._core._exceptions._ArrayMemoryError: Unable to allocate 8.0 GiB", LIMITED, False, "oom"),
    (1, "", "dcm2niix: Cannot allocate memory", LIMITED, True, "oom"),
    (-signal.SIGSEGV, "", "", LIMITED, False, "oom"),          # malloc not checked, then a crash
    (128 + signal.SIGKILL, "", "", LIMITED, True, "oom"),      # bwrap reports 128+N
    (-signal.SIGSEGV, "", "", UNLIMITED, False, "crash"),      # no limit: a plain crash
    (1, "", "MemoryError", UNLIMITED, False, "crash"),
    (2, "", "usage: ...", LIMITED, False, "crash"),
    (-signal.SIGXCPU, "", "", LIMITED, False, "timeout"),
    (1, "", "OSError: [Errno 27] File too large", LIMITED, False, "error"),
    (-9, "timeout", "", LIMITED, False, "timeout"),
    (-9, "cancelled", "", LIMITED, False, "cancelled"),
    (-9, "output", "", LIMITED, False, "error"),
])
def test_classify(code, killed_for, tail, limits, bwrap, reason):
    assert _classify(code, killed_for, tail, limits, bwrap)[0] == reason


def test_bwrap_command_binds_inputs_read_only_and_drops_the_network():
    cmd = _bwrap_argv(["prog", "in", "out"], read_only=["/w/in"], writable=["/w/out", "/w/tmp"], cwd="/w/tmp",
                      network=False)
    text = " ".join(cmd)
    assert "--unshare-all" in cmd and "--share-net" not in cmd
    assert "--ro-bind /w/in /w/in" in text and "--bind /w/out /w/out" in text
    assert "--remount-ro /tmp" in text and "--uid 65534" in text
    assert cmd[-4:] == ["--", "prog", "in", "out"]
    assert "--share-net" in _bwrap_argv(["p"], read_only=[], writable=[], cwd="/", network=True)


def test_plugin_code_under_tmp_is_bound_back_over_the_private_tmp(tmp_path):
    from radcloud.sandbox import _bwrap_argv

    plugin = tmp_path / "plugins" / "p"
    plugin.mkdir(parents=True)
    script = plugin / "run.py"
    script.write_text("print(1)\n")
    cmd = _bwrap_argv(["/usr/bin/python3", str(script)], read_only=[], writable=[str(tmp_path / "out")],
                      cwd=str(tmp_path / "out"), network=False)
    binds = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--ro-bind"]
    assert str(plugin) in binds
    assert cmd.index(str(plugin)) > cmd.index("--tmpfs")
