"""The shard runner: the body of every plugin action.

One shard = one plugin run over a few staged objects. :func:`run_shard`
downloads the inputs into a private temp dir, runs the plugin as a ChRIS
CLI (``prog [options] inputdir outputdir``) inside :mod:`radcloud.run.sandbox`
with the descriptor's limits, uploads every output file (content type and
MD5), and reports the outcome through a :class:`Reporter`. The outcome is
reported from a ``finally`` guard, so every shard has one whatever happens,
and the return value is a small summary, never data.

Collaborators are injected: an object store (:mod:`radcloud.store.storage`'s
``ObjectStore`` in production, a dict-backed fake in tests) and a reporter
(``radcloud.work.jobs`` implements it on Redis).

The reporter protocol (stable; ``radcloud.work.jobs`` codes against it):

``running(shard_id, info)``
    once, first: the runner is up, before it looks up the plugin or fetches
    an input, so "running: fetching N inputs" shows while inputs download
    (on Slurm that is the moment the batch job starts, not after its
    downloads). ``info`` = ``{"job_id", "plugin", "n_inputs"}``. A
    notification: its errors are logged only (``started`` says it again).
``started(shard_id, info)``
    once, when the plugin is about to run (inputs fetched); ``info`` =
    ``{"job_id", "plugin", "version", "argv", "n_inputs", "limits"}``.
``progress(shard_id, done, total)``
    notifications while staging inputs and uploading outputs
    (``done``/``total`` count files). Many calls; errors are logged only.
``log(shard_id, line)``
    one plugin output line (stdout and stderr merged, decoded, no newline).
    Capped at :data:`MAX_LOG_LINES` per shard. Errors are logged only.
``finished(shard_id, outcome)``
    exactly once, from the guard. ``outcome`` (JSON-able dict)::

        {"job_id", "shard_id", "plugin",
         "status":    "finishedSuccessfully" | "finishedWithError" | "cancelled",
         "reason":    "ok" | "timeout" | "oom" | "crash" | "unprocessed" | "cancelled" | "error",
         "message":   short human text (no patient data),
         "exit_code": int | None,   # negative = killed by that signal
         "duration_s": float,       # whole shard, download to upload
         "run_s":      float,       # the plugin process alone
         "stderr_tail": str,        # last lines of the plugin's output
         "outputs":  [{"key", "size", "md5", "content_type"}, ...],
         "rejected": [{"path", "why"}, ...],   # outputs refused (escapes...)
         "bytes_out": int,
         "memory_peak_mib": float | None,  # the action container's peak (runner + plugin)
         "sandbox": str,            # how the plugin was confined (radcloud.run.sandbox)
         "warnings": int,           # input files the plugin did not process
         "file_reasons": [{"file", "reason"}, ...]}  # the first of them

    ``warnings`` and ``file_reasons`` come from the ``file-reasons.json`` a
    plugin writes (:mod:`radcloud.run.filereasons`): a shard that ends ``ok``
    with warnings is "succeeded with warnings"; a failed one says how many
    of its files were not processed and why the first was not.

``cancelled() -> bool``
    polled while inputs download and while the plugin runs; ``True`` kills
    the plugin (reason ``cancelled``).

``status`` values are CUBE's plugin-instance statuses so a ChRIS front end
can read them unchanged.

De-identification: a plugin whose descriptor declares ``radcloud.deid``
(see :mod:`radcloud.run.registry`) — and only such a plugin — gets the
``deid_secret`` setting in its environment and a private map dir beside
(never inside) the output dir. The re-identification map it writes there is
stored at ``deid-maps/<job>/<shard>.json`` (:data:`DEID_MAP_PREFIX`), which
no job's results list, before any output is uploaded; without the secret
such a shard fails before its plugin starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import mimetypes
import os
import posixpath
import shutil
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from radcloud.core.errors import BadRequest, ConfigError, RadcloudError, UpstreamError
from radcloud.store.layout import DEID_MAPS_ROOT

if TYPE_CHECKING:  # imported where used: the runner's first report goes out before them (see running())
    from radcloud.core.settings import Secret
    from radcloud.run.memory import ContainerMemory
    from radcloud.run.registry import Plugin, Registry

log = logging.getLogger(__name__)

STATUS_OK = "finishedSuccessfully"
STATUS_ERROR = "finishedWithError"
STATUS_CANCELLED = "cancelled"
REASONS = ("ok", "timeout", "oom", "crash", "unprocessed", "cancelled", "error")
MAX_LOG_LINES = 2000
DEADLINE_RESERVE_S = 10.0
DEADLINE_RESERVE_FRACTION = 0.2
DEFAULT_TIMEOUT_S = 300.0
DEID_MAP_PREFIX = DEID_MAPS_ROOT  # hospital-side: re-identification maps, never results
CHRISLINK = ".chrislink"  # ChRIS link files: followed by ChRIS, so never uploaded as outputs

_EXTRA_TYPES = {".dcm": "application/dicom", ".nii": "application/octet-stream",
                ".gz": "application/gzip", ".json": "application/json", ".csv": "text/csv",
                ".png": "image/png", ".txt": "text/plain", ".html": "text/html"}


class Reporter(Protocol):
    """Where a shard's life is recorded (see the module docstring)."""

    def running(self, shard_id: str, info: dict[str, Any]) -> None: ...
    def started(self, shard_id: str, info: dict[str, Any]) -> None: ...
    def progress(self, shard_id: str, done: int, total: int) -> None: ...
    def log(self, shard_id: str, line: str) -> None: ...
    def finished(self, shard_id: str, outcome: dict[str, Any]) -> None: ...
    def cancelled(self) -> bool: ...


class ObjectStoreLike(Protocol):
    """The part of ``radcloud.store.storage.ObjectStore`` a shard uses."""

    def get_to_file(self, key: str, path: str) -> Any: ...
    def put_file(self, key: str, path: str, content_type: str | None = None) -> Any: ...


@dataclasses.dataclass
class ShardSpec:
    """What one plugin invocation works on.

    ``inputs`` are object keys or ``http(s)://`` presigned URLs. Each lands
    in the input dir under its path relative to ``input_prefix`` (or its
    base name). ``limits`` may lower the descriptor's: ``timeout_s``,
    ``memory_bytes``, ``max_output_bytes``, ``max_output_files``.
    """

    job_id: str
    shard_id: str
    plugin: str
    params: dict[str, Any]
    inputs: list[str]
    output_prefix: str
    input_prefix: str = ""
    limits: dict[str, Any] = dataclasses.field(default_factory=dict)
    env: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ShardSpec":
        """Parse a spec; BadRequest names the first bad field."""
        for name in ("job_id", "shard_id", "plugin", "output_prefix"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise BadRequest(f"shard spec field {name!r} must be a non-empty string", field=name)
        inputs = data.get("inputs", [])
        if not isinstance(inputs, list) or not all(isinstance(i, str) and i for i in inputs):
            raise BadRequest("shard spec field 'inputs' must be a list of object keys or URLs",
                             field="inputs")
        for name in ("params", "limits", "env"):
            if not isinstance(data.get(name, {}), dict):
                raise BadRequest(f"shard spec field {name!r} must be an object", field=name)
        return cls(job_id=data["job_id"], shard_id=data["shard_id"], plugin=data["plugin"],
                   params=dict(data.get("params", {})), inputs=list(inputs),
                   output_prefix=data["output_prefix"], input_prefix=str(data.get("input_prefix", "")),
                   limits=dict(data.get("limits", {})),
                   env={str(k): str(v) for k, v in data.get("env", {}).items()})


class _Cancelled(Exception):
    pass


class _Notify:
    """Notifications (progress, log) never break the shard: errors are logged."""

    def __init__(self, reporter: Reporter, shard_id: str) -> None:
        self.reporter, self.shard_id, self.lines = reporter, shard_id, 0

    def running(self, info: dict[str, Any]) -> None:
        try:
            self.reporter.running(self.shard_id, info)
        except Exception:
            log.warning("reporter.running failed", exc_info=True)

    def progress(self, done: int, total: int) -> None:
        try:
            self.reporter.progress(self.shard_id, done, total)
        except Exception:
            log.warning("reporter.progress failed", exc_info=True)

    def log(self, line: str) -> None:
        self.lines += 1
        if self.lines > MAX_LOG_LINES:
            return
        try:
            self.reporter.log(self.shard_id, line)
        except Exception:
            log.warning("reporter.log failed", exc_info=True)

    def cancelled(self) -> bool:
        try:
            return bool(self.reporter.cancelled())
        except Exception:
            # Cannot tell: keep running rather than kill a good shard.
            log.warning("reporter.cancelled failed", exc_info=True)
            return False


def run_shard(spec: ShardSpec | Mapping[str, Any], *, store: ObjectStoreLike, reporter: Reporter,
              registry: Registry, workdir: str | None = None, use_bwrap: bool | None = None,
              fetch_url: Callable[[str, str], None] | None = None,
              default_timeout_s: float = DEFAULT_TIMEOUT_S,
              deadline: float | None = None, deid_secret: Secret | str | None = None,
              memory: ContainerMemory | None = None) -> dict[str, Any]:
    """Run one shard end to end and return a small summary.

    Parameters:
        spec: a :class:`ShardSpec` or its dict form.
        store: object store (``get_to_file``, ``put_file``).
        reporter: see the module docstring; ``finished`` is always called.
        registry: where the plugin and its descriptor are found.
        workdir: parent of the private temp dir (default: the system's).
        use_bwrap: force bubblewrap on/off; ``None`` = use it when it works.
        fetch_url: ``(url, path)`` downloader for presigned URLs.
        default_timeout_s: wall clock when the descriptor names none
            (``Settings.shard_timeout_s``).
        deadline: epoch seconds when the platform kills this activation
            (OpenWhisk's ``__OW_DEADLINE``). The plugin's wall clock is cut
            so the upload and the outcome still fit before it.
        deid_secret: the ``deid_secret`` setting; given only to plugins
            whose descriptor declares ``radcloud.deid``, which fail without it.
        memory: the container's memory cgroup (default: found from /proc),
            read to tell an OOM kill from another SIGKILL.

    Returns:
        ``{"job_id", "shard_id", "status", "reason", "exit_code",
        "n_outputs", "bytes_out", "duration_s", "memory_peak_mib"}``.
    """
    t0 = time.monotonic()
    raw_shard_id = spec.shard_id if isinstance(spec, ShardSpec) else str(spec.get("shard_id", "?"))
    raw_job_id = spec.job_id if isinstance(spec, ShardSpec) else str(spec.get("job_id", "?"))
    outcome: dict[str, Any] = {
        "job_id": raw_job_id, "shard_id": raw_shard_id,
        "plugin": spec.plugin if isinstance(spec, ShardSpec) else str(spec.get("plugin", "?")),
        "status": STATUS_ERROR, "reason": "error", "message": "shard did not start",
        "exit_code": None, "duration_s": 0.0, "run_s": 0.0, "stderr_tail": "",
        "outputs": [], "rejected": [], "bytes_out": 0, "memory_peak_mib": None,
        "sandbox": "", "warnings": 0, "file_reasons": [],
    }
    notify = _Notify(reporter, raw_shard_id)
    raw_inputs = spec.inputs if isinstance(spec, ShardSpec) else spec.get("inputs")
    # First, before the plugin lookup and the downloads: the shard shows running as soon as its
    # runner is up (the plugin's own start is reported by started(), below).
    notify.running({"job_id": raw_job_id, "plugin": outcome["plugin"],
                    "n_inputs": len(raw_inputs) if isinstance(raw_inputs, list) else 0})
    tmp = tempfile.mkdtemp(prefix="radcloud-shard-", dir=workdir)
    try:
        if not isinstance(spec, ShardSpec):
            spec = ShardSpec.from_dict(spec)
        plugin = registry.get(spec.plugin)
        params = plugin.validate(spec.params)
        _execute(spec, plugin, params, Path(tmp), store, reporter, notify, outcome,
                 use_bwrap, fetch_url or _fetch_url, default_timeout_s, deadline, deid_secret, memory)
    except _Cancelled:
        outcome.update(status=STATUS_CANCELLED, reason="cancelled", message="cancelled by request")
    except RadcloudError as exc:
        outcome.update(status=STATUS_ERROR, reason="error", message=exc.message)
    except Exception as exc:  # the guard: an outcome is recorded whatever happens
        log.exception("shard %s failed", raw_shard_id)
        outcome.update(status=STATUS_ERROR, reason="error", message=runner_error(exc))
    finally:
        outcome["duration_s"] = round(time.monotonic() - t0, 3)
        _remove_tree(tmp)
        try:
            reporter.finished(raw_shard_id, outcome)
        except Exception:
            log.exception("reporter.finished failed for shard %s", raw_shard_id)
    return {k: outcome[k] for k in ("job_id", "shard_id", "status", "reason", "exit_code",
                                    "bytes_out", "duration_s", "memory_peak_mib")} | {"n_outputs": len(outcome["outputs"])}


def _execute(spec: ShardSpec, plugin: Plugin, params: dict[str, Any], tmp: Path,
             store: ObjectStoreLike, reporter: Reporter, notify: _Notify, outcome: dict[str, Any],
             use_bwrap: bool | None, fetch_url: Callable[[str, str], None],
             default_timeout_s: float, deadline: float | None,
             deid_secret: Secret | str | None = None, memory: ContainerMemory | None = None) -> None:
    from radcloud.run import filereasons, sandbox

    indir, outdir, scratch = tmp / "incoming", tmp / "outgoing", tmp / "scratch"
    for d in (indir, outdir, scratch):
        d.mkdir()
    # Checked before any download: a de-identifier without its key must not run at all.
    params, secret_env, map_dir = deid_setup(plugin, params, deid_secret, tmp / "reid-map")
    _download(spec, store, indir, notify, fetch_url)
    sandbox.make_read_only(indir)

    limits = plugin.limits(spec.limits, default_timeout_s=default_timeout_s)
    if deadline is not None:
        # Keep a reserve for uploading and reporting: an activation killed by
        # the platform records nothing, a plugin stopped by us records "timeout".
        left = deadline - time.time()
        usable = left - max(DEADLINE_RESERVE_S, DEADLINE_RESERVE_FRACTION * left)
        if usable < 1:
            raise RadcloudError(f"only {left:.0f} s left before the activation deadline; not starting")
        limits.timeout_s = min(limits.timeout_s, usable)
    argv = plugin.argv(params, None if plugin.type == "fs" else str(indir), str(outdir))
    env = {"CHRIS_JID": spec.job_id, "CHRIS_PLG_INST_ID": spec.shard_id,
           "RADCLOUD_JOB_ID": spec.job_id, "RADCLOUD_SHARD_ID": spec.shard_id, **spec.env,
           **secret_env}  # last: a payload's env cannot replace the secret
    reporter.started(spec.shard_id, {"job_id": spec.job_id, "plugin": plugin.name,
                                     "version": plugin.version, "argv": plugin.display_argv(argv),
                                     "n_inputs": len(spec.inputs), "limits": limits.to_dict()})
    writable = [str(outdir), str(scratch)] + ([str(map_dir)] if map_dir else [])
    result = sandbox.run(argv, cwd=str(scratch), env=env, limits=limits, read_only=[str(indir)],
                         writable=writable, on_line=notify.log,
                         cancelled=notify.cancelled,
                         use_bwrap=use_bwrap, watch_dir=str(outdir), memory=memory)
    if result.memory_peak_bytes is not None:
        outcome["memory_peak_mib"] = round(result.memory_peak_bytes / 2**20, 1)
    outcome.update(exit_code=result.exit_code, run_s=round(result.duration_s, 3), sandbox=result.sandbox,
                   stderr_tail=result.tail, reason=result.reason, message=result.message)
    if map_dir is not None:
        # Before the outputs: remapped outputs without their stored map could
        # never be linked back to the patient.
        store_reid_maps(store, map_dir, spec.job_id, spec.shard_id)
    if result.reason == "cancelled":
        raise _Cancelled()
    filereasons.into_outcome(outdir, outcome, notify.log)
    files, rejected = collect_outputs(outdir)
    outcome["rejected"] = rejected
    total = sum(path.stat().st_size for _, path in files)
    if result.killed_for == "output" or total > limits.max_output_bytes or len(files) > limits.max_output_files:
        # An output flood is not uploaded at all: a partial flood is no result.
        outcome.update(reason="error", message=(
            f"output exceeded the limits, nothing uploaded: {len(files)} files, {total} bytes "
            f"(limits {limits.max_output_files} files, {limits.max_output_bytes} bytes)"))
        return
    # Upload even after a failure: partial outputs and logs help the user.
    keys = [posixpath.join(spec.output_prefix.rstrip("/"), rel) for rel, _ in files]
    if hasattr(store, "prepare_uploads"):  # a store of presigned URLs (radcloud.work.shardchannel): one ask
        store.prepare_uploads(keys)
    for i, ((rel, path), key) in enumerate(zip(files, keys), 1):
        ctype = content_type(rel)
        info = store.put_file(key, str(path), content_type=ctype)
        size = int(getattr(info, "size", path.stat().st_size))
        md5 = getattr(info, "md5", None) or _md5(path)
        outcome["outputs"].append({"key": key, "size": size, "md5": md5, "content_type": ctype})
        outcome["bytes_out"] += size
        notify.progress(i, len(files))
    if result.reason == "ok":
        outcome["status"] = STATUS_OK
        notes = ([f"{outcome['warnings']} input file(s) not processed, first: {filereasons.first(outcome)}"]
                 if outcome["warnings"] else []) + ([f"{len(rejected)} output(s) refused"] if rejected else [])
        if notes:
            outcome["message"] = "ok; " + "; ".join(notes)
    elif outcome["warnings"] and result.reason == "crash" and (result.exit_code or 0) > 0 \
            and outcome.get("processed") == 0:
        # Not a crash: the plugin ran, looked at every file and said why it could use none.
        outcome.update(reason="unprocessed", message=(
            f"plugin exited with code {result.exit_code}: none of its {outcome['warnings']} input file(s) "
            f"could be processed, first: {filereasons.first(outcome)}"))
    elif outcome["warnings"]:
        outcome["message"] = (f"{outcome['message']}; {outcome['warnings']} input file(s) not processed, "
                              f"first: {filereasons.first(outcome)}")


def runner_error(exc: BaseException) -> str:
    """The outcome message for an unexpected runner failure: what happened and what to do.

    Never a bare class name. The texts of exceptions whose wording is the
    system's (OSError: errno text and path; a subprocess that could not
    start) are kept. Any other exception's text may quote data the runner was
    handling (a DICOM value, a patient's name), so it stays in the activation
    log; the message names the class and the line of radcloud that raised it.
    """
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return (f"shard runner error: {type(exc).__name__}: {exc.strerror or exc}{where}; check the "
                "free disk space and permissions of the action's temp dir, then retry the job")
    if isinstance(exc, subprocess.SubprocessError):
        return (f"shard runner error: cannot start the plugin process ({type(exc).__name__}: {exc}); "
                "its sandbox limits could not be applied (docs/plugins.md, 'Resources and limits')")
    frames = traceback.extract_tb(exc.__traceback__)
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    ours = [f for f in frames if os.path.abspath(f.filename).startswith(package)] or frames
    where = ""
    if ours:
        frame = ours[-1]
        where = f" at {posixpath.basename(frame.filename)}:{frame.lineno} in {frame.name}"
        where += f" (`{frame.line.strip()[:120]}`)" if frame.line else ""
    return (f"shard runner error: {type(exc).__name__}{where}; a fault in radcloud's shard runner, "
            "not in the plugin: the activation's log has the full traceback; report it with that")


def deid_setup(plugin: Plugin, params: dict[str, Any], deid_secret: Secret | str | None,
               map_dir: Path) -> tuple[dict[str, Any], dict[str, str], Path | None]:
    """Params, extra env and map dir for a plugin that declares ``radcloud.deid``.

    Other plugins get nothing (the secret stays out of their environment).
    The runner sets the secret-variable and map-dir parameters itself,
    overriding the caller's: a caller-chosen variable could hold a known
    key, a caller-chosen map dir could put the map among the outputs.

    Raises:
        ConfigError: the plugin needs the secret and ``deid_secret`` is unset.
    """
    from radcloud.core.settings import Secret
    from radcloud.run.registry import DEID_SECRET_ENV

    deid = plugin.deid
    if deid is None:
        return params, {}, None
    secret = deid_secret.reveal() if isinstance(deid_secret, Secret) else (deid_secret or "")
    if not secret:
        raise ConfigError(f"missing setting: deid_secret (or RADCLOUD_DEID_SECRET); plugin {plugin.name} "
                          "needs it to de-identify", field="deid_secret")
    map_dir.mkdir()
    params = {**params, deid["secret_param"]: DEID_SECRET_ENV, deid["map_param"]: str(map_dir)}
    if deid.get("allow_param"):  # the admin's allow-list, from the deployed descriptor only
        params[deid["allow_param"]] = ",".join(deid.get("allow_burned_in") or [])
    return params, {DEID_SECRET_ENV: secret}, map_dir


def reid_map_key(job_id: str, shard_id: str, n: int = 0) -> str:
    """``deid-maps/<job>/<shard>.json`` (``-<n>`` for a second map of one shard)."""
    clean = [(safe_relpath(part) or "_").replace("/", "_") for part in (job_id, shard_id)]
    return f"{DEID_MAP_PREFIX}{clean[0]}/{clean[1]}{f'-{n}' if n else ''}.json"


def store_reid_maps(store: ObjectStoreLike, map_dir: Path, job_id: str, shard_id: str) -> list[str]:
    """Upload the re-identification map(s) a plugin wrote; returns their keys."""
    keys = []
    for n, path in enumerate(sorted(p for p in map_dir.iterdir() if p.is_file() and not p.is_symlink())):
        key = reid_map_key(job_id, shard_id, n)
        store.put_file(key, str(path), content_type="application/json")
        keys.append(key)
    if keys:
        log.info("shard %s: re-identification map stored hospital-side (%d file(s))", shard_id, len(keys))
    return keys


def _download(spec: ShardSpec, store: ObjectStoreLike, indir: Path, notify: _Notify,
              fetch_url: Callable[[str, str], None]) -> None:
    used: set[str] = set()
    total = len(spec.inputs)
    for i, ref in enumerate(spec.inputs, 1):
        if notify.cancelled():
            raise _Cancelled()
        rel = _input_name(ref, spec.input_prefix, used)
        dest = indir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if ref.startswith(("http://", "https://")):
            fetch_url(ref, str(dest))
        else:
            store.get_to_file(ref, str(dest))
        notify.progress(i, total)


def _input_name(ref: str, prefix: str, used: set[str]) -> str:
    """A safe relative path for an input; collisions get a numeric suffix."""
    if ref.startswith(("http://", "https://")):
        name = ref.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "input"
    elif prefix and ref.startswith(prefix):
        name = ref[len(prefix):]
    else:
        name = posixpath.basename(ref) or "input"
    rel = safe_relpath(name) or "input"
    base, n = rel, 1
    while rel in used:
        stem, dot, ext = base.rpartition(".")
        rel = f"{stem}-{n}.{ext}" if dot and stem else f"{base}-{n}"
        n += 1
    used.add(rel)
    return rel


def safe_relpath(name: str) -> str | None:
    """Normalise a path to a clean relative POSIX path, or None if it escapes.

    Refuses absolute paths, ``..`` segments, empty names and control
    characters — an output key must stay under the shard's prefix.
    """
    name = name.replace("\\", "/")
    if name.startswith("/") or any(ord(c) < 32 for c in name):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def collect_outputs(outdir: Path) -> tuple[list[tuple[str, Path]], list[dict[str, str]]]:
    """Regular files under ``outdir`` that may be uploaded, and those refused.

    Symlinks are refused unless they resolve inside ``outdir`` (then the
    target's bytes are uploaded under the link's name); special files are
    refused. Directory symlinks are not followed, so a link cannot walk the
    upload out of the output dir. ``.chrislink`` files are refused: ChRIS
    follows them to other storage paths, so one in a plugin's outputs could
    hand a user another user's files (pfcon drops them for the same reason).
    """
    root = outdir.resolve()
    files: list[tuple[str, Path]] = []
    rejected: list[dict[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(outdir, followlinks=False):
        for d in list(dirnames):
            if os.path.islink(os.path.join(dirpath, d)):
                dirnames.remove(d)
                rejected.append({"path": _rel(os.path.join(dirpath, d), outdir), "why": "directory symlink"})
        for fname in sorted(filenames):
            path = Path(dirpath, fname)
            rel = _rel(str(path), outdir)
            clean = safe_relpath(rel)
            if clean is None:
                rejected.append({"path": rel, "why": "unsafe name"})
                continue
            if fname.endswith(CHRISLINK):
                rejected.append({"path": clean, "why": "a ChRIS link file (.chrislink) is never an output"})
                continue
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root) or not target.is_file():
                    rejected.append({"path": clean, "why": "symlink outside the output dir"})
                    continue
            elif not path.is_file():
                rejected.append({"path": clean, "why": "not a regular file"})
                continue
            files.append((clean, path))
    files.sort()
    return files, rejected


def _rel(path: str, outdir: Path) -> str:
    return os.path.relpath(path, outdir).replace(os.sep, "/")


def content_type(name: str) -> str:
    lowered = name.lower()
    if lowered.endswith(".nii.gz"):
        return "application/gzip"
    ext = posixpath.splitext(lowered)[1]
    return _EXTRA_TYPES.get(ext) or mimetypes.guess_type(lowered)[0] or "application/octet-stream"


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _remove_tree(path: str) -> None:
    def make_writable(func: Callable[..., Any], target: str, _exc: Any) -> None:
        os.chmod(os.path.dirname(target), 0o700)
        func(target)
    try:
        shutil.rmtree(path, onerror=make_writable)
    except OSError:
        log.warning("could not remove shard temp dir %s", path)


def _fetch_url(url: str, path: str, session: Any = None) -> None:
    """Download an input given as a presigned URL (with requests, radcloud's one HTTP client;
    ``session``: one that keeps its connections, for many inputs)."""
    import requests

    try:
        with (session or requests).get(url, stream=True, timeout=60) as resp:
            resp.raise_for_status()
            with open(path, "wb") as out:
                for block in resp.iter_content(1 << 20):
                    out.write(block)
    except requests.RequestException as exc:  # the URL (its signature) stays out of the message
        status = getattr(exc.response, "status_code", None)
        raise UpstreamError(f"could not download an input from its presigned URL "
                            f"({f'HTTP {status}' if status else type(exc).__name__}); an expired URL "
                            "answers 403: dispatch the job again") from None
