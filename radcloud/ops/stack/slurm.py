"""The local stack's one-node Slurm cluster: munge, slurmctld, slurmd and slurmrestd.

``radcloud stack up --with-slurm`` starts them from Debian's packages
(``slurm-wlm``, ``munge``, ``slurmrestd``, ``slurm-wlm-jwt-plugin``), on
loopback, with everything under ``<state dir>/slurm/``: ``slurm.conf``, a
private munge key and socket, the JWT signing key, slurmctld's state and
slurmd's spool. Their logs are the stack's ``logs/<service>.log``.

* munge authenticates the daemons (and ``sbatch``/``scontrol`` run here);
* slurmrestd is how radcloud talks to the cluster (:mod:`radcloud.work.slurmclient`):
  its callers present a JWT signed with ``jwt.key``, which slurmctld checks.
  slurmrestd refuses to run as root, so it runs in bubblewrap in its own
  user namespace (uid 65534 inside, the caller outside: the state dir's
  files stay readable to it);
* the stack mints a token for ``root`` (jobs run as root on this one-node
  cluster, as the stack's other services do) and keeps it in
  ``credentials.json``; a real site issues one for a service account.

Nothing here starts a process: these are :class:`~radcloud.ops.stack.services.Service`
descriptions, started by :mod:`radcloud.ops.stack.local` in two waves (munge
first: slurmctld and slurmd need its socket).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from radcloud.work.slurmclient import _token_expiry
from radcloud.ops.stack.errors import StackError
from radcloud.ops.stack.ports import Ports, accepts
from radcloud.ops.stack.state import StateDir, write_private

SERVICES = ("munge", "slurmctld", "slurmd", "slurmrestd")
FIRST = ("munge",)  # started and healthy before the others
NODE = "radcloud-node"
PARTITION = "radcloud"
USER = "root"
API = "v0.0.38"  # slurmrestd's OpenAPI plugin in Slurm 22.05 (Debian 12)
MAX_TIME_MIN = 60
SLURMD_TIMEOUT_S = 6
TOKEN_LIFESPAN_S = 30 * 24 * 3600
_SANDBOX_UID = 65534  # slurmrestd's uid in its user namespace


def slurm_dir(state: StateDir) -> Path:
    return state.service_dir("slurm")


def conf_path(state: StateDir) -> Path:
    return slurm_dir(state) / "slurm.conf"


def munge_socket(state: StateDir) -> Path:
    return slurm_dir(state) / "munge" / "munge.socket"


def jwt_key_path(state: StateDir) -> Path:
    return slurm_dir(state) / "jwt.key"


def node_resources() -> tuple[int, int]:
    """(CPUs, memory MB) the one node offers: all CPUs, three quarters of the memory."""
    cpus = os.cpu_count() or 1
    try:
        meminfo = Path("/proc/meminfo").read_text()
        total_kb = int(next(line.split()[1] for line in meminfo.splitlines() if line.startswith("MemTotal:")))
    except (OSError, StopIteration, ValueError):
        total_kb = 4 * 1024 * 1024
    return cpus, max(1024, total_kb // 1024 * 3 // 4)


_CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory")


def memory_cgroup(state: StateDir) -> Path | None:
    """The memory cgroup this cluster's jobs live under, or None when the machine gives none.

    A cgroup v1 memory controller, a child of this process's own memory cgroup
    named after the state dir (two stacks never share one, and nothing escapes
    the limits this process runs under); slurmd gets it as the root of its own
    cgroup namespace (:func:`services`). None when not root, without ``unshare``,
    without a v1 memory controller (a cgroup v2 only host) or when it is read-only
    (most containers): then Slurm samples memory instead (``OverMemoryKill``) and
    a job over its memory ends FAILED (signal 9), not OUT_OF_MEMORY.
    """
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return None
    if not (_CGROUP_V1_MEMORY / "memory.limit_in_bytes").exists():
        return None
    try:
        own = next(line.split(":", 2)[2].strip() for line in Path("/proc/self/cgroup").read_text().splitlines()
                   if line.split(":")[1:2] == ["memory"])
    except (OSError, StopIteration, IndexError):
        return None
    parent = _CGROUP_V1_MEMORY / own.lstrip("/")
    if not os.access(parent, os.W_OK):
        return None
    tag = hashlib.sha256(str(state.root.resolve()).encode()).hexdigest()[:12]
    return parent / f"radcloud-slurm-{tag}"


def release_cgroup(state: StateDir) -> None:
    """Remove the cluster's memory cgroup (its jobs' cgroups first) once nothing runs in it."""
    group = memory_cgroup(state)
    if group is None or not group.is_dir():
        return
    for sub in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        group.rmdir()


def render_conf(*, state: StateDir, ports: Ports, cgroup: bool = False) -> str:
    from radcloud.ops.stack.config import template

    cpus, memory_mb = node_resources()
    return template("slurm.conf.j2").render(cgroup=cgroup,
        ctld_port=ports.slurmctld, slurmd_port=ports.slurmd, munge_socket=str(munge_socket(state)),
        jwt_key=str(jwt_key_path(state)), dir=str(slurm_dir(state)), node=NODE,
        hostname=socket.gethostname(), cpus=cpus, memory_mb=memory_mb, partition=PARTITION,
        max_time_min=MAX_TIME_MIN, slurmd_timeout=SLURMD_TIMEOUT_S)


def _private_key(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size >= size:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_bytes(size))
    os.replace(path.with_suffix(".tmp"), path)


def write_config(service: str, *, state: StateDir, ports: Ports) -> Path:
    """slurm.conf (0644: slurmrestd reads it; it holds paths, no secret), the keys (0600), the dirs."""
    base = slurm_dir(state)
    for sub, mode in (("", 0o700), ("munge", 0o700), ("ctld", 0o700), ("slurmd", 0o755)):
        (base / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(base / sub, mode)
    _private_key(base / "munge" / "munge.key", 1024)
    _private_key(jwt_key_path(state), 32)
    path = conf_path(state)
    cgroup = memory_cgroup(state)
    text = render_conf(state=state, ports=ports, cgroup=cgroup is not None)
    if not path.exists() or path.read_text() != text:
        write_private(path, text)
    os.chmod(path, 0o644)
    cgroup_conf = path.parent / "cgroup.conf"
    if cgroup is not None:
        cgroup_conf.write_text(
            "# The memory cgroup of radcloud's one-node cluster (radcloud.ops.stack.slurm); rendered, do not edit.\n"
            f"CgroupPlugin=cgroup/v1\nCgroupMountpoint={base / 'cgroup'}\nCgroupAutomount=no\n"
            "ConstrainRAMSpace=yes\nConstrainSwapSpace=yes\nAllowedSwapSpace=0\n")
        os.chmod(cgroup_conf, 0o644)
    else:
        cgroup_conf.unlink(missing_ok=True)
    return path


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_token(key: bytes, user: str = USER, lifespan_s: int = TOKEN_LIFESPAN_S,
               now: float | None = None) -> str:
    """A Slurm JWT (HS256, claims ``sun``/``iat``/``exp``) as ``scontrol token`` makes it."""
    iat = int(time.time() if now is None else now)
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = _b64(json.dumps({"exp": iat + lifespan_s, "iat": iat, "sun": user}, separators=(",", ":")).encode())
    signature = hmac.new(key, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64(signature)}"


def ensure_token(state: StateDir) -> str:
    """The stack's token for slurmrestd, minted again when missing or within a day of expiry."""
    creds = state.credentials_data()
    token = (creds.get("slurm") or {}).get("jwt", "")
    if token and (_token_expiry(token) or 0) > time.time() + 24 * 3600:
        return token
    token = mint_token(jwt_key_path(state).read_bytes())
    state.remember_credential("slurm", {"user": USER, "jwt": token})
    return token


def env(state: StateDir) -> dict[str, str]:
    """What Slurm's own commands (sbatch, scontrol, squeue) need to reach this cluster."""
    return {**os.environ, "SLURM_CONF": str(conf_path(state))}


def scontrol(state: StateDir, *args: str, timeout: float = 5.0) -> str:
    """``scontrol args`` against this cluster; stdout (raises StackError when it fails)."""
    try:
        done = subprocess.run(["scontrol", *args], env=env(state), capture_output=True, text=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"slurm: scontrol {' '.join(args)} failed: {exc}", service="slurmctld") from None
    if done.returncode != 0:
        raise StackError(f"slurm: scontrol {' '.join(args)} failed: {done.stderr.strip()[:200]}",
                         service="slurmctld")
    return done.stdout


def cancel_all(state: StateDir, wait_s: float = 8.0) -> None:
    """Before `stack down`: scancel every job, wait for their steps to end, kill what is left.

    slurmstepd runs in a session of its own so that jobs outlive a slurmd
    restart: stopping the daemons alone would leave a job's processes behind.
    """
    try:
        subprocess.run(["scancel", "--quiet", "--user", USER], env=env(state), capture_output=True,
                       timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        pass
    deadline = time.monotonic() + wait_s
    while steps(state) and time.monotonic() < deadline:
        time.sleep(0.1)


def steps(state: StateDir) -> list[int]:
    """PIDs of this cluster's slurmstepd processes (slurmd passed them its SLURM_CONF)."""
    wanted = f"SLURM_CONF={conf_path(state)}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "cmdline").read_bytes().startswith(b"slurmstepd"):
                continue
            if wanted in (entry / "environ").read_bytes().split(b"\0") and \
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def kill_leftovers(state: StateDir) -> None:
    """SIGKILL this cluster's remaining slurmstepd and everything under them (after the daemons stopped)."""
    import signal

    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    todo, seen = steps(state), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo += children.get(pid, [])
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def slurmd_argv(state: StateDir, slurmd: str, conf: str) -> tuple[str, ...]:
    """slurmd, in a cgroup namespace rooted at :func:`memory_cgroup` when there is one.

    The shell joins that cgroup, ``unshare`` makes it slurmd's cgroup root (and a
    private mount namespace), the v1 memory controller is mounted where
    cgroup.conf's CgroupMountpoint says, and slurmd replaces the shell: its pid
    is the service's, and its job steps inherit both namespaces.
    """
    plain = (slurmd, "-D", "-N", NODE, "-f", conf)
    group = memory_cgroup(state)
    if group is None:
        return plain
    import shlex

    mount = slurm_dir(state) / "cgroup" / "memory"
    inner = f"mount -t cgroup -o memory cgroup {shlex.quote(str(mount))} && exec {shlex.join(plain)}"
    outer = (f"mkdir -p {shlex.quote(str(group))} {shlex.quote(str(mount))} && "
             f"echo $$ > {shlex.quote(str(group / 'cgroup.procs'))} && "
             f"exec unshare --cgroup --mount --propagation private sh -c {shlex.quote(inner)}")
    return ("sh", "-c", outer)


def services(*, state: StateDir, ports: Ports, credentials: Mapping[str, Any],
             binaries: Mapping[str, str] | Any) -> dict[str, Any]:
    """The four Service descriptions, keyed by name."""
    from radcloud.ops.stack.services import NotReady, Service, probe

    base = slurm_dir(state)
    conf = str(conf_path(state))
    sock = munge_socket(state)
    plain_env = dict(os.environ, SLURM_CONF=conf)

    def munge_health() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(sock))
            except OSError as exc:
                raise NotReady(f"munge socket {sock}: {exc.strerror}") from None

    def ctld_health() -> None:
        if not accepts(ports.slurmctld):
            raise NotReady(f"slurmctld port {ports.slurmctld} not listening")

    def slurmd_health() -> None:
        if not accepts(ports.slurmd):
            raise NotReady(f"slurmd port {ports.slurmd} not listening")
        try:
            line = scontrol(state, "-o", "show", "node", NODE, timeout=3)
        except StackError as exc:
            raise NotReady(exc.message) from None
        node_state = next((f.split("=", 1)[1] for f in line.split() if f.startswith("State=")), "?")
        if any(bad in node_state for bad in ("DOWN", "UNKNOWN", "NOT_RESPONDING", "DRAIN")):
            raise NotReady(f"node {NODE} is {node_state}")

    url = f"http://127.0.0.1:{ports.slurmrestd}"

    def rest_health() -> None:
        token = ((state.load_json(state.credentials) or {}).get("slurm") or {}).get("jwt") or ""
        resp = probe(f"{url}/slurm/{API}/ping", headers={"X-SLURM-USER-NAME": USER, "X-SLURM-USER-TOKEN": token})
        if resp.status_code != 200:
            raise NotReady(f"GET /slurm/{API}/ping answered HTTP {resp.status_code}")

    def binary(name: str) -> str:
        found = binaries.paths.get(name) if hasattr(binaries, "paths") else None
        found = found or shutil.which(name) or f"/usr/sbin/{name}"
        return found

    bwrap = binary("bwrap")
    return {
        "munge": Service(
            name="munge",
            argv=(binary("munged"), "--foreground", "--force", f"--key-file={base / 'munge' / 'munge.key'}",
                  f"--socket={sock}", f"--pid-file={base / 'munge' / 'munged.pid'}",
                  f"--seed-file={base / 'munge' / 'munged.seed'}", f"--log-file={state.log('munge')}"),
            env=dict(os.environ), binds=(), endpoint=str(sock), health=munge_health, cwd=base),
        "slurmctld": Service(
            name="slurmctld", argv=(binary("slurmctld"), "-D", "-i", "-f", conf), env=plain_env,
            binds=(("127.0.0.1", ports.slurmctld),), endpoint=f"127.0.0.1:{ports.slurmctld} (slurm.conf {conf})",
            health=ctld_health, cwd=base),
        "slurmd": Service(
            name="slurmd", argv=slurmd_argv(state, binary("slurmd"), conf), env=plain_env,
            binds=(("127.0.0.1", ports.slurmd),), endpoint=f"node {NODE} 127.0.0.1:{ports.slurmd}",
            health=slurmd_health, cwd=base),
        "slurmrestd": Service(
            name="slurmrestd",
            argv=(bwrap, "--bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-user",
                  "--uid", str(_SANDBOX_UID), "--gid", str(_SANDBOX_UID), "--",
                  binary("slurmrestd"), "-a", "rest_auth/jwt", "-s", f"openapi/{API}",
                  f"127.0.0.1:{ports.slurmrestd}"),
            # SLURM_JWT=daemon: slurmrestd forwards each caller's token to slurmctld.
            env={**plain_env, "SLURM_JWT": "daemon"},
            binds=(("127.0.0.1", ports.slurmrestd),), endpoint=url, health=rest_health, cwd=base),
    }
