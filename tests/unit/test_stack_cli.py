"""radcloud stack CLI: usage errors are one line and a non-zero exit, and start nothing."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from radcloud.ops.cli.main import app
from radcloud.ops.cli.stack import default_state_dir

runner = CliRunner()


def test_state_dir_from_env_else_cwd():
    assert default_state_dir({"RADCLOUD_STATE_DIR": "/x/y"}, Path("/w")) == Path("/x/y")
    assert default_state_dir({}, Path("/w")) == Path("/w/.radcloud")


def test_bad_port_offset_is_one_line_and_exit_1(tmp_path):
    result = runner.invoke(app, ["stack", "up", "--state-dir", str(tmp_path / "s"), "--port-offset", "60000"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: port offset 60000 gives invalid ports: ")
    assert not (tmp_path / "s").exists()


def test_status_of_a_fresh_state_dir_is_all_down_and_creates_nothing(tmp_path):
    result = runner.invoke(app, ["stack", "status", "--json", "--state-dir", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert '"running": true' not in result.output
    assert not (tmp_path / "s").exists()


def test_logs_of_an_unknown_service_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["stack", "logs", "nginx", "--state-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown service 'nginx'; known: orthanc, pacs, redis, s3" in result.output


def test_logs_prints_the_tail(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "redis.log").write_text("one\ntwo\nthree\n")
    result = runner.invoke(app, ["stack", "logs", "redis", "-n", "2", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert result.output.rstrip().endswith("two\nthree")
    assert "one" not in result.output


def test_seed_without_a_running_stack_says_what_to_do(tmp_path):
    result = runner.invoke(app, ["stack", "seed", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "orthanc is not running" in result.output
    assert "run `radcloud stack up` first" in result.output


def test_down_with_nothing_recorded_is_a_noop(tmp_path):
    result = runner.invoke(app, ["stack", "down", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert "nothing was running" in result.output
