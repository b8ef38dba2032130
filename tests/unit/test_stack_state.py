"""radcloud.ops.stack.state and .endpoints: generated credentials, private files, settings."""

from __future__ import annotations

import json

from radcloud.ops.stack.endpoints import Endpoints
from radcloud.ops.stack.ports import Ports
from radcloud.ops.stack.state import StateDir, write_private


def test_credentials_are_generated_once_private_and_stable(tmp_path):
    state = StateDir(tmp_path / "state")
    first = state.credentials_data()
    assert state.credentials.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert StateDir(tmp_path / "state").credentials_data() == first
    assert json.loads(state.credentials.read_text()) == first
    assert len(first["orthanc"]["password"]) >= 20
    assert first["orthanc"]["password"] != first["pacs"]["password"]
    assert first["s3"]["access_key"].startswith("radcloud-")


def test_credentials_differ_between_state_dirs(tmp_path):
    a = StateDir(tmp_path / "a").credentials_data()
    b = StateDir(tmp_path / "b").credentials_data()
    assert a["redis"]["password"] != b["redis"]["password"]


def test_write_private_replaces_a_public_file(tmp_path):
    path = tmp_path / "f"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, "new")
    assert path.read_text() == "new"
    assert path.stat().st_mode & 0o777 == 0o600


def _endpoints(tmp_path):
    state = StateDir(tmp_path)
    return Endpoints.from_state(state, Ports.standard(10000), state.credentials_data()), state


def test_endpoints_give_radcloud_settings(tmp_path):
    ep, state = _endpoints(tmp_path)
    creds = state.credentials_data()
    s = ep.settings()
    assert s.orthanc_url == "http://127.0.0.1:18042"
    assert s.orthanc_user == "radcloud"
    assert s.orthanc_password.reveal() == creds["orthanc"]["password"]
    assert s.s3_endpoint == "127.0.0.1:18333"
    assert s.s3_secure is False
    assert (s.s3_access_key, s.s3_secret_key.reveal()) == (creds["s3"]["access_key"], creds["s3"]["secret_key"])
    assert s.s3_bucket == "radcloud"
    assert s.redis_url.reveal() == f"redis://:{creds['redis']['password']}@127.0.0.1:16379/0"
    assert ep.settings(s3_bucket="other").s3_bucket == "other"


def test_endpoints_env_names_both_orthancs(tmp_path):
    env, _ = _endpoints(tmp_path)
    env = env.env()
    assert env["RADCLOUD_ORTHANC_AET"] == "RADCLOUD"
    assert env["RADCLOUD_PACS_AET"] == "HOSPITAL_PACS"
    assert env["RADCLOUD_PACS_URL"] == "http://127.0.0.1:18052"
    assert env["RADCLOUD_TEST_AET"] == "RADCLOUD_TEST"


def test_the_pacs_viewer_link_is_orthancs_ohif_when_built_and_holds_no_credentials(tmp_path):
    state = StateDir(tmp_path / "state")
    creds = state.credentials_data()
    build = tmp_path / "build"
    none = Endpoints.from_state(state, Ports.standard(10000), creds, ohif=build)
    assert none.viewer_url == "" and "RADCLOUD_VIEWER_URL" not in none.env()
    build.mkdir()
    (build / "routes.json").write_text("{}")
    env = Endpoints.from_state(state, Ports.standard(10000), creds, ohif=build).env()
    assert env["RADCLOUD_VIEWER_URL"] == "http://127.0.0.1:18042/ohif/viewer?StudyInstanceUIDs={study_uid}"
    assert creds["orthanc"]["password"] not in env["RADCLOUD_VIEWER_URL"]


def test_endpoints_public_view_hides_every_secret(tmp_path):
    ep, state = _endpoints(tmp_path)
    shown = json.dumps(ep.public()) + repr(ep)
    creds = state.credentials_data()
    for secret in (creds["orthanc"]["password"], creds["pacs"]["password"], creds["redis"]["password"],
                   creds["s3"]["secret_key"]):
        assert secret not in shown
    assert ep.public()["credentials_file"] == str(tmp_path / "credentials.json")
    assert ep.public()["redis"]["address"] == "127.0.0.1:16379/0"


def test_secret_values_cover_credentials_and_the_namespace_key_and_redact_masks_them(tmp_path):
    from radcloud.ops.stack.state import redact

    state = StateDir(tmp_path)
    creds = state.credentials_data()
    (tmp_path / "whisk").mkdir()
    (tmp_path / "whisk" / ".wskprops").write_text("APIHOST=http://127.0.0.1:1\nAUTH=uuid-0001:" + "k" * 40 + "\n")
    secrets = state.secret_values()
    assert creds["orthanc"]["password"] in secrets and creds["s3"]["secret_key"] in secrets
    assert creds["deid_secret"] in secrets and "k" * 40 in secrets
    assert creds["s3"]["access_key"] not in secrets and "radcloud" not in secrets  # identifiers stay readable
    line = f"user radcloud key {creds['s3']['access_key']} pw {creds['redis']['password']} auth uuid-0001:{'k' * 40}"
    assert redact(line, secrets) == f"user radcloud key {creds['s3']['access_key']} pw *** auth ***"
