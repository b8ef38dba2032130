"""Docker (blackbox) actions without Docker: a mapped image, the same launcher, bubblewrap.

OpenWhisk runs ``exec.kind: blackbox`` by pulling ``exec.image`` and talking to the
actionloop proxy inside it. There is no Docker here, so localwhisk keeps a mapping
from image name to a local equivalent (``ImageSpec``: which Python runs the
launcher, extra ``PYTHONPATH`` entries standing in for what the image installed,
extra environment). An image without a mapping fails like an image that cannot be
pulled: developer error "Failed to pull container image '<image>'." plus the list
of mapped images. The action code is still required (the actionloop init rejects
empty code), exactly as for ``--docker image action.py`` in production.

The mapped process runs inside bubblewrap when ``bwrap`` works on this machine,
otherwise as a plain subprocess with a logged warning.

What is isolated under bubblewrap (``bwrap_argv``):
- network: shared with the host (loopback and beyond) when ``ActionCode.network``
  is true -- the default, as OpenWhisk actions have network; with the action
  annotation ``sandbox-network: false`` (network false) its own network namespace
  holding only its own loopback, so the host's 127.0.0.1 services are unreachable;
- filesystem: ``/`` is bound read-only; ``/tmp`` is the container's own
  ``.tmp`` directory (on disk, as a Docker container's writable layer: a tmpfs
  would charge every file the action writes to its memory limit); ``/dev`` is
  a minimal devtmpfs and ``/proc`` a new procfs; the container's working
  directory is the only writable host path (and is deleted with the container);
- identity: user namespace with uid/gid 65534 (nobody), no capabilities;
- processes and IPC: own PID, IPC, UTS and cgroup namespaces; the sandbox dies
  with its parent (``--die-with-parent``) and the whole process group is killed
  on timeout;
- memory: the container's memory cgroup (memory.py) holds every process in it to
  the action's limit; that cgroup is bound read-only over the cgroup mount point
  (``/sys/fs/cgroup/memory`` on v1, the cgroup2 mount on v2), so the action reads
  its own limit, usage and OOM kills where a Docker container would.

What is NOT isolated:
- the filesystem is readable: anything world-readable on the host (including the
  state directory of other actions, unless its permissions forbid it) can be read;
- CPU time, disk space and the number of processes are not capped (memory is the
  only cgroup limit); only wall-clock time is (a fork bomb lasts until the
  timeout kills the group);
- with network (the default) the action reaches every host service on loopback;
- the kernel is shared; this is a namespace sandbox, not a VM or gVisor;
- without bubblewrap ("plain" fallback) there is no isolation beyond the memory
  limit, a private working directory and a scrubbed environment.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

NOBODY = "65534"


@dataclass(frozen=True)
class ImageSpec:
    """Local stand-in for a Docker image."""

    python: str = sys.executable  # the interpreter that runs the launcher
    pythonpath: tuple[str, ...] = ()  # what the image's `pip install` would have provided
    env: dict[str, str] = field(default_factory=dict)
    preload: tuple[str, ...] = ()  # modules its stem cells import before they get code
    prewarm: bool = True  # keep stem cells of this image from the start, not only once it was used
    # Run the interpreter with -S: the import path is ``pythonpath`` and the standard
    # library only — nothing the runner's own environment adds through .pth files
    # (an editable install of a checkout would otherwise reach past the image's view).
    isolated: bool = False
    # Host paths the action's process reads through the image's view (bound back
    # under bubblewrap when they live under /tmp): the sources of ``ImageView.files``.
    sources: tuple[str, ...] = ()

    def stem_key(self, network: bool) -> tuple:
        """What a prewarmed process of this image depends on: two actions whose
        keys are equal can take each other's stem cells (bwrap's network choice is
        made when the process starts, so it is part of the key)."""
        return ("image", self.python, tuple(self.pythonpath), tuple(sorted(self.env.items())),
                tuple(self.preload), bool(self.isolated), bool(network))


ROOT_TOKEN = "{root}"  # in an image's pythonpath and env values: the directory its view was built in


@dataclass(frozen=True)
class ImageView:
    """What an image's filesystem holds, built locally as a directory of symlinks.

    ``files`` are ``(host source, path in the image)`` pairs, as a Dockerfile's
    ``COPY`` lines; ``leave_out`` are paths in the image that are not there (what
    a ``.dockerignore`` keeps out of a copied folder). A folder is linked whole
    unless something inside it is left out: then it is a real folder of links,
    and the left-out entry is simply absent, so importing it fails as it would
    in the image.
    """

    files: tuple[tuple[str, str], ...] = ()
    leave_out: tuple[str, ...] = ()

    def build(self, root: Path) -> Path:
        """(Re)build the view in ``root`` (only links and folders: removing it never touches a source)."""
        if root.is_symlink() or root.is_file():
            root.unlink()
        elif root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        left_out = {_inside(p) for p in self.leave_out}
        for source, dest in self.files:
            src = Path(source)
            if not src.exists():
                raise ValueError(f"image view: {source} does not exist (copied to /{_inside(dest)})")
            self._place(src.resolve(), _inside(dest), root, left_out)
        return root

    def host_paths(self) -> tuple[str, ...]:
        """Every host path a process reads through this view: the resolved sources
        and, inside source folders, where their symlinks point (a test's plugins
        folder links to the checkout's plugins). The sandbox binds back those
        under /tmp; a symlink whose target it hid would read as missing."""
        found: dict[str, None] = {}
        todo = [Path(source) for source, _dest in self.files]
        while todo:
            path = todo.pop()
            real = str(path.resolve())
            if real in found or not os.path.exists(real):
                continue
            found[real] = None
            if os.path.isdir(real):
                for folder, dirs, names in os.walk(real):
                    todo += [Path(folder, n) for n in (*dirs, *names) if os.path.islink(os.path.join(folder, n))]
        return tuple(found)

    def _place(self, src: Path, rel: str, root: Path, left_out: set[str]) -> None:
        if rel in left_out:
            return
        target = root / rel
        if src.is_dir() and any(p.startswith(rel + "/") for p in left_out):
            target.mkdir(parents=True, exist_ok=True)
            for child in sorted(src.iterdir()):
                self._place(child, f"{rel}/{child.name}", root, left_out)
            return
        if target.exists() or target.is_symlink():
            raise ValueError(f"image view: /{rel} is copied twice (the second time from {src})")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(src, target_is_directory=src.is_dir())


def _inside(path: str) -> str:
    """A path in the image, without its leading or trailing slashes (``/opt/x/`` -> ``opt/x``)."""
    rel = os.path.normpath("/" + str(path)).strip("/")
    if not rel or rel == ".":
        raise ValueError(f"image view: {path!r} is the image's root; name a folder or file in it")
    return rel


def with_view(spec: ImageSpec, view: ImageView, root: Path) -> ImageSpec:
    """``spec`` running in ``view`` built at ``root``: ``{root}`` in its pythonpath and env is the view."""
    view.build(root)

    def fill(value: str) -> str:
        return value.replace(ROOT_TOKEN, str(root))

    return dataclasses.replace(spec, pythonpath=tuple(fill(p) for p in spec.pythonpath),
                               env={k: fill(v) for k, v in spec.env.items()},
                               sources=(*spec.sources, *view.host_paths()))


# OpenWhisk's own Python runtime images: the same interpreter, nothing extra. Their
# stem cells start only once an action used them (most deployments never do).
DEFAULT_IMAGES: dict[str, ImageSpec] = {
    name: ImageSpec(prewarm=False)
    for name in (
        "openwhisk/action-python-v3.10",
        "openwhisk/action-python-v3.11",
        "openwhisk/action-python-v3.12",
        "openwhisk/python3action",
    )
}


def image_key(image: str) -> str:
    """``user/img:tag`` and ``docker.io/user/img`` map like ``user/img`` unless tagged explicitly."""
    name = image.removeprefix("docker.io/")
    return name


def resolve(image: str | None, images: dict[str, ImageSpec]) -> ImageSpec | None:
    if not image:
        return None
    key = image_key(image)
    if key in images:
        return images[key]
    untagged = key.rsplit(":", 1)[0] if ":" in key.rsplit("/", 1)[-1] else key
    return images.get(untagged)


_probe_cache: dict[str, bool] = {}


def bwrap_available(binary: str = "bwrap") -> bool:
    """True when bubblewrap exists and can create the namespaces we use (checked once)."""
    if binary in _probe_cache:
        return _probe_cache[binary]
    path = shutil.which(binary)
    ok = False
    if path:
        try:
            probe = subprocess.run(
                [path, "--unshare-all", "--ro-bind", "/", "/", "--die-with-parent",
                 "--uid", NOBODY, "--gid", NOBODY, "true"],
                capture_output=True, timeout=10,
            )
            ok = probe.returncode == 0
            if not ok:
                log.warning("bubblewrap cannot create a sandbox here: %s", probe.stderr.decode(errors="replace").strip())
        except (OSError, subprocess.TimeoutExpired) as ex:
            log.warning("bubblewrap probe failed: %s", ex)
    _probe_cache[binary] = ok
    return ok


def under_tmp(paths: Iterable[str | Path]) -> list[str]:
    """The paths among ``paths`` that the sandbox's private /tmp would hide.

    A checkout, a virtualenv or an image's code may live under /tmp (CI
    clones there); they are bound back read-only over the tmpfs.
    """
    keep: set[str] = set()
    for path in paths:
        text = os.path.abspath(str(path))
        if (text == "/tmp" or text.startswith("/tmp/")) and os.path.exists(text):
            keep.add(text)
    # a parent bound read-only already shows its children
    return [p for p in sorted(keep) if not any(p.startswith(q + "/") for q in keep)]


def bwrap_argv(workdir: Path, network: bool, binary: str = "bwrap",
               visible: Iterable[str | Path] = (), cgroup: tuple[Path, str] | None = None) -> list[str]:
    """The bubblewrap prefix; the launcher command follows it.

    ``visible``: host paths the action needs (interpreter, its venv, the
    image's PYTHONPATH, the launcher) — those under /tmp are bound back.
    ``cgroup``: (the container's cgroup dir, the mount point it is shown at).
    """
    argv = [shutil.which(binary) or binary, "--unshare-all"]
    if network:
        argv.append("--share-net")
    argv += [
        "--die-with-parent",
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--bind", str(workdir / ".tmp"), "/tmp",
    ]
    if cgroup is not None:
        argv += ["--ro-bind", str(cgroup[0]), cgroup[1]]
    for path in under_tmp(visible):
        argv += ["--ro-bind", path, path]
    argv += [
        # after /tmp, so a working directory under /tmp stays visible
        "--bind", str(workdir), str(workdir),
        "--uid", NOBODY,
        "--gid", NOBODY,
        "--chdir", str(workdir),
        "--",
    ]
    return argv
