"""radcloud.ops.stack.services: argv, environment and ports of each service, nothing started."""

from __future__ import annotations

from radcloud.ops.stack.install import Binaries
from radcloud.ops.stack.ports import Ports
from radcloud.ops.stack.services import build
from radcloud.ops.stack.state import StateDir

CREDS = {
    "orthanc": {"user": "radcloud", "password": "orthanc-pw"},
    "pacs": {"user": "radcloud", "password": "pacs-pw"},
    "redis": {"password": "redis-pw"},
    "s3": {"access_key": "radcloud-ak", "secret_key": "s3-sk"},
}
PORTS = Ports.standard(10000)


def _build(name, tmp_path, weed="/venv/bin/weed"):
    binaries = Binaries({"Orthanc": "/usr/sbin/Orthanc", "redis-server": "/usr/bin/redis-server",
                         "weed": weed, "bwrap": "/usr/bin/bwrap"}, ())
    return build(name, state=StateDir(tmp_path), ports=PORTS, credentials=CREDS, binaries=binaries)


def test_orthanc_runs_with_tcp_nodelay_and_binds_all_addresses(tmp_path):
    svc = _build("orthanc", tmp_path)
    assert svc.argv == ("/usr/sbin/Orthanc", str(tmp_path / "orthanc" / "orthanc.json"))
    assert svc.env["TCP_NODELAY"] == "1"
    assert svc.binds == (("0.0.0.0", 18042), ("0.0.0.0", 14242))
    assert svc.endpoint == "http://127.0.0.1:18042 (DICOM RADCLOUD@127.0.0.1:14242)"


def test_second_orthanc_has_its_own_ports_and_dir(tmp_path):
    svc = _build("pacs", tmp_path)
    assert svc.argv[1] == str(tmp_path / "pacs" / "orthanc.json")
    assert svc.binds == (("0.0.0.0", PORTS.pacs_http), ("0.0.0.0", PORTS.pacs_dicom))


def test_redis_password_is_not_on_the_command_line(tmp_path):
    svc = _build("redis", tmp_path)
    assert svc.argv == ("/usr/bin/redis-server", str(tmp_path / "redis" / "redis.conf"))
    assert "redis-pw" not in " ".join(svc.argv)
    assert svc.binds == (("127.0.0.1", 16379),)


def test_weed_is_sandboxed_private_and_loopback_only(tmp_path):
    svc = _build("s3", tmp_path)
    argv = list(svc.argv)
    sep = argv.index("--")
    sandbox, weed = argv[:sep], argv[sep + 1:]
    assert sandbox[0] == "/usr/bin/bwrap"
    assert ["--tmpfs", "/tmp"] == sandbox[sandbox.index("--tmpfs"):sandbox.index("--tmpfs") + 2]
    # The state dir is bound back *after* /tmp is replaced, in case it lives under /tmp.
    assert sandbox.index("--bind", sandbox.index("--tmpfs")) > sandbox.index("--tmpfs")
    assert [str(tmp_path), str(tmp_path)] == sandbox[-2:]
    assert weed[:4] == ["/venv/bin/weed", f"-logdir={tmp_path / 'logs' / 's3'}",
                        f"-config_dir={tmp_path / 's3'}", "mini"]  # security.toml lives there
    for flag in ("-master.telemetry=false", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                 f"-s3.config={tmp_path / 's3' / 's3.json'}", "-s3.autoCreateBucket=false",
                 "-s3.allowDeleteBucketNotEmpty=false", "-s3.port=18333", f"-dir={tmp_path / 's3' / 'data'}"):
        assert flag in weed
    assert all(host == "127.0.0.1" for host, _ in svc.binds)
    assert len(svc.binds) == 10


def test_weed_under_tmp_is_bound_into_the_sandbox(tmp_path):
    svc = _build("s3", tmp_path, weed="/tmp/venv/bin/weed")
    argv = list(svc.argv)
    i = argv.index("--ro-bind")
    assert argv[i:i + 3] == ["--ro-bind", "/tmp/venv/bin", "/tmp/venv/bin"]
    assert "--ro-bind" not in _build("s3", tmp_path).argv


def test_arrivals_watcher_gets_the_stack_in_its_environment_and_no_secret_in_argv(tmp_path):
    svc = _build("arrivals", tmp_path)
    assert svc.argv[1:] == ("-m", "radcloud.ops.cli.main", "arrivals", "watch",
                            "--wskprops", str(tmp_path / "whisk" / ".wskprops"))
    assert svc.binds == ()
    assert svc.env["RADCLOUD_ORTHANC_URL"] == "http://127.0.0.1:18042"
    assert "redis-pw" in svc.env["RADCLOUD_REDIS_URL"]
    assert not any(secret in " ".join(svc.argv) for secret in ("redis-pw", "orthanc-pw", "s3-sk"))
