"""An unexpected error in a CLI command never prints the command's local variables.

typer's rich tracebacks show locals by default, and a command's locals hold
passwords, tokens and S3 keys. Run in a fresh interpreter (typer installs its
traceback printer as the process's excepthook), with a command that fails
while holding a secret.
"""

from __future__ import annotations

import subprocess
import sys

SECRET = "hunter2-not-for-the-terminal"

PROBE = f"""
from radcloud.ops.cli.main import app

@app.command("explode")
def explode() -> None:
    password = {SECRET!r}
    raise RuntimeError("boom " + str(len(password)))

app(args=["explode"], prog_name="radcloud")
"""


def test_an_unexpected_error_shows_its_traceback_but_not_the_locals_holding_a_secret():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "TERM": "dumb"})
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "RuntimeError" in out and "boom 28" in out, out  # the error itself is shown
    assert SECRET not in out, out
