"""Web actions over real HTTP with the real runtime: each extension, raw-http, require-whisk-auth, CORS."""

from __future__ import annotations

import base64
import json

import pytest

pytestmark = pytest.mark.integration

WEB = [{"key": "web-export", "value": True}, {"key": "final", "value": True}, {"key": "raw-http", "value": False}]
PAGE = """import base64
def main(a):
    kind = a.get('kind', 'html')
    if kind == 'png':
        return {'headers': {'content-type': 'image/png'}, 'body': base64.b64encode(b'\\x89PNG\\r\\n').decode()}
    if kind == 'empty':
        return {'x': 1}
    return {'html': '<b>hi</b>', 'svg': '<svg/>', 'text': 'plain', 'body': '<p>body</p>',
            'statusCode': 201, 'headers': {'X-Out': 'yes'}, 'args': {k: v for k, v in a.items() if k != '__ow_headers'}}
"""


@pytest.fixture(scope="module")
def web(whisk):
    def put(name, code, annotations):
        body = {"exec": {"kind": "python:3.11", "code": code}, "annotations": annotations}
        status, resp = whisk.client.request("PUT", f"/api/v1/namespaces/_/actions/{name}", body, "overwrite=true")
        assert status == 200, resp
    put("page", PAGE, WEB)
    put("raw", "def main(a):\n    return {'body': {k: a[k] for k in ('__ow_query', '__ow_body', '__ow_method', '__ow_path')}}\n",
        [{"key": "web-export", "value": True}, {"key": "raw-http", "value": True}])
    put("secure", "def main(a):\n    return {'body': {'user': a.get('__ow_user')}}\n",
        WEB + [{"key": "require-whisk-auth", "value": "let-me-in"}])
    put("private", "def main(a):\n    return {'body': 'no'}\n", [])
    put("peer", "def main(a):\n    return {'xff': a['__ow_headers'].get('x-forwarded-for')}\n",
        [{"key": "web-export", "value": True}])
    return whisk


@pytest.mark.parametrize("ext, status, ctype, body", [
    (".html", 200, "text/html", b"<b>hi</b>"),
    (".svg", 200, "image/svg+xml", b"<svg/>"),
    (".text", 200, "text/plain", b"plain"),
    (".http", 201, "text/html", b"<p>body</p>"),
])
def test_extensions(web, ext, status, ctype, body):
    code, headers, data = web.web(f"default/page{ext}")
    assert code == status and data == body
    assert headers["content-type"].startswith(ctype)
    assert headers["access-control-allow-origin"] == "*"
    assert len(headers["x-openwhisk-activation-id"]) == 32


def test_json_extension_and_args(web):
    code, _, data = web.web("default/page.json/args", method="POST", query="q=1",
                            body=b'{"b": 2}', headers={"Content-Type": "application/json"})
    args = json.loads(data)
    assert code == 200 and args["q"] == "1" and args["b"] == 2
    assert args["__ow_method"] == "post" and args["__ow_path"] == "/args"


def test_binary_body_and_204(web):
    code, headers, data = web.web("default/page", query="kind=png")
    assert code == 200 and headers["content-type"] == "image/png" and data == b"\x89PNG\r\n"
    code, _, data = web.web("default/page.http", query="kind=empty")
    assert code == 204 and data == b""


def test_raw_http(web):
    code, _, data = web.web("default/raw.http/p/q", method="PUT", query="a=1&b=2", body=b'{"z": 1}',
                            headers={"Content-Type": "application/json"})
    out = json.loads(data)
    assert code == 200 and out["__ow_query"] == "a=1&b=2" and out["__ow_method"] == "put"
    assert base64.b64decode(out["__ow_body"]) == b'{"z": 1}' and out["__ow_path"] == "/p/q"


def test_require_whisk_auth(web):
    assert web.web("default/secure.json")[0] == 401
    assert web.web("default/secure.json", headers={"X-Require-Whisk-Auth": "nope"})[0] == 401
    code, _, data = web.web("default/secure.json", headers={"X-Require-Whisk-Auth": "let-me-in"})
    assert code == 200 and json.loads(data) == {"body": {"user": None}}  # .json renders the whole result


def test_options_and_not_exported(web):
    code, headers, data = web.web("default/page.json", method="OPTIONS")
    assert code == 200 and data == b"" and "PATCH" in headers["access-control-allow-methods"]
    assert web.web("default/private.json")[0] == 404


def test_the_edge_appends_the_caller_to_x_forwarded_for(web):
    # As OpenWhisk's nginx does: radcloud's audit trail records where a request came from.
    status, _, body = web.web("default/peer.json")
    assert (status, json.loads(body)) == (200, {"xff": "127.0.0.1"})
    status, _, body = web.web("default/peer.json", headers={"X-Forwarded-For": "10.9.8.7"})
    assert json.loads(body) == {"xff": "10.9.8.7, 127.0.0.1"}
