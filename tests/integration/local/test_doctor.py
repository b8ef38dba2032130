"""radcloud.ops.doctor against a port where nothing listens: one plain answer, no retry storm."""

from __future__ import annotations

import socket

from radcloud.core.settings import Settings
from radcloud.ops import doctor


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_s3_down_is_one_plain_check_naming_the_endpoint_and_the_fix():
    port = _closed_port()
    settings = Settings.load({"s3_endpoint": f"127.0.0.1:{port}", "s3_access_key": "k", "s3_secret_key": "s" * 12,
                              "s3_bucket": "radcloud"}, environ={})
    [check] = doctor.check_s3(settings, timeout_s=2)
    assert not check.ok
    assert check.detail == f"http://127.0.0.1:{port} unreachable (Connection refused)"
    assert "s3_endpoint" in check.fix and "Error" not in check.detail  # words, not an exception class
