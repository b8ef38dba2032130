"""radcloud.run.sandbox: the outcome classification (when a run is OOM) and the bwrap command."""

from __future__ import annotations

import os
import signal
import tempfile

import pytest

from radcloud.run.sandbox import Limits, _bwrap_argv, _classify, _MemoryFacts, others_can_run

LIMITED = Limits(timeout_s=10, memory_bytes=256 * 1024**2)


OOM = _MemoryFacts(True, 512 * 1024**2, 530 * 1024**2)        # the container counted an OOM kill
NO_OOM = _MemoryFacts(False, 512 * 1024**2, 90 * 1024**2)     # it counted none
UNKNOWN = _MemoryFacts(None, None, None)                     # no readable cgroup


@pytest.mark.parametrize("code, killed_for, tail, bwrap, memory, reason", [
    (0, "", "", False, NO_OOM, "ok"),
    (1, "", "Traceback...\nMemoryError", False, UNKNOWN, "oom"),   # an allocation the plugin saw fail
    (1, "", "numpy._core._exceptions._ArrayMemoryError: Unable to allocate 8.0 GiB", False, NO_OOM, "oom"),
    (1, "", "dcm2niix: Cannot allocate memory", True, NO_OOM, "oom"),
    (-signal.SIGKILL, "", "", False, OOM, "oom"),
    (128 + signal.SIGKILL, "", "", True, OOM, "oom"),              # bwrap reports 128+N
    (-signal.SIGKILL, "", "", False, NO_OOM, "crash"),             # a SIGKILL is not automatically OOM
    (128 + signal.SIGKILL, "", "", True, UNKNOWN, "crash"),        # ...nor when we cannot tell
    (-signal.SIGSEGV, "", "", False, NO_OOM, "crash"),
    (-signal.SIGSEGV, "", "MemoryError", False, OOM, "crash"),     # a segfault is a crash
    (2, "", "usage: ...", False, NO_OOM, "crash"),
    (-signal.SIGXCPU, "", "", False, NO_OOM, "timeout"),
    (1, "", "OSError: [Errno 27] File too large", False, NO_OOM, "error"),
    (-9, "timeout", "", False, OOM, "timeout"),
    (-9, "cancelled", "", False, NO_OOM, "cancelled"),
    (-9, "output", "", False, NO_OOM, "error"),
])
def test_classify(code, killed_for, tail, bwrap, memory, reason):
    assert _classify(code, killed_for, tail, LIMITED, bwrap, memory)[0] == reason


def test_oom_and_other_sigkills_explain_themselves():
    _, oom = _classify(-signal.SIGKILL, "", "", LIMITED, False, OOM)
    assert "OOM killer" in oom and "530 MiB of its 512 MiB limit" in oom and "max_memory_limit" in oom
    _, other = _classify(-signal.SIGKILL, "", "", LIMITED, False, NO_OOM)
    assert "SIGKILL" in other and "no OOM kill was counted" in other and "90 MiB" in other
    _, unknown = _classify(-signal.SIGKILL, "", "", LIMITED, False, UNKNOWN)
    assert "cannot be told" in unknown


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
    from radcloud.run.sandbox import _bwrap_argv

    plugin = tmp_path / "plugins" / "p"
    plugin.mkdir(parents=True)
    script = plugin / "run.py"
    script.write_text("print(1)\n")
    cmd = _bwrap_argv(["/usr/bin/python3", str(script)], read_only=[], writable=[str(tmp_path / "out")],
                      cwd=str(tmp_path / "out"), network=False)
    binds = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--ro-bind"]
    assert str(plugin) in binds
    assert cmd.index(str(plugin)) > cmd.index("--tmpfs")  # the plugin's own sandbox: a private tmpfs


def test_a_program_reached_through_a_private_folder_cannot_be_run_by_others():
    # A venv's python is a link to /usr/bin/python3.11 (world-executable); inside a checkout under
    # a private folder (mktemp -d: 0700), uid 65534 cannot exec the link, so the no-bwrap fallback
    # must not drop to it ("cannot start plugin …: Permission denied" on Debian's interpreter).
    target = os.path.realpath("/bin/sh")
    private = tempfile.mkdtemp()   # 0700
    try:
        bin_dir = os.path.join(private, "venv", "bin")
        os.makedirs(bin_dir)
        link = os.path.join(bin_dir, "python")
        os.symlink(target, link)
        assert others_can_run(target)
        assert not others_can_run(link)
        os.chmod(private, 0o755)   # every folder on the way searchable: it can
        assert others_can_run(link)
    finally:
        os.chmod(private, 0o700)
        os.remove(os.path.join(private, "venv", "bin", "python"))
        os.removedirs(os.path.join(private, "venv", "bin"))
