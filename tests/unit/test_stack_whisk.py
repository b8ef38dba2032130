"""localwhisk as a stack service: argv, port, images file, credentials it needs; nothing started."""

from __future__ import annotations

import json
import sys

from radcloud.ops.deploy import ROOT
from radcloud.ops.stack import config
from radcloud.ops.stack.install import Binaries
from radcloud.ops.stack.local import ALL_SERVICES, DEFAULT_SERVICES
from radcloud.ops.stack.ports import STANDARD, Ports
from radcloud.ops.stack.services import build
from radcloud.ops.stack.state import StateDir

CREDS = {
    "orthanc": {"user": "radcloud", "password": "orthanc-pw"},
    "pacs": {"user": "radcloud", "password": "pacs-pw"},
    "redis": {"password": "redis-pw"},
    "s3": {"access_key": "radcloud-ak", "secret_key": "s3-sk"},
    "token_secret": "t" * 40,
}
PORTS = Ports.standard(10000)


def test_whisk_is_optional_and_runs_localwhisk_as_a_module_of_this_python(tmp_path):
    assert "whisk" in ALL_SERVICES and "whisk" not in DEFAULT_SERVICES
    svc = build("whisk", state=StateDir(tmp_path), ports=PORTS, credentials=CREDS, binaries=Binaries({}, ()))
    assert svc.argv[:4] == (sys.executable, "-m", "localwhisk.cli", "serve")
    argv = list(svc.argv)
    assert argv[argv.index("--port") + 1] == "13233" and argv[argv.index("--state-dir") + 1] == str(tmp_path / "whisk")
    assert argv[argv.index("--images-file") + 1] == str(tmp_path / "whisk" / "images.json")
    # As docs/deploy.md requires: web actions' answers (PHI, tokens, URLs) leave no activation record.
    assert svc.env["CONFIG_whisk_activation_storeBlockingResultLevel"] == "STORE_FAILURES"
    assert svc.binds == (("127.0.0.1", 13233),)


def test_images_file_maps_every_manifest_image_to_this_checkout(tmp_path):
    state = StateDir(tmp_path)
    path = config.write_service_config("whisk", state=state, ports=PORTS, credentials=CREDS)
    assert path.stat().st_mode & 0o777 == 0o600  # it carries the stack's secrets for the actions
    images = json.loads(path.read_text())
    assert "radcloud/runtime:local" in images and "radcloud/pl-dcm2png:1.0.0" in images
    spec = images["radcloud/pl-dcm2png:1.0.0"]
    assert spec["python"] == sys.executable and spec["pythonpath"][0] == "{root}/opt/radcloud"
    assert spec["env"]["RADCLOUD_PLUGINS_DIR"] == "{root}/opt/radcloud/plugins"  # the image's own plugin only
    assert [str(ROOT / "plugins" / "dcm2png"), "/opt/radcloud/plugins/dcm2png"] in spec["files"]
    assert spec["env"]["RADCLOUD_TOKEN_SECRET"] == "t" * 40
    assert spec["env"]["RADCLOUD_ORTHANC_URL"] == "http://127.0.0.1:18042"


def test_ports_json_of_an_older_stack_gets_the_whisk_port_at_the_same_offset():
    old = {k: v for k, v in Ports.standard(5000).to_dict().items() if k != "whisk"}
    assert Ports.from_dict(old).whisk == STANDARD["whisk"] + 5000


def test_credentials_gain_a_token_secret_once_and_keep_it(tmp_path):
    state = StateDir(tmp_path)
    first = state.credentials_data()["token_secret"]
    assert len(first) >= 32
    legacy = {k: v for k, v in state.credentials_data().items() if k != "token_secret"}
    state.credentials.write_text(json.dumps(legacy))
    migrated = state.credentials_data()["token_secret"]
    assert len(migrated) >= 32 and state.credentials_data()["token_secret"] == migrated
    state.remember_credential("demo", {"user": "demo-admin", "password": "p" * 20})
    assert state.credentials_data()["demo"]["user"] == "demo-admin"
    assert state.credentials.stat().st_mode & 0o777 == 0o600
