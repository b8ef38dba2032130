"""`radcloud users ...` against the shared unit-test Redis."""

import json

from typer.testing import CliRunner

from radcloud.ops.cli.main import app
from radcloud.access.users import UserStore

runner = CliRunner()


def cli(redis_server, *args, stdin=None):
    return runner.invoke(app, ["users", *args], input=stdin, env={"RADCLOUD_REDIS_URL": redis_server})


def test_add_list_disable(redis_client, redis_server):
    result = cli(redis_server, "add", "alice", "--role", "clinician", "--password-stdin",
                 stdin="correct horse battery\n")
    assert result.exit_code == 0, result.output
    assert UserStore(redis_client).verify_password("alice", "correct horse battery") is not None
    listed = json.loads(cli(redis_server, "list", "--json").output)
    assert [(u["name"], u["role"], u["disabled"]) for u in listed] == [("alice", "clinician", False)]
    assert cli(redis_server, "disable", "alice").exit_code == 0
    assert UserStore(redis_client).get("alice").disabled


def test_service_account_prints_a_working_key_once(redis_client, redis_server):
    result = cli(redis_server, "add", "chris", "--role", "service")
    assert result.exit_code == 0, result.output
    key = [line for line in result.output.splitlines() if line.startswith("rck_")][0]
    assert UserStore(redis_client).verify_api_key(key).name == "chris"
    assert key not in cli(redis_server, "list").output


def test_errors_are_one_line_and_exit_1(redis_client, redis_server):
    assert cli(redis_server, "disable", "ghost").exit_code == 1
    bad = cli(redis_server, "add", "bob", "--role", "root", "--password-stdin", stdin="correct horse battery\n")
    assert bad.exit_code == 1 and "role" in bad.output
    down = runner.invoke(app, ["users", "list"], env={"RADCLOUD_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert down.exit_code == 1 and "cannot reach Redis" in down.output
