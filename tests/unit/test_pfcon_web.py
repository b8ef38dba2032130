"""pfcon routes, its own JWT and error shape (a recording fake service; no sockets)."""

from __future__ import annotations

import pytest

from radcloud.access import auth
from radcloud.core.errors import BadRequest, ConfigError, NotFound, Unauthorized
from radcloud.pfcon import web
from radcloud.core.settings import Secret, Settings
from radcloud.access.users import User
from action_loader import load_action

SECRET = "s" * 40
SETTINGS = Settings(token_secret=Secret(SECRET), pfcon_user="chris", pfcon_password=Secret("pw-1234"))
NOW = 1_800_000_000.0


class FakeService:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            if name == "output_files":
                return {"job_output_path": args[1], "rel_file_paths": ["a.txt"]}
            if name == "remove":
                return None
            return {"jid": "j1", "status": "notStarted"}
        return record


def call(method, path, *, token=None, fields=None, query=None, svc=None, prefix=web.DEFAULT_PREFIX):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    svc = svc or FakeService()
    needs = []

    def factory(need_invoker):
        needs.append(need_invoker)
        return svc

    out = web.handle(method, path, headers, fields or {}, query or {}, SETTINGS, factory, prefix=prefix, now=NOW)
    return out, svc, needs


@pytest.fixture
def token():
    return web.issue_token(SETTINGS, "chris", "pw-1234", now=NOW)


def test_health_needs_no_token_and_auth_token_gives_a_two_day_jwt():
    assert call("get", "/api/v1/health/")[0]["body"] == {"health": "OK"}
    out, _, _ = call("post", "/api/v1/auth-token/", fields={"pfcon_user": ["chris"], "pfcon_password": ["pw-1234"]})
    tok = out["body"]["token"]
    assert web.check_token(SETTINGS, {"authorization": f"Bearer {tok}"}, now=NOW + 2 * 86400 - 60) == "chris"
    with pytest.raises(Unauthorized) as err:
        web.check_token(SETTINGS, {"authorization": f"Bearer {tok}"}, now=NOW + 2 * 86400 + 1)
    assert "Expired" in err.value.message


def test_wrong_credentials_are_pfcons_400_and_unconfigured_is_a_config_error():
    with pytest.raises(BadRequest) as err:
        call("post", "/api/v1/auth-token/", fields={"pfcon_user": ["chris"], "pfcon_password": ["nope"]})
    assert err.value.message == "Unable to log in with provided credentials."
    with pytest.raises(ConfigError):
        web.issue_token(Settings(token_secret=Secret(SECRET)), "", "x")


def test_every_job_route_needs_a_valid_pfcon_token(token):
    for method, path in (("get", "/api/v1/pluginjobs/"), ("post", "/api/v1/copyjobs/"),
                         ("get", "/api/v1/pluginjobs/j1/"), ("delete", "/api/v1/deletejobs/j1/"),
                         ("get", "/api/v1/pluginjobs/j1/file/")):
        with pytest.raises(Unauthorized):
            call(method, path)
        with pytest.raises(Unauthorized):
            call(method, path, token=token[:-3] + "abc")
    # A radcloud user token (issuer "radcloud") is not a pfcon token, and the reverse.
    user_token = auth.issue_token(SETTINGS, User(name="chris", role="admin"), now=NOW)
    with pytest.raises(Unauthorized):
        call("get", "/api/v1/pluginjobs/", token=user_token)
    with pytest.raises(Unauthorized):
        auth.decode_token(token, [SECRET], now=NOW)


def test_routes_reach_the_service(token):
    out, _, needs = call("get", "/api/v1/pluginjobs/", token=token)
    assert out["body"]["storage_env"] == "s3" and needs == []
    form = {"jid": ["j1"], "input_dirs": ["home/a"], "output_dir": ["home/o"]}
    out, svc, needs = call("post", "/api/v1/copyjobs/", token=token, fields=form)
    assert out["statusCode"] == 201 and svc.calls[0][0] == "copy" and needs == [False]
    assert out["body"] == {"compute": {"jid": "j1", "status": "notStarted"}}
    out, svc, _ = call("get", "/api/v1/uploadjobs/j1/", token=token)
    assert svc.calls == [("status", ("upload", "j1"), {})] and "compute" in out["body"]
    out, svc, _ = call("delete", "/api/v1/pluginjobs/j1/", token=token)
    assert out["statusCode"] == 204 and out["body"] == "" and svc.calls[0][1] == ("plugin", "j1")
    out, svc, _ = call("get", "/api/v1/pluginjobs/j1/file/", token=token, query={"job_output_path": ["home/o"]})
    assert out["body"] == {"job_output_path": "home/o", "rel_file_paths": ["a.txt"]}
    with pytest.raises(BadRequest):
        call("get", "/api/v1/pluginjobs/j1/file/", token=token)


def test_plugin_post_builds_the_service_with_an_invoker_and_answers_data_and_compute(token):
    form = {"jid": ["j1"], "entrypoint": ["python3", "app"], "auid": ["cube"], "number_of_workers": ["1"],
            "cpu_limit": ["1000"], "memory_limit": ["200"], "gpu_limit": ["0"], "image": ["local/copy"],
            "type": ["ds"], "input_dirs": ["home/a"], "output_dir": ["home/o"]}
    out, svc, needs = call("post", "/api/v1/pluginjobs/", token=token, fields=form)
    assert out["statusCode"] == 201 and set(out["body"]) == {"data", "compute"} and needs == [True]
    assert svc.calls[0][2] == {"owner": "pfcon:cube"}


def test_unknown_routes_and_prefix(token):
    for path in ("/api/v1/", "/api/v1/jobs/", "/api/v1/pluginjobs/j1/logs/", "/api/v2/health/", ""):
        with pytest.raises(NotFound):
            call("get", path, token=token)
        with pytest.raises(Unauthorized):  # anonymous callers learn no route map
            call("get", path)
    assert call("get", "/pfcon/health/", prefix="/pfcon/")[0]["body"] == {"health": "OK"}


def test_error_answers_carry_pfcons_message():
    shaped = web.pfcon_error({"error": {"statusCode": 409, "headers": {},
                                        "body": {"error": {"code": "conflict", "message": "copy first"}}}})
    assert shaped["error"]["body"]["message"] == "copy first"
    assert shaped["error"]["body"]["error"]["code"] == "conflict"
    assert web.pfcon_error({"ok": 1}) == {"ok": 1}


def _action():
    return load_action("pfcon")


def test_action_reads_the_raw_form_body_and_answers_pfcon_shapes():
    main = _action().main
    params = {"token_secret": SECRET, "pfcon_user": "chris", "pfcon_password": "pw-1234"}
    health = main({**params, "__ow_method": "get", "__ow_path": "/api/v1/health/", "__ow_headers": {},
                   "__ow_body": "", "__ow_query": ""})
    assert health["statusCode"] == 200 and health["body"] == {"health": "OK"}
    got = main({**params, "__ow_method": "post", "__ow_path": "/api/v1/auth-token/",
                "__ow_headers": {"content-type": "application/x-www-form-urlencoded"},
                "__ow_body": "pfcon_user=chris&pfcon_password=pw-1234", "__ow_query": ""})
    assert got["statusCode"] == 200 and got["body"]["token"].count(".") == 2
    denied = main({**params, "__ow_method": "get", "__ow_path": "/api/v1/pluginjobs/",
                   "__ow_headers": {"authorization": "Bearer nope"}, "__ow_body": "", "__ow_query": ""})
    assert denied["error"]["statusCode"] == 401
    assert denied["error"]["body"]["message"] == "Invalid authorization token."
    info = main({**params, "__ow_method": "get", "__ow_path": "/api/v1/pluginjobs/",
                 "__ow_headers": {"authorization": "Bearer " + got["body"]["token"]},
                 "__ow_body": "", "__ow_query": ""})
    assert info["body"]["requires_copy_job"] is True
    zipped = main({**params, "__ow_method": "post", "__ow_path": "/api/v1/pluginjobs/",
                   "__ow_headers": {"content-type": "multipart/form-data; boundary=x",
                                    "authorization": "Bearer " + got["body"]["token"]},
                   "__ow_body": "--x--", "__ow_query": ""})
    assert zipped["error"]["statusCode"] == 400 and "data_file" in zipped["error"]["body"]["message"]


def test_credentials_come_from_bound_args_only_on_raw_requests():
    from radcloud import pfcon

    bound = {"pfcon_user": "chris", "pfcon_password": "pw"}
    raw = pfcon.with_credentials(Settings(), {**bound, "__ow_method": "post", "__ow_body": "", "__ow_query": ""})
    assert raw.pfcon_user == "chris" and raw.pfcon_password.reveal() == "pw"
    # A web: true request merges the caller's fields into args: never trusted.
    merged = pfcon.with_credentials(Settings(), {**bound, "__ow_method": "post"})
    assert merged.pfcon_user == "" and not merged.pfcon_password


def test_images_table_parses_json_and_names_bad_config():
    from radcloud import pfcon

    assert pfcon.images_table('{"fnndsc/pl-x": "copy"}') == {"fnndsc/pl-x": "copy"}
    assert pfcon.images_table("") == {}
    with pytest.raises(ConfigError):
        pfcon.images_table("[1]")


def test_odd_jids_in_the_path_are_404_before_the_service(token):
    with pytest.raises(NotFound):
        call("get", "/api/v1/pluginjobs/..%2f..%2fx/", token=token)
    with pytest.raises(NotFound):
        call("delete", "/api/v1/copyjobs/a b/", token=token)
