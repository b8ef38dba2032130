"""Credentials in the state dir and Basic-auth parsing."""

from __future__ import annotations

import base64
import re
import stat

from localwhisk.auth import Authenticator, load_or_create, parse_basic
from localwhisk.entities import is_binary_code


def test_key_is_created_0600_and_stable(tmp_path):
    key = load_or_create(tmp_path)
    assert re.fullmatch(r"[0-9a-f-]{36}:[A-Za-z0-9_-]{64}", key)
    assert stat.S_IMODE((tmp_path / "auth" / "guest").stat().st_mode) == 0o600
    assert load_or_create(tmp_path) == key


def test_authenticator_maps_basic_header_to_namespace():
    auth = Authenticator({"guest": "u:k"})
    good = "Basic " + base64.b64encode(b"u:k").decode()
    assert auth.namespace_for(good) == "guest"
    assert auth.namespace_for("Basic " + base64.b64encode(b"u:x").decode()) is None
    assert auth.namespace_for("Bearer abc") is None
    assert parse_basic("Basic !!!") is None


def test_binary_code_detection_matches_openwhisk():
    assert is_binary_code(base64.b64encode(b"PK\x03\x04").decode())
    assert not is_binary_code("def main(a):\n    return a\n")
    assert not is_binary_code("")
    assert not is_binary_code("abc")  # length not a multiple of 4
