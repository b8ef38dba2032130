"""radcloud.core.settings: sources, precedence, exact error messages, secrets never shown."""

from __future__ import annotations

import pytest

from radcloud.core.errors import ConfigError
from radcloud.core.settings import Secret, Settings


def test_defaults_without_any_source():
    s = Settings.load({}, environ={})
    assert s.orthanc_url == "http://127.0.0.1:8042"
    assert s.s3_bucket == "radcloud"
    assert s.orthanc_password == Secret("")


def test_environment_is_read_and_parsed():
    s = Settings.load(environ={"RADCLOUD_ORTHANC_URL": "http://pacs:8042", "RADCLOUD_S3_SECURE": "yes",
                               "RADCLOUD_RETRIEVE_WORKERS": " 4 ", "RADCLOUD_ORTHANC_TIMEOUT_S": "2.5"})
    assert (s.orthanc_url, s.s3_secure, s.retrieve_workers, s.orthanc_timeout_s) == \
        ("http://pacs:8042", True, 4, 2.5)


def test_params_beat_environment():
    s = Settings.load({"orthanc_url": "http://from-params", "retrieve_workers": 8},
                      environ={"RADCLOUD_ORTHANC_URL": "http://from-env", "RADCLOUD_RETRIEVE_WORKERS": "2"})
    assert s.orthanc_url == "http://from-params"
    assert s.retrieve_workers == 8


def test_none_param_falls_back_to_environment():
    s = Settings.load({"orthanc_user": None}, environ={"RADCLOUD_ORTHANC_USER": "env-user"})
    assert s.orthanc_user == "env-user"


@pytest.mark.parametrize("environ, message", [
    ({"RADCLOUD_RETRIEVE_WORKERS": "abc"}, "RADCLOUD_RETRIEVE_WORKERS='abc' is not an int"),
    ({"RADCLOUD_ORTHANC_TIMEOUT_S": "soon"}, "RADCLOUD_ORTHANC_TIMEOUT_S='soon' is not a number"),
    ({"RADCLOUD_S3_SECURE": "maybe"}, "RADCLOUD_S3_SECURE='maybe' is not a bool (use true/false)"),
])
def test_malformed_environment_value_has_an_exact_message(environ, message):
    with pytest.raises(ConfigError) as exc:
        Settings.load(environ=environ)
    assert str(exc.value) == message


def test_malformed_param_names_the_param_not_the_env_key():
    with pytest.raises(ConfigError) as exc:
        Settings.load({"orthanc_timeout_s": [1]}, environ={})
    assert str(exc.value) == "orthanc_timeout_s=[1] is not a float"
    assert exc.value.field == "orthanc_timeout_s"


def test_secret_param_must_be_a_string():
    with pytest.raises(ConfigError) as exc:
        Settings.load({"orthanc_password": 1234}, environ={})
    assert str(exc.value) == "orthanc_password must be a string"


def test_bool_is_not_accepted_as_int():
    with pytest.raises(ConfigError) as exc:
        Settings.load({"retrieve_workers": True}, environ={})
    assert "retrieve_workers=True" in str(exc.value)


def test_require_names_every_missing_setting():
    s = Settings.load(environ={})
    with pytest.raises(ConfigError) as exc:
        s.require("orthanc_password", "s3_access_key", "s3_bucket")
    assert str(exc.value) == ("missing setting: orthanc_password (or RADCLOUD_ORTHANC_PASSWORD), "
                              "s3_access_key (or RADCLOUD_S3_ACCESS_KEY)")


def test_secrets_never_show_in_repr_str_or_public():
    secret_values = ["pw-123-orthanc", "s3-secret-xyz", "redis://:pw@host:1/0", "ow-key-77", "token-secret-q9"]
    s = Settings.load(environ={"RADCLOUD_ORTHANC_PASSWORD": secret_values[0],
                               "RADCLOUD_S3_SECRET_KEY": secret_values[1],
                               "RADCLOUD_REDIS_URL": secret_values[2],
                               "RADCLOUD_OW_API_KEY": secret_values[3],
                               "RADCLOUD_TOKEN_SECRET": secret_values[4]})
    shown = repr(s) + str(s) + repr(s.public()) + str(s.orthanc_password)
    for value in secret_values:
        assert value not in shown
    assert s.public()["orthanc_password"] == "***"
    assert s.orthanc_password.reveal() == secret_values[0]


def test_openwhisk_defaults_from_ow_environment():
    s = Settings.load(environ={"__OW_API_HOST": "http://127.0.0.1:3233", "__OW_API_KEY": "u:k"})
    assert s.ow_api_host == "http://127.0.0.1:3233"
    assert s.ow_api_key.reveal() == "u:k"
    explicit = Settings.load({"ow_api_host": "http://other"}, environ={"__OW_API_HOST": "http://ow"})
    assert explicit.ow_api_host == "http://other"
