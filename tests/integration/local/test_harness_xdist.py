"""The test harness itself under pytest-xdist (``scripts/run-tests.sh all -n 2``).

The root conftest fails a run whose session worlds (stacks, localwhisk
worlds, the browser) did not stop. Under xdist that check runs on each
worker, and a worker's exit status does not become the run's: the
controller must learn of it. Checked with a pytest of its own in a
subprocess, the root conftest loaded as a plugin, a fake world stop that
fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[2]

PROBE = '''
import sys, types

def test_a_world_whose_stop_fails():
    background = types.ModuleType("background")
    background.join = lambda: ["the world in /tmp/probe did not stop: {what}"]
    sys.modules["background"] = background

def test_another():
    assert True
'''


def run_probe(tmp_path: Path, what: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_probe.py").write_text(PROBE.format(what=what))
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q",
         "-p", "no:schemathesis", "-p", "no:hypothesispytest", "-p", "no:anyio",
         "--rootdir", str(tmp_path), "-c", os.devnull, *args, str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [(), ("-n", "2", "--dist", "loadgroup")], ids=["serial", "xdist"])
def test_a_world_that_does_not_stop_fails_the_run(tmp_path, args):
    proc = run_probe(tmp_path, "probe-stop", *args)
    out = proc.stdout + proc.stderr
    assert "2 passed" in out, out
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED, out
    assert "did not stop: probe-stop" in out, out
