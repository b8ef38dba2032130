"""radcloud.ops.stack.config: the rendered Orthanc, S3 and Redis configs say what the stack promises."""

from __future__ import annotations

import json

from radcloud.ops.stack import config
from radcloud.ops.stack.ports import Ports
from radcloud.ops.stack.state import StateDir

CREDS = {
    "orthanc": {"user": "radcloud", "password": "orthanc-pw"},
    "pacs": {"user": "radcloud", "password": "pacs-pw"},
    "redis": {"password": "redis-pw"},
    "s3": {"access_key": "radcloud-ak", "secret_key": "s3-sk"},
}
PORTS = Ports.standard(10000)


def _orthanc(name, tmp_path, ohif=None):
    text = config.render_orthanc(name, state=StateDir(tmp_path), ports=PORTS, credentials=CREDS, ohif=ohif)
    return json.loads(text)


def _ohif_build(folder):
    folder.mkdir(parents=True)
    (folder / "routes.json").write_text(json.dumps({"ohif": "3.13.2", "base": "/ohif/", "routes": ["viewer", "segmentation"]}))
    return folder


def test_orthanc_is_locked_down(tmp_path):
    cfg = _orthanc("orthanc", tmp_path)
    assert cfg["RemoteAccessAllowed"] is False
    assert cfg["AuthenticationEnabled"] is True
    assert cfg["RegisteredUsers"] == {"radcloud": "orthanc-pw"}
    assert cfg["HttpCompressionEnabled"] is False
    assert cfg["DicomCheckModalityHost"] is True
    # No DICOM command from an unregistered AE, nor to another called AET; nothing overwritten.
    assert [v for k, v in cfg.items() if k.startswith("DicomAlwaysAllow")] == [False] * 6
    assert cfg["DicomCheckCalledAet"] is True
    assert cfg["OverwriteInstances"] is False
    assert cfg["MaximumPduLength"] == 131072


def test_orthanc_uses_its_own_ports_dirs_and_plugins_by_full_path(tmp_path):
    cfg = _orthanc("orthanc", tmp_path)
    assert (cfg["HttpPort"], cfg["DicomPort"], cfg["DicomAet"]) == (18042, 14242, "RADCLOUD")
    assert cfg["StorageDirectory"] == str(tmp_path / "orthanc" / "storage")
    assert cfg["IndexDirectory"] == str(tmp_path / "orthanc" / "index")
    assert cfg["Plugins"] == ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
                              "/usr/share/orthanc/plugins/libOrthancGdcm.so"]


def test_without_ohif_built_orthanc_serves_no_folder(tmp_path):
    cfg = _orthanc("orthanc", tmp_path, ohif=tmp_path / "no-build")
    assert "ServeFolders" not in cfg and not any("ServeFolders" in p for p in cfg["Plugins"])


def test_orthanc_serves_ohif_under_ohif_with_its_routes_as_pages(tmp_path):
    build = _ohif_build(tmp_path / "deploy" / "ohif" / "build")
    cfg = _orthanc("orthanc", tmp_path, ohif=build)
    assert cfg["Plugins"][-1] == "/usr/share/orthanc/plugins/libServeFolders.so"
    served = cfg["ServeFolders"]
    assert served["Folders"] == {"/ohif": str(build)}
    # ServeFolders takes the MIME type from what follows the last dot of the file's whole path:
    # no dot here, so the extension-less route pages are the empty extension.
    assert "." not in str(build) and served["Extensions"][""] == "text/html"
    assert cfg["AuthenticationEnabled"] is True and cfg["RemoteAccessAllowed"] is False  # the same login


def test_ohif_routes_are_html_when_the_install_path_has_a_dot(tmp_path):
    build = _ohif_build(tmp_path / "ci.x1" / "Deploy" / "ohif" / "build")
    served = _orthanc("pacs", tmp_path, ohif=build)["ServeFolders"]
    assert served["Extensions"]["x1/deploy/ohif/build/viewer"] == "text/html"
    assert served["Extensions"]["x1/deploy/ohif/build/segmentation"] == "text/html"
    assert "" not in served["Extensions"]  # no other extension-less file becomes a page


def test_each_orthanc_knows_the_other_and_the_test_scp(tmp_path):
    ours, pacs = _orthanc("orthanc", tmp_path), _orthanc("pacs", tmp_path)
    assert ours["DicomModalities"]["HOSPITAL_PACS"]["Port"] == PORTS.pacs_dicom
    assert pacs["DicomModalities"]["RADCLOUD"]["Port"] == PORTS.orthanc_dicom
    assert pacs["DicomAet"] == "HOSPITAL_PACS"
    for cfg in (ours, pacs):
        test = cfg["DicomModalities"]["RADCLOUD_TEST"]
        assert (test["AET"], test["Host"], test["Port"]) == ("RADCLOUD_TEST", "127.0.0.1", PORTS.test_scp)
        assert all(m["Host"] == "127.0.0.1" for m in cfg["DicomModalities"].values())
    assert pacs["RegisteredUsers"] == {"radcloud": "pacs-pw"}


def test_password_with_quotes_stays_valid_json(tmp_path):
    creds = {**CREDS, "orthanc": {"user": "radcloud", "password": 'a"b\\c'}}
    text = config.render_orthanc("orthanc", state=StateDir(tmp_path), ports=PORTS, credentials=creds)
    assert json.loads(text)["RegisteredUsers"]["radcloud"] == 'a"b\\c'


def test_s3_identities_have_only_the_generated_key():
    cfg = json.loads(config.render_s3_identities(CREDS))
    assert len(cfg["identities"]) == 1
    ident = cfg["identities"][0]
    assert ident["credentials"] == [{"accessKey": "radcloud-ak", "secretKey": "s3-sk"}]
    assert "anonymous" not in json.dumps(cfg).lower()


def test_redis_conf_is_loopback_aof_with_password(tmp_path):
    lines = config.render_redis(state=StateDir(tmp_path), ports=PORTS, credentials=CREDS).splitlines()
    for expected in ("bind 127.0.0.1", "port 16379", "appendonly yes", 'save ""',
                     "requirepass redis-pw", f"dir {tmp_path / 'redis'}"):
        assert expected in lines


def test_env_file_quotes_values_for_the_shell(tmp_path):
    text = config.render_env({"RADCLOUD_A": "plain", "RADCLOUD_B": "has space;$x"}, tmp_path / "radcloud.env")
    assert "RADCLOUD_A=plain\n" in text
    assert "RADCLOUD_B='has space;$x'\n" in text


def test_write_service_config_is_private(tmp_path):
    state = StateDir(tmp_path)
    path = config.write_service_config("redis", state=state, ports=PORTS, credentials=CREDS)
    assert path == tmp_path / "redis" / "redis.conf"
    assert path.stat().st_mode & 0o777 == 0o600


def test_weed_security_locks_every_port_but_s3(tmp_path):
    import tomllib

    from radcloud.ops.stack.weed import JWT_KEYS, WeedTls

    state = StateDir(tmp_path)
    tls = WeedTls.under(config.weed_tls_dir(state))
    config.weed_tls_dir(state).mkdir(parents=True)
    for path in (tls.ca, tls.cert, tls.key):  # present: ensure_tls keeps them and runs nothing
        open(path, "w").close()
    keys = {name: f"{name}-value" for name in JWT_KEYS}
    cfg = tomllib.loads(config.render_weed_security(state=state, credentials={**CREDS, "weed": keys}))
    assert cfg["jwt"]["signing"]["key"] == "jwt_signing-value"
    assert cfg["jwt"]["signing"]["read"]["key"] == "jwt_signing_read-value"
    assert cfg["jwt"]["filer_signing"]["key"] == "jwt_filer_signing-value"
    assert cfg["jwt"]["filer_signing"]["read"]["key"] == "jwt_filer_signing_read-value"
    assert cfg["grpc"]["ca"] == tls.ca
    for component in ("master", "volume", "filer", "s3", "admin", "worker", "client"):
        assert (cfg["grpc"][component]["cert"], cfg["grpc"][component]["key"]) == (tls.cert, tls.key)
    for component in ("master", "admin"):  # HTTPS that demands a client certificate
        assert cfg["https"][component] == {"cert": tls.cert, "key": tls.key, "ca": tls.ca}
    assert cfg["https"]["client"]["enabled"] is False  # volume/filer HTTP: plain + JWT (the data path)
    assert cfg["access"]["ui"] is False and cfg["filer"]["expose_directory_metadata"]["enabled"] is False
