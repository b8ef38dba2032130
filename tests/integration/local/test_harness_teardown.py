"""The test harness stops a tier's worlds once the tier's last test is done, not at pytest's exit.

The root conftest finishes a session fixture of a tier's conftest (a stack, a
localwhisk world, the browser) after the last collected test that uses it, so
a finished tier's services do not idle through every later tier. Checked with
a pytest of its own in a subprocess, the root conftest loaded as a plugin: a
tier whose world logs when it starts and stops, a later tier, and the order
in which things happened.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[2]

TIER_CONFTEST = '''
import pytest
from pathlib import Path

LOG = Path(__file__).resolve().parents[1] / "events.log"

def note(what):
    with LOG.open("a") as log:
        log.write(what + "\\n")

@pytest.fixture(scope="session")
def world():
    note("world up")
    yield "world"
    note("world down")

@pytest.fixture(scope="session")
def page(world):  # depends on the world: finished before it
    note("page up")
    yield "page"
    note("page down")
'''

TIER_A = '''
from conftest_probe import note

def test_a1(world):
    note("a1")

def test_a2():
    note("a2")

def test_a3(page):
    note("a3")
'''

TIER_B = '''
from conftest_probe import note

def test_b1():
    note("b1")
'''


def run_probe(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    (tmp_path / "tier_a").mkdir()
    (tmp_path / "tier_b").mkdir()
    (tmp_path / "tier_a" / "conftest.py").write_text(TIER_CONFTEST)
    (tmp_path / "tier_a" / "test_a.py").write_text(TIER_A)
    (tmp_path / "tier_b" / "test_b.py").write_text(TIER_B)
    (tmp_path / "conftest_probe.py").write_text(
        "from pathlib import Path\n\ndef note(what):\n"
        f"    with open({str(tmp_path / 'events.log')!r}, 'a') as log:\n        log.write(what + '\\n')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(tmp_path)])}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q", "--import-mode=importlib",
         "-p", "no:schemathesis", "-p", "no:hypothesispytest", "-p", "no:anyio",
         "--rootdir", str(tmp_path), "-c", os.devnull, *args, str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    log = tmp_path / "events.log"
    return proc, (log.read_text().split("\n")[:-1] if log.exists() else [])


def test_a_tiers_world_stops_after_its_last_test_before_the_next_tier(tmp_path):
    proc, events = run_probe(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert events == ["world up", "a1", "a2", "page up", "a3", "page down", "world down", "b1"], events


def test_with_one_test_selected_the_world_stops_after_that_test(tmp_path):
    # -k also matches the names of the folders above a test: "a1" alone selected every test when the
    # lanes' random folder was /tmp/radcloud-tests-oha1e9 (CI run 51). The functions' whole names cannot
    # occur in a folder name mktemp or pytest makes (letters and digits; test_<name of this test>N).
    proc, events = run_probe(tmp_path, "-k", "test_a1 or test_b1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert events == ["world up", "a1", "world down", "b1"], events


@pytest.mark.parametrize("args", [("-n", "2", "--dist", "loadgroup")], ids=["xdist"])
def test_under_xdist_worlds_stop_at_the_end_as_before(tmp_path, args):
    """A worker cannot know its last test in advance: its worlds stop when it ends."""
    proc, events = run_probe(tmp_path, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert events.index("a3") < events.index("page down") < events.index("world down"), events
    assert sorted(events) == sorted(["world up", "a1", "a2", "page up", "a3", "page down", "world down", "b1"])
