"""Web action rules (ref §2) through Controller.handle, with a FakeRuntime."""

from __future__ import annotations

import base64
import json

import pytest
from lw_fakes import AUTH, ECHO, KEY, call, make_controller, put_action

W = "/api/v1/web/guest"
WEB = [{"key": "web-export", "value": True}, {"key": "final", "value": True}, {"key": "raw-http", "value": False}]
RAW = [{"key": "web-export", "value": True}, {"key": "raw-http", "value": True}]


@pytest.fixture
def ctrl():
    c = make_controller()
    yield c
    c.close()


def web(ctrl, method, path, *, body=b"", query="", headers=None):
    return ctrl.handle(method, W + path, query, headers or {}, body)


def returning(ctrl, name, result, annotations=WEB):
    put_action(ctrl, name, f"import json\ndef main(a):\n    return json.loads({json.dumps(json.dumps(result))})\n",
               annotations=annotations)


def test_not_web_exported_is_404(ctrl):
    put_action(ctrl, "plain", ECHO)
    resp = web(ctrl, "GET", "/default/plain.json")
    assert resp.status == 404 and resp.json()["error"] == "The requested resource does not exist."


def test_json_extension_gets_ow_arguments_and_merged_query_and_body(ctrl):
    put_action(ctrl, "echo", ECHO, annotations=WEB, parameters=[{"key": "p", "value": 0}])
    resp = web(ctrl, "POST", "/default/echo.json", query="q=1",
               headers={"Content-Type": "application/json", "X-Custom": "V"}, body=b'{"b": [1]}')
    assert resp.header("content-type") == "application/json"
    args = resp.json()
    assert args["__ow_method"] == "post" and args["__ow_path"] == ""
    assert args["__ow_headers"]["x-custom"] == "V" and args["q"] == "1" and args["b"] == [1] and args["p"] == 0
    assert "__ow_user" not in args and "__ow_body" not in args
    assert resp.status == 200


def test_ow_path_and_projection(ctrl):
    put_action(ctrl, "echo", ECHO, annotations=WEB)
    resp = web(ctrl, "GET", "/default/echo.json/__ow_path")
    assert resp.json() == "/__ow_path"
    assert web(ctrl, "GET", "/default/echo.json/missing").status == 404


def test_form_body_is_merged_and_text_body_goes_to_ow_body(ctrl):
    put_action(ctrl, "echo", ECHO, annotations=WEB)
    form = web(ctrl, "POST", "/default/echo.json", headers={"content-type": "application/x-www-form-urlencoded"},
               body=b"a=1&b=two").json()
    assert form["a"] == "1" and form["b"] == "two"
    text = web(ctrl, "POST", "/default/echo.json", headers={"content-type": "text/plain"}, body=b"hello").json()
    assert text["__ow_body"] == "hello"
    binary = web(ctrl, "POST", "/default/echo.json", headers={"content-type": "image/png"}, body=b"\x89PNG").json()
    assert binary["__ow_body"] == base64.b64encode(b"\x89PNG").decode()


def test_authenticated_caller_gets_ow_user(ctrl):
    put_action(ctrl, "echo", ECHO, annotations=WEB)
    assert web(ctrl, "GET", "/default/echo.json", headers=AUTH).json()["__ow_user"] == "guest"


@pytest.mark.parametrize("query, body", [("__ow_method=x", b""), ("", b'{"__ow_path": "/x"}')])
def test_reserved_names_are_400(ctrl, query, body):
    put_action(ctrl, "echo", ECHO, annotations=WEB)
    resp = web(ctrl, "POST", "/default/echo.json", query=query, body=body,
               headers={"content-type": "application/json"})
    assert resp.status == 400
    assert resp.json()["error"] == "Request defines parameters that are not allowed (e.g., reserved properties)."


def test_final_parameter_override_is_400(ctrl):
    put_action(ctrl, "echo", ECHO, annotations=WEB, parameters=[{"key": "k", "value": "v"}])
    assert web(ctrl, "GET", "/default/echo.json", query="k=mine").status == 400


def test_raw_http_passes_query_and_body_raw(ctrl):
    put_action(ctrl, "raw", ECHO, annotations=RAW)
    args = web(ctrl, "POST", "/default/raw.json", query="a=1&a=2", headers={"content-type": "application/json"},
               body=b'{"x": 1}').json()
    assert args["__ow_query"] == "a=1&a=2" and "a" not in args and "x" not in args
    assert base64.b64decode(args["__ow_body"]) == b'{"x": 1}'
    text = web(ctrl, "POST", "/default/raw.json", headers={"content-type": "text/plain"}, body=b"hi").json()
    assert text["__ow_body"] == "hi"
    assert web(ctrl, "GET", "/default/raw.json").json()["__ow_body"] == ""


def test_packaged_web_action(ctrl):
    call(ctrl, "PUT", "/api/v1/namespaces/_/packages/site", {"parameters": [{"key": "from", "value": "pkg"}]})
    put_action(ctrl, "site/page", ECHO, annotations=WEB)
    assert web(ctrl, "GET", "/site/page.json").json()["from"] == "pkg"


@pytest.mark.parametrize("result, status, ctype, body", [
    ({"body": "<h1>hi</h1>"}, 200, "text/html", b"<h1>hi</h1>"),
    ({"statusCode": "201", "headers": {"content-type": "text/plain", "X-A": ["1", "2"]}, "body": "made"},
     201, "text/plain", b"made"),
    ({"headers": {"content-type": "image/png"}, "body": base64.b64encode(b"\x89PNG\x00").decode()},
     200, "image/png", b"\x89PNG\x00"),
    ({"body": {"k": 1}}, 200, "application/json", b'{"k":1}'),
    ({"x": 1}, 204, None, b""),
    ({"statusCode": 302, "headers": {"location": "/elsewhere"}}, 302, None, b""),
])
def test_http_extension_rules(ctrl, result, status, ctype, body):
    returning(ctrl, "h", result)
    resp = web(ctrl, "GET", "/default/h.http")
    assert resp.status == status and resp.body == body
    if ctype:
        assert resp.header("content-type") == ctype


def test_default_extension_is_http_and_array_headers_repeat(ctrl):
    returning(ctrl, "h", {"headers": {"X-A": ["1", "2"], "X-B": 3, "X-C": True}, "body": "ok"})
    resp = web(ctrl, "GET", "/default/h")
    assert [v for k, v in resp.headers if k == "X-A"] == ["1", "2"]
    assert resp.header("X-B") == "3" and resp.header("X-C") == "true"


@pytest.mark.parametrize("result", [[1, 2], {"statusCode": "abc", "body": "x"}, {"headers": [1]},
                                    {"headers": {"content-type": "image/png"}, "body": "not base64!"}])
def test_http_malformed_result_is_400(ctrl, result):
    returning(ctrl, "h", result)
    assert web(ctrl, "GET", "/default/h.http").status == 400


@pytest.mark.parametrize("ext, result, ctype, body", [
    (".html", {"html": "<p>x</p>"}, "text/html", b"<p>x</p>"),
    (".html", {"body": "<p>b</p>"}, "text/html", b"<p>b</p>"),
    (".svg", {"svg": "<svg/>"}, "image/svg+xml", b"<svg/>"),
    (".text", {"text": "plain"}, "text/plain", b"plain"),
    (".json", [1, 2], "application/json", b"[1,2]"),
])
def test_other_extensions(ctrl, ext, result, ctype, body):
    returning(ctrl, "e", result)
    resp = web(ctrl, "GET", f"/default/e{ext}")
    assert resp.status == 200 and resp.header("content-type").startswith(ctype) and resp.body == body


def test_text_without_property_is_404_and_non_string_html_400(ctrl):
    returning(ctrl, "e", {"other": 1})
    assert web(ctrl, "GET", "/default/e.text").status == 404
    returning(ctrl, "n", {"html": 5})
    assert web(ctrl, "GET", "/default/n.html").status == 400


def test_application_error_renders_error_field(ctrl):
    returning(ctrl, "bad", {"error": {"statusCode": 418, "body": "teapot"}})
    resp = web(ctrl, "GET", "/default/bad.http")
    assert resp.status == 418 and resp.body == b"teapot"
    returning(ctrl, "badj", {"error": {"why": "x"}})
    assert web(ctrl, "GET", "/default/badj.json").json() == {"why": "x"}


def test_developer_error_is_400_with_ow_message(ctrl):
    put_action(ctrl, "dev", "def main(a):\n    return 7\n", annotations=WEB)
    resp = web(ctrl, "GET", "/default/dev.json")
    assert resp.status == 400 and resp.json()["error"] == "There was an error processing your request."


@pytest.mark.parametrize("value, headers, status", [
    (True, {}, 401),
    (True, AUTH, 200),
    ("s3cret", {"X-Require-Whisk-Auth": "s3cret"}, 200),
    ("s3cret", {"X-Require-Whisk-Auth": "wrong"}, 401),
    (1234, {"X-Require-Whisk-Auth": "1234"}, 200),
    (False, {}, 200),
    ({"odd": 1}, {"X-Require-Whisk-Auth": "x"}, 401),
])
def test_require_whisk_auth(ctrl, value, headers, status):
    put_action(ctrl, "sec", ECHO, annotations=WEB + [{"key": "require-whisk-auth", "value": value}])
    assert web(ctrl, "GET", "/default/sec.json", headers=headers).status == status


def test_cors_defaults_and_options_does_not_invoke(ctrl):
    put_action(ctrl, "echo", ECHO, annotations=WEB)
    before = len(ctrl.runtime.calls)
    opt = web(ctrl, "OPTIONS", "/default/echo.json", headers={"Access-Control-Request-Headers": "X-Mine"})
    assert opt.status == 200 and opt.body == b"" and len(ctrl.runtime.calls) == before
    assert opt.header("Access-Control-Allow-Origin") == "*"
    assert opt.header("Access-Control-Allow-Methods") == "OPTIONS, GET, DELETE, POST, PUT, HEAD, PATCH"
    assert opt.header("Access-Control-Allow-Headers") == "X-Mine"
    got = web(ctrl, "GET", "/default/echo.json")
    assert got.header("Access-Control-Allow-Headers").startswith("Authorization, Origin")


def test_web_custom_options_invokes_and_drops_cors(ctrl):
    returning(ctrl, "opt", {"headers": {"Allow": "GET"}, "statusCode": 200},
              annotations=WEB + [{"key": "web-custom-options", "value": True}])
    resp = web(ctrl, "OPTIONS", "/default/opt")
    assert resp.status == 200 and resp.header("Allow") == "GET" and resp.header("Access-Control-Allow-Origin") is None


def test_wait_running_out_gives_202():
    c = make_controller(web_wait_ms=30)
    c.runtime.gate.clear()
    put_action(c, "slow", "def main(a):\n    GATE.wait(5)\n    return {}\n", annotations=WEB)
    resp = c.handle("GET", W + "/default/slow.json", "", {}, b"")
    c.runtime.gate.set()
    assert resp.status == 202 and "activationId" in resp.json()
    c.close()


def test_web_activation_is_recorded(ctrl):
    put_action(ctrl, "echo", ECHO, annotations=WEB)
    resp = web(ctrl, "GET", "/default/echo.json")
    aid = resp.header("x-openwhisk-activation-id")
    assert call(ctrl, "GET", f"/api/v1/namespaces/_/activations/{aid}").status == 200
    assert KEY  # credentials were never needed for the web call itself
