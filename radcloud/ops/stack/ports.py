"""Which TCP ports the stack's services listen on, and whether they are free.

The demo uses the standard ports shifted by an offset (default 10000, so
Orthanc is on 18042/14242, Redis on 16379, S3 on 18333) because a user's
machine may already run a system Orthanc or Redis on the standard ones.
Tests ask for ephemeral ports. SeaweedFS's ``weed mini`` listens on ten
ports (HTTP + gRPC for master, volume, filer, S3, admin); all are set
explicitly so two stacks never collide.
"""

from __future__ import annotations

import dataclasses
import errno
import random
import socket

# The standard port of each service; Ports.standard(offset) adds the offset.
STANDARD = {
    "orthanc_http": 8042,
    "orthanc_dicom": 4242,
    "pacs_http": 8052,
    "pacs_dicom": 4252,
    "test_scp": 4262,
    "redis": 6379,
    "s3": 8333,
    "s3_grpc": 18333,
    "weed_master": 9333,
    "weed_master_grpc": 19333,
    "weed_volume": 9340,
    "weed_volume_grpc": 19340,
    "weed_filer": 8888,
    "weed_filer_grpc": 18888,
    "weed_admin": 9646,  # weed's own default (23646) + offset would land in the kernel's ephemeral range
    "weed_admin_grpc": 19646,
    "whisk": 3233,  # localwhisk (OpenWhisk standalone's port), started with `stack up --with-whisk`
    "slurmctld": 6817,  # Slurm's own ports, for `stack up --with-slurm`
    "slurmd": 6818,
    "slurmrestd": 6820,
}
DEFAULT_OFFSET = 10000
GRPC_OFFSET = 10000
# Ports are drawn below the kernel's ephemeral range (32768+): there an
# outgoing connection (weed's own components dial each other while starting)
# can grab a port a moment before the service binds it.
SINGLE_RANGE = (10000, 20000)
PAIR_RANGE = (20000, 32768 - 10000)
GRPC_PAIRS = ("s3", "weed_master", "weed_volume", "weed_filer", "weed_admin")


@dataclasses.dataclass(frozen=True)
class Ports:
    orthanc_http: int
    orthanc_dicom: int
    pacs_http: int
    pacs_dicom: int
    test_scp: int
    redis: int
    s3: int
    s3_grpc: int
    weed_master: int
    weed_master_grpc: int
    weed_volume: int
    weed_volume_grpc: int
    weed_filer: int
    weed_filer_grpc: int
    weed_admin: int
    weed_admin_grpc: int
    whisk: int
    slurmctld: int
    slurmd: int
    slurmrestd: int

    @classmethod
    def standard(cls, offset: int = DEFAULT_OFFSET) -> "Ports":
        """The standard ports plus ``offset``; raises ValueError past 65535."""
        ports = {name: port + offset for name, port in STANDARD.items()}
        bad = [f"{n}={p}" for n, p in ports.items() if not 1 <= p <= 65535]
        if bad:
            raise ValueError(f"port offset {offset} gives invalid ports: {', '.join(bad)}")
        return cls(**ports)

    @classmethod
    def ephemeral(cls, rng: random.Random | None = None) -> "Ports":
        """Distinct ports free right now (for tests).

        weed's gRPC port must be its HTTP port + 10000: some of its
        components ignore ``-*.port.grpc`` and dial HTTP + 10000.
        """
        rng = rng or random.Random()
        held: list[socket.socket] = []
        chosen: dict[str, int] = {}
        try:
            for name in GRPC_PAIRS:
                for _ in range(500):
                    port = rng.randrange(PAIR_RANGE[0], PAIR_RANGE[1])
                    socks = [s for p in (port, port + GRPC_OFFSET) if (s := _hold(p))]
                    held += socks
                    if len(socks) == 2:
                        chosen[name], chosen[name + "_grpc"] = port, port + GRPC_OFFSET
                        break
                else:
                    raise RuntimeError("no free port pair found for " + name)
            for name in STANDARD:
                for _ in range(500):
                    if name in chosen:
                        break
                    port = rng.randrange(SINGLE_RANGE[0], SINGLE_RANGE[1])
                    if sock := _hold(port):  # a held port cannot be drawn twice
                        held.append(sock)
                        chosen[name] = port
                else:
                    raise RuntimeError("no free port found for " + name)
        finally:
            for sock in held:
                sock.close()
        return cls(**{name: chosen[name] for name in STANDARD})

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> "Ports":
        # ports.json of an older stack lacks later services: their standard port + the same offset.
        offset = int(data["orthanc_http"]) - STANDARD["orthanc_http"]
        return cls(**{f.name: int(data.get(f.name, STANDARD[f.name] + offset)) for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def _hold(port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on ``host:port``.

    SO_REUSEADDR makes a TIME_WAIT leftover not count as "in use", exactly
    as it does not for the servers themselves.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
