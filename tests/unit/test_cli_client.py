"""radcloud.ops.cli.client and common: API resolution, token cache, answers and errors, exit codes."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
import requests
from requests.adapters import BaseAdapter

from radcloud.ops.cli import common
from radcloud.ops.cli.client import ApiError, Client, load_token, resolve_api, save_token, token_file

BASE = "http://whisk.test/api/v1/web/guest/radcloud/"


def test_api_url_precedence(tmp_path):
    (tmp_path / "whisk").mkdir()
    (tmp_path / "whisk" / ".wskprops").write_text("APIHOST=http://127.0.0.1:13233\nAUTH=u:k\n")
    assert resolve_api("https://a.example/x", {"RADCLOUD_API_URL": "https://b"}, tmp_path) == "https://a.example/x/"
    assert resolve_api(None, {"RADCLOUD_API_URL": "https://b/"}, tmp_path) == "https://b/"
    assert resolve_api(None, {}, tmp_path) == "http://127.0.0.1:13233/api/v1/web/guest/radcloud/"
    with pytest.raises(ApiError, match="--with-whisk"):
        resolve_api(None, {}, tmp_path / "nowhere")


def test_token_cache_is_private_bound_to_its_api_and_expires(tmp_path):
    path = token_file({}, tmp_path)
    assert path == tmp_path / "token.json"
    assert token_file({"RADCLOUD_TOKEN_FILE": "/x/t.json"}, tmp_path) == Path("/x/t.json")
    save_token(path, BASE, "tok", 60, {"name": "ann"})
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_token(path, BASE) == "tok"
    assert load_token(path, "https://other/") is None
    assert load_token(path, BASE, now=time.time() + 120) is None


def test_config_dir_used_when_there_is_no_state_dir(tmp_path):
    assert token_file({"XDG_CONFIG_HOME": str(tmp_path)}, tmp_path / "absent") == tmp_path / "radcloud" / "token.json"


class Fake(BaseAdapter):
    """A requests transport answering from ``handler(PreparedRequest) -> Response`` (no sockets)."""

    def __init__(self, handler) -> None:
        super().__init__()
        self.handler = handler

    def send(self, request, **kwargs):
        resp = self.handler(request)
        resp.request, resp.url = request, request.url
        return resp

    def close(self) -> None:
        pass


def reply(status: int, *, json_body=None, text: str = "", content: bytes | None = None, headers=None):
    resp = requests.Response()
    resp.status_code = status
    resp.headers.update(headers or {})
    if json_body is not None:
        content = json.dumps(json_body).encode()
        resp.headers["Content-Type"] = "application/json"
    resp.raw = io.BytesIO(content if content is not None else text.encode())  # read lazily, as from a socket
    return resp


def params_of(request) -> dict:
    from urllib.parse import parse_qsl, urlsplit

    return dict(parse_qsl(urlsplit(request.url).query))


def _client(handler, **kw) -> Client:
    return Client(BASE, "tok", adapter=Fake(handler), **kw)


def test_call_sends_bearer_json_and_query_and_returns_the_body():
    seen = {}

    def handler(request):
        seen.update(url=request.url, auth=request.headers["authorization"],
                    body=json.loads(request.body or b"null"))
        return reply(200, json_body={"ok": 1})

    assert _client(handler).call("status", path="j1", params={"wait": 5, "urls": True, "x": None}) == {"ok": 1}
    assert seen["url"] == BASE + "status/j1?wait=5&urls=true" and seen["auth"] == "Bearer tok"
    _client(handler).call("dispatch", method="POST", body={"plugin": "p"})
    assert seen["body"] == {"plugin": "p"}


def test_api_key_is_sent_instead_of_a_token():
    def handler(request):
        assert request.headers["x-api-key"] == "rck_1" and "authorization" not in request.headers
        return reply(200, json_body={})

    Client(BASE, "tok", api_key="rck_1", adapter=Fake(handler)).call("query")


def test_error_answers_become_api_errors_with_code_and_field():
    def handler(request):
        return reply(400, json_body={"error": {"code": "bad_request", "message": "limit too big", "field": "limit"}})

    with pytest.raises(ApiError) as caught:
        _client(handler).call("query")
    assert (caught.value.status, caught.value.code, caught.value.field) == (400, "bad_request", "limit")
    assert common.exit_code(caught.value) == common.USAGE


def test_redirect_to_the_login_page_means_not_logged_in():
    def handler(request):
        return reply(302, headers={"Location": "/api/v1/web/guest/radcloud/ui/login?next=x"})

    with pytest.raises(ApiError) as caught:
        _client(handler).call("ui", path="plugins.json")
    assert caught.value.status == 401 and common.exit_code(caught.value) == common.AUTH


def test_unreachable_api_is_status_0_and_a_failure():
    def handler(request):
        raise requests.ConnectionError("refused")

    with pytest.raises(ApiError, match="cannot reach") as caught:
        _client(handler).call("query")
    assert caught.value.status == 0 and common.exit_code(caught.value) == common.FAILURE


def test_non_json_error_bodies_are_quoted():
    with pytest.raises(ApiError, match="HTTP 502: bad gateway"):
        _client(lambda r: reply(502, text="bad gateway")).call("query")


def test_params_are_json_when_they_parse():
    assert common.parse_params(["a=1", "b=true", "c=text", "d=1.5", "e="]) == \
        {"a": 1, "b": True, "c": "text", "d": 1.5, "e": ""}


def test_a_param_without_equals_is_a_usage_error():
    import typer

    with pytest.raises(typer.Exit) as caught:
        common.parse_params(["nope"])
    assert caught.value.exit_code == common.USAGE


def test_watch_long_polls_with_the_last_version_until_final():
    from radcloud.ops.cli import jobs

    states = iter([("running", 1, 0), ("running", 2, 1), ("succeeded", 3, 2)])
    seen = []

    def handler(request):
        seen.append(params_of(request))
        state, version, done = next(states)
        return reply(200, json_body={"id": "j1", "state": state, "version": version,
                                     "progress": {"shards_done": done, "shards_total": 2}})

    job = jobs.watch_job(_client(handler), "j1", timeout_s=60, show=False)
    assert job["state"] == "succeeded"
    assert seen[0] == {} and seen[1]["since"] == "1" and seen[2]["since"] == "2" and int(seen[1]["wait"]) > 0


def test_watch_waits_what_the_server_asks_between_calls():
    from radcloud.ops.cli import jobs

    answers = iter([("running", 1000), ("running", 2500), ("succeeded", 2500)])
    slept = []

    def handler(request):
        state, after = next(answers)
        return reply(200, json_body={"id": "j1", "state": state, "version": 1, "poll_after_ms": after,
                                     "progress": {}})

    jobs.watch_job(_client(handler), "j1", timeout_s=60, show=False, sleep=slept.append)
    assert len(slept) == 2 and 0.8 <= slept[0] <= 1.2 and 2.0 <= slept[1] <= 3.0


def test_watch_says_once_where_a_shard_waits_and_that_slurm_requeued_it(capsys):
    from radcloud.ops.cli import jobs

    shard = {"id": "s000", "executor": "slurm", "activation_id": "42"}
    answers = iter([
        {**shard, "state": "invoked", "queue_reason": "queued: waiting for resources"},
        {**shard, "state": "invoked", "queue_reason": "queued: waiting for resources"},
        {**shard, "state": "running", "attempt": 2, "attempt_plain": "requeued by Slurm, attempt 2"},
        {**shard, "state": "succeeded", "attempt": 2, "attempt_plain": "requeued by Slurm, attempt 2"}])

    def handler(request):
        s = next(answers)
        return reply(200, json_body={"id": "j1", "state": "succeeded" if s["state"] == "succeeded" else "running",
                                     "version": 1, "progress": {}, "shards": [s]})

    job = jobs.watch_job(_client(handler), "j1", timeout_s=60, show=True, sleep=lambda s: None)
    said = capsys.readouterr().err.splitlines()
    assert [line for line in said if line.startswith("s000")] == [
        "s000: slurm job 42, queued: waiting for resources", "s000: slurm job 42, requeued by Slurm, attempt 2"]
    jobs._finish_watch(job, as_json=False)
    assert capsys.readouterr().out.splitlines()[1:] == ["s000: slurm job 42, requeued by Slurm, attempt 2"]


@pytest.mark.parametrize("state, code", [("succeeded", None), ("partial", common.NOT_SUCCEEDED),
                                         ("failed", common.NOT_SUCCEEDED), ("running", common.TIMEOUT)])
def test_watch_exit_codes(state, code):
    import typer

    from radcloud.ops.cli import jobs

    job = {"id": "j1", "state": state, "progress": {}}
    if code is None:
        jobs._finish_watch(job, as_json=True)
        return
    with pytest.raises(typer.Exit) as caught:
        jobs._finish_watch(job, as_json=True)
    assert caught.value.exit_code == code


def test_download_verifies_md5_and_refuses_names_outside_the_dir(tmp_path):
    import hashlib

    from radcloud.ops.cli import jobs

    body = b"\x89PNG data"

    def handler(request):
        assert "authorization" not in request.headers  # the presigned URL is the credential
        return reply(200, content=body)

    client = _client(handler)
    good = {"name": "s000/a.png", "url": "http://s3/a", "size": len(body), "md5": hashlib.md5(body).hexdigest()}
    assert jobs.download_all(client, [good], tmp_path / "out", show=False)["files"] == 1
    assert (tmp_path / "out" / "s000" / "a.png").read_bytes() == body
    with pytest.raises(ApiError, match="differs"):
        jobs.download_all(client, [{**good, "md5": "0" * 32}], tmp_path / "out2", show=False)
    with pytest.raises(ApiError, match="outside"):
        jobs.download_all(client, [{**good, "name": "../escape.png"}], tmp_path / "out3", show=False)


def test_openwhisk_still_busy_after_the_retry_budget_says_so_and_what_to_do():
    # Retries happen below the adapter (radcloud.core.retry); what reaches the client is the last answer.
    busy = {"error": "Too many concurrent requests in flight (count: 3, allowed: 3).", "code": "tx1"}
    with pytest.raises(ApiError, match="stayed busy .*count: 3, allowed: 3.*concurrency limit") as caught:
        _client(lambda r: reply(429, json_body=busy), busy_budget_s=5).call("status", path="j1")
    assert caught.value.status == 429 and caught.value.code == "busy" and "5 s" in caught.value.message


def test_an_action_s_own_429_keeps_its_words():
    lockout = {"error": {"code": "too_many_requests", "message": "too many failed logins; wait 60 s"}}
    with pytest.raises(ApiError, match="too many failed logins") as caught:
        _client(lambda r: reply(429, json_body=lockout)).call("login", method="POST", body={})
    assert caught.value.code == "too_many_requests"
