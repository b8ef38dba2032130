"""The ``radcloud`` command starts light: help and ``stack status`` load none of the heavy libraries.

Every e2e test and every user pays the CLI's import time on each call; the
heavy libraries (S3 and DICOM clients, numpy, the HTTP stack, templating,
yaml) load inside the commands that use them. Checked by what a fresh
interpreter has in ``sys.modules``, not by the clock (a child process: the
unit tier refuses those, and this session has long imported everything).
"""

from __future__ import annotations

import json
import subprocess
import sys

from typer.main import get_command
from typer.testing import CliRunner

from radcloud.ops.cli.main import app

HEAVY = {"minio", "pydicom", "numpy", "highdicom", "PIL", "boto3", "redis", "requests", "urllib3", "jinja2",
         "yaml"}

PROBE = """
import json, sys
{before}
from radcloud.ops.cli.main import app
try:
    app(args={args!r}, prog_name="radcloud")
except SystemExit:
    pass
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & {heavy!r})), file=sys.__stderr__)
"""


def heavy_after(args: list[str], before: str = "") -> list[str]:
    """The heavy top-level packages a fresh interpreter holds after ``radcloud <args>``."""
    code = PROBE.format(before=before, args=args, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return json.loads(done.stderr.strip().splitlines()[-1])


def test_help_loads_no_heavy_library():
    assert heavy_after(["--help"]) == []


def test_stack_status_of_a_stopped_stack_loads_no_heavy_library(tmp_path):
    assert heavy_after(["stack", "status", "--json", "--state-dir", str(tmp_path / "s")]) == []


def test_the_probe_sees_a_heavy_import():
    # The control: the same probe reports what a command's own late import brings in.
    before = "from radcloud.ops.cli.client import Client; Client('http://127.0.0.1:9/')"
    assert "requests" in heavy_after(["--help"], before)


def test_help_still_lists_every_command():
    result = CliRunner().invoke(app, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    names = set(get_command(app).commands)
    assert {"stack", "users", "plugins", "deploy", "query", "pull", "run", "status", "results"} <= names
    missing = [name for name in names if f" {name} " not in result.output]
    assert missing == []
