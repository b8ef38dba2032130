"""The stack's Slurm services as descriptions: slurm.conf, keys, argv, token; nothing started."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from radcloud.ops.stack import slurm
from radcloud.ops.stack.endpoints import Endpoints
from radcloud.ops.stack.install import Binaries, requirements
from radcloud.ops.stack.local import ALL_SERVICES, DEFAULT_SERVICES
from radcloud.ops.stack.ports import Ports
from radcloud.ops.stack.services import build
from radcloud.ops.stack.state import SLURM_SERVICES, StateDir

CREDS = {
    "orthanc": {"user": "radcloud", "password": "orthanc-pw"},
    "pacs": {"user": "radcloud", "password": "pacs-pw"},
    "redis": {"password": "redis-pw"},
    "s3": {"access_key": "radcloud-ak", "secret_key": "s3-sk"},
}
PORTS = Ports.standard(10000)


def test_slurm_is_optional_and_needs_its_packages_only_when_asked():
    assert set(SLURM_SERVICES) <= set(ALL_SERVICES) and not set(SLURM_SERVICES) & set(DEFAULT_SERVICES)
    assert not {r.apt for r in requirements()} & {"slurm-wlm", "munge", "slurmrestd"}
    assert {"slurm-wlm", "munge", "slurmrestd", "slurm-wlm-jwt-plugin"} <= {r.apt for r in requirements(slurm=True)}


def test_slurm_conf_is_a_one_node_loopback_cluster_with_the_stack_s_own_keys(tmp_path, monkeypatch):
    monkeypatch.setattr(slurm, "memory_cgroup", lambda state: None)  # a machine without one
    state = StateDir(tmp_path)
    path = slurm.write_config("slurmctld", state=state, ports=PORTS)
    conf = dict(line.split("=", 1) for line in path.read_text().splitlines()
                if line and not line.startswith(("#", "NodeName", "PartitionName")))
    assert (conf["SlurmctldPort"], conf["SlurmdPort"]) == ("16817", "16818")
    assert conf["AuthInfo"] == f"socket={tmp_path}/slurm/munge/munge.socket"
    assert conf["AuthAltTypes"] == "auth/jwt" and conf["AuthAltParameters"] == f"jwt_key={tmp_path}/slurm/jwt.key"
    assert (conf["ProctrackType"], conf["TaskPlugin"], conf["SelectType"]) == \
        ("proctrack/linuxproc", "task/none", "select/cons_tres")
    assert conf["JobAcctGatherParams"] == "OverMemoryKill" and not (tmp_path / "slurm" / "cgroup.conf").exists()
    assert "batch_sched_delay=0" in conf["SchedulerParameters"]
    assert conf["StateSaveLocation"].startswith(str(tmp_path))
    assert "NodeAddr=127.0.0.1" in path.read_text()
    for key in (tmp_path / "slurm" / "munge" / "munge.key", tmp_path / "slurm" / "jwt.key"):
        assert key.stat().st_mode & 0o777 == 0o600
    before = (tmp_path / "slurm" / "munge" / "munge.key").read_bytes()
    slurm.write_config("slurmd", state=state, ports=PORTS)
    assert (tmp_path / "slurm" / "munge" / "munge.key").read_bytes() == before  # kept across ups


def test_with_a_memory_cgroup_jobs_are_bound_to_it_in_slurmd_s_own_cgroup_namespace(tmp_path, monkeypatch):
    group = tmp_path / "sys" / "radcloud-slurm-abc"
    monkeypatch.setattr(slurm, "memory_cgroup", lambda state: group)
    state = StateDir(tmp_path)
    text = slurm.write_config("slurmd", state=state, ports=PORTS).read_text()
    assert "TaskPlugin=task/cgroup" in text and "OverMemoryKill" not in text
    cgroup_conf = (tmp_path / "slurm" / "cgroup.conf").read_text()
    assert f"CgroupMountpoint={tmp_path}/slurm/cgroup\n" in cgroup_conf and "ConstrainRAMSpace=yes" in cgroup_conf
    svc = build("slurmd", state=state, ports=PORTS, credentials=CREDS, binaries=Binaries({"slurmd": "/usr/sbin/slurmd"}, ()))
    assert svc.argv[:2] == ("sh", "-c")
    script = svc.argv[2]
    assert f"echo $$ > {group}/cgroup.procs" in script and "exec unshare --cgroup --mount" in script
    assert f"mount -t cgroup -o memory cgroup {tmp_path}/slurm/cgroup/memory" in script
    assert script.endswith(f"exec /usr/sbin/slurmd -D -N {slurm.NODE} -f {tmp_path}/slurm/slurm.conf'")
    monkeypatch.setattr(slurm, "memory_cgroup", lambda state: None)
    slurm.write_config("slurmd", state=state, ports=PORTS)  # the machine changed: back to sampling
    assert not (tmp_path / "slurm" / "cgroup.conf").exists()
    assert build("slurmd", state=state, ports=PORTS, credentials=CREDS, binaries=Binaries({}, ())).argv[1:3] == \
        ("-D", "-N")


def test_slurmrestd_runs_as_a_non_root_uid_in_its_own_user_namespace(tmp_path):
    svc = build("slurmrestd", state=StateDir(tmp_path), ports=PORTS, credentials=CREDS,
                binaries=Binaries({"bwrap": "/usr/bin/bwrap"}, ()))
    argv = list(svc.argv)
    assert argv[0] == "/usr/bin/bwrap" and "--unshare-user" in argv and argv[argv.index("--uid") + 1] != "0"
    assert argv[-1] == "127.0.0.1:16820" and ["-a", "rest_auth/jwt"] == argv[argv.index("-a"):argv.index("-a") + 2]
    assert svc.env["SLURM_JWT"] == "daemon" and svc.env["SLURM_CONF"].endswith("slurm/slurm.conf")
    munge = build("munge", state=StateDir(tmp_path), ports=PORTS, credentials=CREDS, binaries=Binaries({}, ()))
    assert f"--socket={tmp_path}/slurm/munge/munge.socket" in munge.argv and munge.binds == ()


def test_the_token_is_the_jwt_scontrol_would_make():
    key = b"k" * 32
    token = slurm.mint_token(key, "root", lifespan_s=600, now=1000)
    header, claims, signature = token.split(".")
    assert json.loads(base64.urlsafe_b64decode(claims + "==")) == {"exp": 1600, "iat": 1000, "sun": "root"}
    expected = hmac.new(key, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "=") == expected


def test_endpoints_name_the_cluster_only_once_it_has_a_token(tmp_path):
    state = StateDir(tmp_path)
    assert "RADCLOUD_SLURM_URL" not in Endpoints.from_state(state, PORTS, CREDS).env()
    with_slurm = Endpoints.from_state(state, PORTS, {**CREDS, "slurm": {"user": "root", "jwt": "a.b.c"}})
    env = with_slurm.env()
    assert env["RADCLOUD_SLURM_URL"] == "http://127.0.0.1:16820" and env["RADCLOUD_SLURM_JWT"] == "a.b.c"
    assert "a.b.c" not in json.dumps(with_slurm.public())
    settings = with_slurm.settings()
    assert settings.slurm_partition == "radcloud" and settings.slurm_jwt.reveal() == "a.b.c"
