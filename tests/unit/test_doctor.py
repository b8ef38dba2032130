"""radcloud.ops.doctor: the checks that need no service, and that a failing check never raises."""

from __future__ import annotations

from radcloud.ops import doctor
from radcloud.core.settings import Settings


def _settings(**params) -> Settings:
    return Settings.load(params, environ={})


def test_token_secret_missing_short_and_rotated():
    missing = doctor.check_token_secret(_settings())
    assert not missing.ok and "RADCLOUD_TOKEN_SECRET" in missing.fix
    short = doctor.check_token_secret(_settings(token_secret="abc"))
    assert not short.ok and "3 characters" in short.detail
    rotated = doctor.check_token_secret(_settings(token_secret="n" * 40 + "," + "o" * 40))
    assert rotated.ok and "2 secret(s)" in rotated.detail and "n" * 40 not in rotated.detail


def test_deid_secret_missing_short_and_set():
    missing = doctor.check_deid_secret(_settings())
    assert not missing.ok and "503" in missing.detail and "RADCLOUD_DEID_SECRET" in missing.fix
    short = doctor.check_deid_secret(_settings(deid_secret="abc"))
    assert not short.ok and "3 bytes" in short.detail
    good = doctor.check_deid_secret(_settings(deid_secret="d" * 24))
    assert good.ok and "d" * 24 not in good.detail  # never printed


def test_openwhisk_without_credentials_fails_with_what_to_do():
    [check] = doctor.check_openwhisk("", "", ["query"])
    assert not check.ok and "--apihost" in check.fix


def test_a_crashing_check_is_reported_not_raised():
    def boom():
        raise RuntimeError("kaput")

    check = doctor._guard("x", boom)
    assert not check.ok and "RuntimeError: kaput" in check.detail
    assert doctor._guard_list("y", boom)[0].to_dict()["ok"] is False
