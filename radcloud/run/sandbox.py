"""Run one plugin process under limits: the shard runner's sandbox.

A plugin is untrusted code working on patient data, so it runs with:

* memory: no limit of its own. The plugin runs inside its action's container,
  whose memory cgroup (OpenWhisk's ``memorySize``, which ``radcloud deploy``
  derives from the descriptor: docs/plugins.md) bounds runner and plugin
  together. An address-space cap (RLIMIT_AS) is not used: it breaks
  numpy/scipy/OpenBLAS, which reserve far more than they touch, and inside an
  action whose own hard limit is lower it cannot even be set;
* rlimits: CPU seconds (a backstop behind the wall clock), file size (one
  output file), open files, no core dumps;
* a wall-clock timeout and a cancel flag polled while it runs; the whole
  process group is killed;
* an output watch: total bytes/files in the output dir polled while it
  runs (an output flood is killed, not uploaded);
* bubblewrap when it works: a read-only root, the input dir read-only, only
  the output and scratch dirs writable, uid 65534, no network unless the
  descriptor declares it, a private /tmp, PID namespace so nothing outlives
  the shard. Without bubblewrap (e.g. a container that forbids user
  namespaces) the fallback: Landlock (:mod:`radcloud.run.landlock`) confines
  writes to the output and scratch dirs and, unless network is declared,
  refuses TCP, and seccomp (:mod:`radcloud.run.sockets`) any internet socket; a
  root parent drops the child to uid 65534 when that uid can reach the
  plugin's code, and the inputs are made read-only with chmod.

The environment is built from scratch: the plugin never sees radcloud's
settings (S3 keys, Redis URL).

When is a run ``oom``? Only when memory was the cause:

* the plugin died of SIGKILL and the container's cgroup counted an OOM kill
  while it ran (:mod:`radcloud.run.memory`); a SIGKILL without one is a ``crash``
  that says so (and says when the count cannot be read);
* or it exited non-zero with ``MemoryError``/``Unable to allocate``/``Cannot
  allocate memory``/``bad_alloc``/``out of memory`` in its last output lines
  (an allocation the plugin itself saw fail).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from radcloud.run import landlock, sockets
from radcloud.run import memory as container_memory

NOBODY = 65534
TAIL_LINES = 40
TAIL_BYTES = 8192
MAX_LINE = 4096
_OOM_RE = re.compile(r"MemoryError|Unable to allocate|Cannot allocate memory|bad_alloc|out of memory",
                     re.IGNORECASE)


@dataclasses.dataclass
class Limits:
    """What a plugin run may use. ``None`` = no limit of that kind."""

    timeout_s: float = 300.0
    memory_bytes: int | None = None
    cpus: float | None = None
    network: bool = False
    max_output_bytes: int = 2 * 1024**3
    max_output_files: int = 20_000
    max_open_files: int = 1024

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class RunResult:
    exit_code: int | None
    reason: str  # ok | timeout | oom | crash | cancelled | error
    message: str
    duration_s: float
    tail: str
    killed_for: str = ""  # why radcloud killed it: timeout | cancelled | output | ""
    memory_peak_bytes: int | None = None  # the container's peak (runner + plugin), when readable
    sandbox: str = ""  # how the plugin was confined (:func:`run`)


@functools.cache
def bwrap_works() -> bool:
    """Whether bubblewrap can create its namespaces here (probed once)."""
    exe = shutil.which("bwrap")
    if not exe:
        return False
    try:
        probe = subprocess.run([exe, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/",
                                "--proc", "/proc", "--dev", "/dev", "true"],
                               capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def make_read_only(root: str | os.PathLike[str]) -> None:
    """chmod a tree to r-x dirs / r-- files (the fallback when no bwrap)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o444)
        os.chmod(dirpath, 0o555)


def _preexec(limits: Limits, fsize: int, jail: "_Confinement") -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec
        cpu = int(limits.timeout_s * max(1.0, limits.cpus or 1.0)) + 5
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.max_open_files, limits.max_open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if jail.drop_to is not None:
            os.setgroups([])
            os.setgid(jail.drop_to)
            os.setuid(jail.drop_to)
        if jail.rules is not None:  # last: they also forbid what the steps above need
            jail.rules.restrict()
        if jail.no_sockets is not None:
            jail.no_sockets.load()
    return apply


def _env(extra: dict[str, str], limits: Limits, scratch: str) -> dict[str, str]:
    threads = str(max(1, int(limits.cpus or 1)))
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LANG": "C.UTF-8",
           "HOME": scratch, "TMPDIR": scratch, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
           # One BLAS/OpenMP thread per granted core: the container gets a CPU
           # share, and each pool thread holds its own buffers.
           "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    if sys.flags.no_site and os.environ.get("PYTHONPATH"):
        # Without site (python -S, localwhisk's isolated images) the import path is
        # PYTHONPATH alone: the plugin's interpreter (registry.python_argv) needs it too.
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env.update(extra)
    return env


def _code_paths(argv: list[str]) -> list[str]:
    """The code the plugin needs: the interpreter's prefix (a venv), the
    radcloud checkout (editable installs point there), the plugin's own files
    (argv's absolute paths) and PYTHONPATH."""
    checkout = Path(__file__).resolve().parents[2]  # the radcloud this runner comes from
    wanted = [sys.prefix, str(checkout), *(a for a in argv if os.path.isabs(a))]
    wanted += [p for p in os.environ.get("PYTHONPATH", "").split(":") if p]
    return sorted({os.path.abspath(p) for p in wanted if os.path.exists(p)})


def _hidden_by_tmpfs(argv: list[str]) -> list[str]:
    """Code the plugin needs that lives under /tmp (a CI clone, a venv there).

    The private /tmp would hide it; it is bound back read-only (a plugin
    file's folder, not the file alone).
    """
    keep = {os.path.dirname(p) if os.path.isfile(p) else p for p in _code_paths(argv)
            if (p + "/").startswith("/tmp/")}
    return [p for p in sorted(keep) if not any(p.startswith(q + "/") for q in keep)]


def _bwrap_argv(argv: list[str], *, read_only: list[str], writable: list[str], cwd: str,
                network: bool) -> list[str]:
    cmd = [shutil.which("bwrap") or "bwrap", "--die-with-parent", "--new-session", "--unshare-all"]
    if network:
        cmd.append("--share-net")
    cmd += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for path in _hidden_by_tmpfs(argv):
        cmd += ["--ro-bind", path, path]
    for path in read_only:
        cmd += ["--ro-bind", path, path]
    for path in writable:
        cmd += ["--bind", path, path]
    # /tmp is a private tmpfs made read-only once the binds are in place, so
    # a write beside the output dir fails instead of landing somewhere.
    cmd += ["--remount-ro", "/tmp"]
    cmd += ["--uid", str(NOBODY), "--gid", str(NOBODY), "--chdir", cwd, "--"]
    return cmd + argv


def _dir_usage(path: str, stop_after: int) -> tuple[int, int]:
    """(bytes, files) under path, without following symlinks."""
    total = count = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
            count += 1
            if count > stop_after:
                return total, count
    return total, count


@dataclasses.dataclass
class _Confinement:
    cmd: list[str]  # argv, or bubblewrap's around it
    drop_to: int | None = None  # the uid a root parent drops the child to
    rules: landlock.Ruleset | None = None  # applied in the child
    no_sockets: Any = None  # a seccomp filter loaded in the child (radcloud.run.sockets)
    how: str = ""  # RunResult.sandbox


def _confine(argv: list[str], *, cwd: str, read_only: list[str], writable: list[str], limits: Limits,
             use_bwrap: bool) -> _Confinement:
    """Bubblewrap, or the fallback (module docstring); OSError when Landlock refuses a rule."""
    if use_bwrap:
        return _Confinement(_bwrap_argv(argv, read_only=read_only, writable=writable, cwd=cwd,
                                        network=limits.network),
                            how=f"bubblewrap: read-only root, private /tmp, uid {NOBODY}, "
                                + ("network" if limits.network else "no network"))
    root = os.geteuid() == 0  # else the runner is unprivileged already (an action's container)
    unreachable = _unreachable_by_others(argv, read_only + writable) if root else ""
    jail = _Confinement(argv, drop_to=NOBODY if (root and not unreachable) else None)
    if jail.drop_to is not None:
        for path in writable:
            os.chown(path, NOBODY, NOBODY)
        for path in read_only + writable:
            _allow_traverse(path)
    jail.rules = landlock.build(writable, network=limits.network)
    parts = [jail.rules.describe() if jail.rules else
             "no Landlock on this kernel: writes limited by file permissions"]
    if not limits.network:
        jail.no_sockets, why_not = sockets.filter_or_reason()
        parts.append("no internet sockets (seccomp)" if jail.no_sockets is not None else why_not)
    parts.append(f"uid {NOBODY}" if jail.drop_to is not None else
                 f"uid {os.geteuid()}" + (f" (uid {NOBODY} cannot reach {unreachable})" if unreachable else ""))
    jail.how = "; ".join(parts)
    return jail


def run(argv: list[str], *, cwd: str, env: dict[str, str], limits: Limits, read_only: list[str],
        writable: list[str], on_line: Callable[[str], None] = lambda line: None,
        cancelled: Callable[[], bool] = lambda: False, use_bwrap: bool | None = None,
        watch_dir: str | None = None, poll_s: float = 0.1,
        memory: container_memory.ContainerMemory | None = None) -> RunResult:
    """Run ``argv`` to completion under ``limits``; never raises for the child's faults.

    Parameters:
        cwd: working and scratch dir; must be in ``writable``.
        read_only / writable: the only dirs the plugin may read-bind / write
            (beyond the read-only system) when bubblewrap is used.
        on_line: called for each output line (stdout+stderr merged).
        cancelled: polled about twice a second; True kills the run.
        watch_dir: the output dir whose size is held to the output limits.
        memory: the container's memory cgroup (default: found from /proc),
            read to tell an OOM kill from another SIGKILL.
    """
    memory = container_memory.find() if memory is None else memory
    use_bwrap = bwrap_works() if use_bwrap is None else use_bwrap
    try:
        jail = _confine(argv, cwd=cwd, read_only=read_only, writable=writable, limits=limits, use_bwrap=use_bwrap)
    except OSError as exc:
        return RunResult(None, "error", f"cannot confine the plugin: Landlock refused a rule ({exc}); "
                         "docs/plugins.md, 'The sandbox'", 0.0, "")
    how = jail.how
    fsize = limits.max_output_bytes + 1
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    t0 = time.monotonic()
    oom_before = memory.oom_kills()
    try:
        proc = subprocess.Popen(jail.cmd, cwd=cwd, env=_env(env, limits, cwd), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_preexec(limits, fsize, jail))
    except OSError as exc:
        return RunResult(None, "error", f"cannot start plugin {argv[0]}: {exc.strerror or exc}", 0.0, "",
                         sandbox=how)
    except subprocess.SubprocessError as exc:  # the limits could not be applied in the child
        return RunResult(None, "error", f"cannot start plugin: applying its limits failed ({exc}); "
                         f"limits: {limits.to_dict()}; sandbox: {how}", 0.0, "", sandbox=how)
    finally:
        if jail.rules is not None:
            jail.rules.close()
    reader = threading.Thread(target=_pump, args=(proc, tail, on_line), daemon=True)
    reader.start()
    killed_for, last_check = "", 0.0
    while proc.poll() is None:
        try:
            proc.wait(timeout=poll_s)  # returns the moment the plugin exits (a sleep would not)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if now - t0 > limits.timeout_s:
            killed_for = "timeout"
        elif now - last_check >= 0.5:
            last_check = now
            if cancelled():
                killed_for = "cancelled"
            elif watch_dir:
                size, files = _dir_usage(watch_dir, limits.max_output_files)
                if size > limits.max_output_bytes or files > limits.max_output_files:
                    killed_for = "output"
        if killed_for:
            _kill(proc)
            break
    proc.wait()
    reader.join(timeout=5)
    duration = time.monotonic() - t0
    text = _tail_text(tail)
    code = proc.returncode
    oom_after = memory.oom_kills()
    oom = None if oom_before is None or oom_after is None else oom_after > oom_before
    reason, message = _classify(code, killed_for, text, limits, use_bwrap,
                                _MemoryFacts(oom, memory.limit(), memory.peak()))
    return RunResult(code, reason, message, duration, text, killed_for, memory.peak(), how)


def _unreachable_by_others(argv: list[str], granted: list[str]) -> str:
    """The first piece of the plugin's code uid 65534 could not run or read
    ("" when it can reach all); the shard's own dirs (``granted``) are made
    reachable by :func:`run` and not checked."""
    if not others_can_run(argv[0]):
        return argv[0]
    for path in _code_paths(argv):
        if any(path == g or path.startswith(g.rstrip("/") + "/") for g in granted):
            continue
        if not all(others_can_read(p) for p in {path, os.path.realpath(path)}):
            return path
    return ""


def others_can_read(path: str) -> bool:
    """o+r on a file (o+x on a folder), and o+x on every parent."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return bool(mode & (0o001 if os.path.isdir(path) else 0o004)) and _others_can_search(os.path.dirname(path))


def others_can_run(program: str) -> bool:
    """Whether uid 65534 could execute ``program``: o+x on it and every parent,
    along the path as given (exec walks that one) and along its target.

    An interpreter under /root (pyenv) is not, nor a venv's link to
    /usr/bin/python3.11 inside a checkout under a private folder (mktemp -d):
    then the fallback cannot drop privileges and runs the plugin as the current
    user, confined by Landlock and rlimits only.
    """
    found = shutil.which(program) or program
    return all(_others_can_search(path) for path in {os.path.abspath(found), os.path.realpath(found)})


def _others_can_search(path: str) -> bool:
    while path and path != "/":
        try:
            if not os.stat(path).st_mode & 0o001:
                return False
        except OSError:
            return False
        path = os.path.dirname(path)
    return True


def _allow_traverse(path: str) -> None:
    """Give 'others' search permission on the parents so uid 65534 can reach path."""
    parent = os.path.dirname(os.path.abspath(path))
    while parent and parent != "/":
        mode = os.stat(parent).st_mode
        if not mode & 0o001:
            os.chmod(parent, (mode & 0o7777) | 0o001)
        parent = os.path.dirname(parent)


def _pump(proc: subprocess.Popen, tail: collections.deque, on_line: Callable[[str], None]) -> None:
    assert proc.stdout is not None
    for raw in iter(lambda: proc.stdout.readline(MAX_LINE), b""):
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        tail.append(line)
        on_line(line)
    proc.stdout.close()


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail_text(tail: collections.deque) -> str:
    text = "\n".join(tail)
    return text[-TAIL_BYTES:]


def _signal_of(code: int | None, via_bwrap: bool) -> int | None:
    if code is None:
        return None
    if code < 0:
        return -code
    if via_bwrap and 128 < code <= 128 + 64:  # bwrap reports a signalled child as 128+N
        return code - 128
    return None


@dataclasses.dataclass(frozen=True)
class _MemoryFacts:
    oom_killed: bool | None  # None: the container's OOM count cannot be read
    limit: int | None
    peak: int | None

    def describe(self) -> str:
        def mib(n: int | None) -> str:
            return "?" if n is None else f"{n / 2**20:.0f} MiB"
        if self.peak is None and self.limit is None:
            return "container memory unknown"
        return f"container peak {mib(self.peak)} of its {mib(self.limit) if self.limit else 'unlimited'} limit"


_MEMORY_ADVICE = ("raise max_memory_limit and redeploy (docs/plugins.md) or lower shard_size")


def _signal_name(sig: int) -> str:
    try:
        return f"signal {sig} ({signal.Signals(sig).name})"
    except ValueError:
        return f"signal {sig}"


def _classify(code: int | None, killed_for: str, tail: str, limits: Limits,
              via_bwrap: bool, memory: _MemoryFacts = _MemoryFacts(None, None, None)) -> tuple[str, str]:
    if killed_for == "cancelled":
        return "cancelled", "cancelled by request"
    if killed_for == "timeout":
        return "timeout", f"plugin ran past its {limits.timeout_s:g} s wall-clock limit"
    if killed_for == "output":
        return "error", (f"output dir exceeded {limits.max_output_bytes} bytes or "
                         f"{limits.max_output_files} files")
    if code == 0:
        return "ok", "ok"
    sig = _signal_of(code, via_bwrap)
    # Python ignores SIGXFSZ, so a write past RLIMIT_FSIZE fails with EFBIG.
    if sig == signal.SIGXFSZ or "File too large" in tail:
        return "error", f"an output file exceeded {limits.max_output_bytes} bytes"
    if sig == signal.SIGXCPU:
        return "timeout", "plugin used up its CPU-time limit"
    if sig == signal.SIGKILL:
        if memory.oom_killed:
            return "oom", (f"plugin killed by the kernel's OOM killer at its action's memory limit "
                           f"({memory.describe()}); {_MEMORY_ADVICE}")
        why = ("no OOM kill was counted in its container" if memory.oom_killed is False else
               "whether memory was the cause cannot be told: no memory cgroup is readable here")
        blame = "something else on the host killed it" if memory.oom_killed is False else \
            "if not memory, something else on the host"
        return "crash", (f"plugin killed by {_signal_name(sig)}, not sent by radcloud; {why} "
                         f"({memory.describe()}); {blame}")
    if sig is None and _OOM_RE.search(tail):
        return "oom", (f"plugin could not allocate memory (its output reports it; {memory.describe()}); "
                       f"{_MEMORY_ADVICE}")
    if sig is not None:
        return "crash", f"plugin killed by {_signal_name(sig)}; see the output tail"
    return "crash", f"plugin exited with code {code}; see the output tail"
