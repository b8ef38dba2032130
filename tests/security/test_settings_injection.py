"""A web caller cannot configure the action it calls.

OpenWhisk (and localwhisk) merge a web request's query and body into the
action's arguments; ``web: true`` makes only the *bound* package parameters
final. radcloud reads its settings from the arguments too, so without a
filter a caller could send ``ow_api_host`` (the action would send the
namespace API key to the caller's host), ``token_ttl_s`` (log in for ten
years), ``presign_ttl_s`` or ``query_limit_max``. These tests send exactly
that and check nothing changes.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import jwt
import pytest
import yaml

from radcloud.api import action
from rcworld import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]


def test_bound_settings_are_the_manifests_inputs():
    """Every setting the manifest binds (package or action inputs, final on web actions) — and only those."""
    import dataclasses

    from radcloud.core.settings import Settings

    pkg = yaml.safe_load((ROOT / "deploy" / "manifest.yaml").read_text())["project"]["packages"]["radcloud"]
    bound = set(pkg["inputs"]) | {k for spec in pkg["actions"].values() for k in (spec.get("inputs") or {})}
    assert bound & {f.name for f in dataclasses.fields(Settings)} == set(action.BOUND_SETTINGS)


def test_web_args_cannot_override_unbound_settings():
    args = {"__ow_method": "get", "__ow_headers": {}, "token_ttl_s": "315360000", "ow_api_host": "http://evil",
            "redis_url": "redis://bound:6379/0"}
    settings = action.settings_from(args, environ={})
    assert settings.token_ttl_s == 8 * 3600 and settings.ow_api_host == ""
    assert settings.redis_url.reveal() == "redis://bound:6379/0"  # bound (final) inputs still count
    direct = action.settings_from({"token_ttl_s": 60}, environ={})  # a direct invoke holds the namespace key
    assert direct.token_ttl_s == 60


class _Listener:
    """A loopback TCP server recording whatever is sent to it (a stand-in for an attacker's host)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.received: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.received.append(conn.recv(65536))
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def test_login_ttl_cannot_be_chosen_by_the_caller(world):
    status, _h, body = world.web("login", method="POST", query="token_ttl_s=315360000",
                                 body={"username": "clinician", "password": PASSWORD})
    assert status in (200, 400), body
    if status == 200:
        claims = jwt.decode(body["token"], options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == world.settings.token_ttl_s
        assert body["expires_in"] == world.settings.token_ttl_s


def test_a_web_caller_cannot_redirect_the_namespace_key(world):
    study, _series = world.seed_patient("Inject^Ivy", "INJ000001", "19700101", [1])
    rid = world.stage(study)
    evil = _Listener()
    try:
        status, _h, body = world.web("dispatch", method="POST", token=world.tokens["clinician"],
                                     query=f"ow_api_host={evil.url}&ow_package=evil",
                                     body={"plugin": "noop", "inputs": {"retrieve": rid}, "options": {"force": True}})
        assert status in (200, 400), body
        if status == 200:
            job = world.wait_final(body["job_id"], timeout_s=60)
            assert job["state"] == "succeeded", job
    finally:
        evil.close()
    assert evil.received == [], "the action called the caller's host"


def test_a_web_caller_cannot_raise_limits(world):
    status, _h, body = world.web("query", query="limit=5000&query_limit_max=100000", token=world.tokens["clinician"])
    assert status == 400 and body["error"]["field"] == "limit", body
    status, _h, body = world.web("query", query="orthanc_timeout_s=abc&token_ttl_s=x", token=world.tokens["clinician"])
    assert status < 500, body
