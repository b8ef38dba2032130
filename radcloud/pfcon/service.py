"""The four pfcon jobs (copy, plugin, upload, delete) on radcloud's machinery.

In-network S3 mode: ChRIS and radcloud reach the same S3 store. For one
ChRIS job id (``jid``):

* **copy** copies every object under ChRIS's ``input_dirs`` (``.chrislink``
  objects followed, as pfcon's copy worker does) from ChRIS's bucket to
  ``pfcon/key-<jid>/incoming/`` in radcloud's bucket and writes a staging
  manifest at ``pfcon/key-<jid>/manifest.json`` — the ``prefixes`` input
  kind of :mod:`radcloud.work.staging`, so dispatch treats it like a staged series;
* **plugin** maps ``image`` to a registered plugin, turns CUBE's ``args``
  back into parameters and runs it through :class:`radcloud.work.dispatch.Dispatcher`
  (one shard: a ChRIS plugin sees its whole input dir; the result cache applies);
* **upload** copies the job's outputs to ``job_output_path`` in ChRIS's bucket;
* **delete** removes ``pfcon/key-<jid>/`` (the results stay: they feed the cache).

Copy, upload and delete run inside the request (server-side work bounded
by :data:`MAX_FILES`), so they answer already finished; the plugin job is
asynchronous and its status is read from the job store on every poll.
What each job did is kept in one Redis hash per jid (``P:pfcon:<jid>``).
Ordering is enforced with 409 and every POST is idempotent, as in pfcon.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from radcloud import __version__
from radcloud.core.errors import BadRequest, Conflict, NotFound, PayloadTooLarge, RadcloudError
from radcloud.pfcon import protocol as P

log = logging.getLogger(__name__)

KINDS = ("copy", "plugin", "upload", "delete")
MAX_FILES = 5000
MAX_LINK_DEPTH = 5
PLACEHOLDER = ".radcloud-empty"
RECORD_TTL_S = 14 * 24 * 3600
BUSY_TTL_S = 330  # the pfcon action's 300 s timeout, and a margin
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_SECRET_ENV = frozenset({"CHRIS_USER_TOKEN"})


def staging_prefix(jid: str) -> str:
    return f"pfcon/key-{jid}/"


def stream_copy(src: Any, src_key: str, dst: Any, dst_key: str, size: int, md5: str) -> Any:
    """Copy one object between two ObjectStores through this process, MD5-checked."""
    stream = src.open(src_key)
    try:
        return dst.put_stream(dst_key, stream, size, md5=md5 if _HEX32.match(md5 or "") else None)
    finally:
        stream.close()
        release = getattr(stream, "release_conn", None)
        if release:
            release()


class Records:
    """What each pfcon job of a jid did: one Redis hash, one JSON field per kind."""

    def __init__(self, redis: Any, *, prefix: str = "radcloud") -> None:
        self.r, self.prefix = redis, prefix

    def _key(self, jid: str) -> str:
        return f"{self.prefix}:pfcon:{jid}"

    def get(self, jid: str, kind: str) -> dict[str, Any] | None:
        raw = self.r.hget(self._key(jid), kind)
        return json.loads(raw) if raw else None

    def put(self, jid: str, kind: str, record: dict[str, Any]) -> None:
        self.r.hset(self._key(jid), kind, json.dumps(record))
        self.r.expire(self._key(jid), RECORD_TTL_S)

    def drop(self, jid: str, kind: str) -> None:
        self.r.hdel(self._key(jid), kind)

    # One request at a time works on a (jid, kind): CUBE retries a POST whose
    # answer was slow, and two copies into one prefix would undo each other.
    def claim(self, jid: str, kind: str, ttl_s: int = BUSY_TTL_S) -> bool:
        return bool(self.r.set(f"{self._key(jid)}:busy:{kind}", "1", nx=True, ex=ttl_s))

    def held(self, jid: str, kind: str) -> bool:
        return bool(self.r.exists(f"{self._key(jid)}:busy:{kind}"))

    def release(self, jid: str, kind: str) -> None:
        self.r.delete(f"{self._key(jid)}:busy:{kind}")


class PfconService:
    """pfcon's jobs over injected collaborators (socket-free in unit tests).

    Parameters:
        records: :class:`Records`.
        store: radcloud's bucket (``radcloud.store.storage.ObjectStore``).
        chris: ChRIS's bucket (may be the same store).
        jobs, results, registry: the job store, results and plugin registry.
        dispatcher: ``() -> Dispatcher`` (made lazily: it needs the OpenWhisk client).
        finaliser: ``(job_id) -> state`` for cancelled jobs.
        executors: ``(name) -> Executor | None``: a cancelled job's units are stopped where they can
            be (Slurm's scancel), as the status action's cancel does.
        images: extra ``image -> plugin name`` mappings for wrapped ChRIS images.
    """

    def __init__(self, records: Records, store: Any, chris: Any, *, jobs: Any, results: Any,
                 registry: Any, dispatcher: Callable[[], Any], finaliser: Callable[[str], Any] | None = None,
                 executors: Callable[[str], Any] = lambda name: None, images: Mapping[str, str] | None = None,
                 copy: Callable[..., Any] = stream_copy, clock: Callable[[], float] = time.time) -> None:
        self.records, self.store, self.chris = records, store, chris
        self.jobs, self.results, self.registry = jobs, results, registry
        self.dispatcher, self.finaliser, self.executors = dispatcher, finaliser, executors
        self.images = dict(images or {})
        self.copy_object, self.clock = copy, clock

    # -- server info ---------------------------------------------------------
    @staticmethod
    def server_info() -> dict[str, Any]:
        return {"server_version": f"6.0.0+radcloud.{__version__}", "pfcon_innetwork": True,
                "storage_env": "s3", "requires_copy_job": True, "requires_upload_job": True,
                "container_env": "openwhisk", "compute_volume_type": "s3"}

    # -- copy ----------------------------------------------------------------
    def copy(self, job: P.CopyJob) -> dict[str, Any]:
        existing = self.records.get(job.jid, "copy")
        if existing and existing["status"] == "finishedSuccessfully":
            return self._compute(job.jid, existing)  # idempotent
        plugin = self.records.get(job.jid, "plugin")
        if plugin and self._plugin_view(job.jid, plugin)["status"] in P.ACTIVE:
            raise Conflict(f"job {job.jid}: the plugin job is still running; a new copy would change "
                           "its inputs", field="jid")
        if not self.records.claim(job.jid, "copy"):
            return self._in_flight(job.jid, "copy", existing)
        try:
            self.records.put(job.jid, "copy", {"status": "started", "message": "copying", "timestamp": ""})
            self.records.put(job.jid, "copy", self._copy_record(job))
        finally:
            self.records.release(job.jid, "copy")
        return self._compute(job.jid, self.records.get(job.jid, "copy") or {"status": "undefined"})

    def _copy_record(self, job: P.CopyJob) -> dict[str, Any]:
        started = self.clock()
        try:
            n, size = self._stage(job)
            record = {"status": "finishedSuccessfully", "timestamp": P.iso(self.clock()),
                      "message": f"copied {n} files ({size} bytes) from {len(job.input_dirs)} input dir(s) "
                                 f"in {self.clock() - started:.1f} s",
                      "input_dirs": job.input_dirs, "output_dir": job.output_dir, "files": n}
        except RadcloudError as exc:
            log.info("copy job %s failed: %s", job.jid, exc.message)
            record = {"status": "finishedWithError", "timestamp": P.iso(self.clock()),
                      "message": f"copy failed: {exc.message}", "input_dirs": job.input_dirs}
        return record

    def _stage(self, job: P.CopyJob) -> tuple[int, int]:
        sources = self._gather(job.input_dirs)
        incoming = staging_prefix(job.jid) + "incoming/"
        self.store.delete_prefix(staging_prefix(job.jid))  # a retried copy starts clean
        instances = []
        for rel, (key, size, md5) in sorted(sources.items()):
            info = self.copy_object(self.chris, key, self.store, incoming + rel, size, md5)
            instances.append({"key": incoming + rel, "md5": getattr(info, "md5", "") or md5,
                              "size": int(getattr(info, "size", size))})
        if not instances:
            # Dispatch plans one shard per input file set and needs one object;
            # fs plugins never see their input dir, ds plugins see one empty file.
            info = self.store.put_bytes(incoming + PLACEHOLDER, b"")
            instances.append({"key": incoming + PLACEHOLDER, "md5": info.md5, "size": 0})
        self.store.put_json(staging_prefix(job.jid) + "manifest.json", {
            "series_uid": f"pfcon-{job.jid}", "study_uid": "", "prefix": incoming,
            "instances": instances, "complete": True, "expected": len(instances)})
        return len(sources), sum(s for _, s, _ in sources.values())

    def _gather(self, input_dirs: list[str]) -> dict[str, tuple[str, int, str]]:
        """``{relative name: (source key, size, md5)}`` over every input dir."""
        found: dict[str, tuple[str, int, str]] = {}
        for d in input_dirs:
            self._walk(P.storage_path(d), "", found, depth=0)
        return found

    def _walk(self, prefix: str, under: str, found: dict[str, tuple[str, int, str]], depth: int) -> None:
        for info in self.chris.list(prefix + "/"):
            rel = info.key[len(prefix) + 1:]
            if rel.endswith(".chrislink"):
                # A ChRIS link: a small object holding another storage path,
                # copied under a folder named after the link (pfcon's copy worker).
                if depth >= MAX_LINK_DEPTH:
                    raise BadRequest(f"{info.key}: .chrislink nesting deeper than {MAX_LINK_DEPTH}")
                target = P.storage_path(self._read_text(info.key))
                if not target:
                    raise BadRequest(f"{info.key}: the .chrislink does not hold a storage path")
                self._walk(target, under + rel[: -len(".chrislink")] + "/", found, depth + 1)
                continue
            found.setdefault(under + rel, (info.key, int(info.size), info.md5 or ""))
            if len(found) > MAX_FILES:
                raise PayloadTooLarge(f"the input dirs hold more than {MAX_FILES} files; "
                                      "radcloud's copy job stops there")

    def _read_text(self, key: str) -> str:
        stream = self.chris.open(key)
        try:
            return stream.read(4096).decode("utf-8", "replace").strip()
        finally:
            stream.close()

    # -- plugin --------------------------------------------------------------
    def plugin(self, job: P.PluginJob, owner: str) -> dict[str, Any]:
        existing = self.records.get(job.jid, "plugin")
        if existing:
            view = self._plugin_view(job.jid, existing)
            if view["status"] not in ("finishedWithError", "undefined"):
                return view  # idempotent: the same job, not a second run
        copy = self.records.get(job.jid, "copy")
        if not copy or copy["status"] != "finishedSuccessfully":
            state = copy["status"] if copy else "missing"
            raise Conflict(f"job {job.jid}: the copy job is {state}; POST copyjobs/ and wait for "
                           "finishedSuccessfully before the plugin job", field="jid", copy=state)
        name = self.plugin_for_image(job.image)
        plugin = self.registry.get(name)
        if job.gpu_limit > 0:
            raise BadRequest(f"gpu_limit={job.gpu_limit}: radcloud has no GPUs; run {job.image} "
                             "on another compute resource", field="gpu_limit")
        params = P.args_to_params(job.args, plugin.parameters, name)
        paths = [p for p in plugin.parameters if p.get("type") in ("path", "unextpath") and p["name"] in params]
        if paths and plugin.type == "fs":
            # The shard hands a path option the staged input dir, and an fs plugin has none.
            raise BadRequest(f"path parameters ({', '.join(p['flag'] for p in paths)}) of the fs plugin "
                             f"{name} are not supported", field="args_path_flags")
        for spec in paths:
            # The copy job staged these paths; the shard replaces the value with the
            # input dir (as pfcon's args_path_flags → /share/incoming). Keep it relative.
            params[spec["name"]] = ",".join(P.storage_path(v) or v for v in str(params[spec["name"]]).split(","))
        if not self.records.claim(job.jid, "plugin"):
            return P.compute(job.jid, image=job.image, cmd=job.cmd(), status="notStarted",
                             message="being submitted by another request")
        try:
            # CUBE's CHRIS_* variables are kept with the job (its options.env) and ride in every
            # shard payload built from it (ShardSpec.env; the shard sets them): a retried shard,
            # one resubmitted by reconcile or one on Slurm gets them as the first submit did.
            answer = self.dispatcher().dispatch({
                "plugin": name, "params": params, "inputs": {"prefixes": [staging_prefix(job.jid)]},
                # fs plugins have no inputs to key a cache entry on: always run them.
                "options": {"force": plugin.type == "fs"}}, owner=owner, env=chris_env(job.env_dict()))
            record = {"job_id": answer["job_id"], "image": job.image, "cmd": job.cmd(), "plugin": name,
                      "output_dir": job.output_dir, "env": sorted(job.env_dict())}
            self.records.put(job.jid, "plugin", record)
        finally:
            self.records.release(job.jid, "plugin")
        log.info("pfcon job %s -> radcloud job %s (%s)", job.jid, answer["job_id"], name)
        return self._plugin_view(job.jid, record)

    def plugin_for_image(self, image: str) -> str:
        """The registered plugin for a container image (descriptor ``dock_image``
        or the configured table); a tag-less match is accepted."""
        table = dict(self.images)
        for name in self.registry.names():
            dock = self.registry.get(name).descriptor.get("dock_image")
            if dock:
                table.setdefault(dock, name)
        wanted = _norm(image)
        for candidate in (wanted, _untagged(wanted)):
            for img, name in table.items():
                if candidate in (_norm(img), _untagged(_norm(img))):
                    return name
        known = ", ".join(sorted(table)) or "none"
        raise BadRequest(f"image {image!r} is not a plugin registered in radcloud (known images: {known}); "
                         "register the plugin or map the image in pfcon_images", field="image", image=image)

    def plugin_status(self, jid: str) -> dict[str, Any]:
        return self._plugin_view(jid, self._need(jid, "plugin"))

    def _plugin_view(self, jid: str, record: dict[str, Any]) -> dict[str, Any]:
        base = {"image": record.get("image", ""), "cmd": record.get("cmd", "")}
        try:
            job = self._fresh(record["job_id"])
        except NotFound:
            return P.compute(jid, **base, status="undefined",
                             message=f"radcloud job {record['job_id']} no longer exists")
        status = P.status_of(job["state"])
        return P.compute(jid, **base, status=status, message=_message(job),
                         timestamp=P.iso(job.get("finished_at") or job.get("started_at")),
                         logs=P.tail("\n".join(s.get("stderr_tail") or "" for s in job.get("shards", []))))

    def _fresh(self, job_id: str) -> dict[str, Any]:
        """The job as it is: a status read never writes (lost shards are radcloud.work.reconcile's)."""
        return self.jobs.get(job_id)

    def output_files(self, jid: str, job_output_path: str) -> dict[str, Any]:
        """``{job_output_path, rel_file_paths}`` of a finished plugin job."""
        record = self._need(jid, "plugin")
        return {"job_output_path": job_output_path, "rel_file_paths": [r for r, _ in self._outputs(record)]}

    def _outputs(self, record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        manifest = self.results.manifest(record["job_id"])  # Conflict while running
        out = []
        for item in manifest.get("outputs", []):
            # Names are "<shard>/<path>"; a ChRIS job has one shard, whose dir is outgoing/.
            rel = item["name"].split("/", 1)[1] if "/" in item["name"] else item["name"]
            out.append((rel, item))
        return sorted(out, key=lambda pair: pair[0])

    # -- upload --------------------------------------------------------------
    def upload(self, job: P.UploadJob) -> dict[str, Any]:
        existing = self.records.get(job.jid, "upload")
        if existing and existing["status"] == "finishedSuccessfully" \
                and existing.get("job_output_path") == job.job_output_path:
            return self._compute(job.jid, existing)
        plugin = self.records.get(job.jid, "plugin")
        status = self._plugin_view(job.jid, plugin)["status"] if plugin else "missing"
        if status not in P.FINISHED:
            raise Conflict(f"job {job.jid}: the plugin job is {status}; upload once it has finished",
                           field="jid", plugin=status)
        if not self.records.claim(job.jid, "upload"):
            return self._in_flight(job.jid, "upload", existing)
        try:
            self.records.put(job.jid, "upload", {"status": "started", "message": "uploading", "timestamp": ""})
            self.records.put(job.jid, "upload", self._upload_record(job, plugin))
        finally:
            self.records.release(job.jid, "upload")
        return self._compute(job.jid, self.records.get(job.jid, "upload") or {"status": "undefined"})

    def _upload_record(self, job: P.UploadJob, plugin: dict[str, Any]) -> dict[str, Any]:
        target = P.storage_path(job.job_output_path)
        try:
            n = size = 0
            for rel, item in self._outputs(plugin):
                self.copy_object(self.store, item["key"], self.chris, f"{target}/{rel}",
                                 int(item.get("size") or 0), item.get("md5") or "")
                n, size = n + 1, size + int(item.get("size") or 0)
            record = {"status": "finishedSuccessfully", "timestamp": P.iso(self.clock()),
                      "message": f"uploaded {n} files ({size} bytes) to {target}/",
                      "job_output_path": job.job_output_path}
        except RadcloudError as exc:
            record = {"status": "finishedWithError", "timestamp": P.iso(self.clock()),
                      "message": f"upload failed: {exc.message}", "job_output_path": job.job_output_path}
        return record

    # -- delete --------------------------------------------------------------
    def delete(self, job: P.DeleteJob) -> dict[str, Any]:
        existing = self.records.get(job.jid, "delete")
        if existing and existing["status"] == "finishedSuccessfully":
            return self._compute(job.jid, existing)
        active = [kind for kind in ("copy", "plugin", "upload") if self._active(job.jid, kind)]
        if active:
            raise Conflict(f"job {job.jid}: the {' and '.join(active)} job is still active; delete its "
                           "data once it has finished (DELETE pluginjobs/<jid>/ stops a plugin job)",
                           field="jid", active=active)
        if not self.records.claim(job.jid, "delete"):
            return self._in_flight(job.jid, "delete", existing)
        try:
            removed = self.store.delete_prefix(staging_prefix(job.jid))
            record = {"status": "finishedSuccessfully", "timestamp": P.iso(self.clock()),
                      "message": f"removed {removed} staged objects" if removed else "deleteSkipped"}
            self.records.put(job.jid, "delete", record)
        finally:
            self.records.release(job.jid, "delete")
        return self._compute(job.jid, record)

    def _active(self, jid: str, kind: str) -> bool:
        record = self.records.get(jid, kind)
        if record is None:
            return False
        return self.status(kind, jid)["status"] in P.ACTIVE

    # -- status / removal of the op jobs -------------------------------------
    def status(self, kind: str, jid: str) -> dict[str, Any]:
        if kind == "plugin":
            return self.plugin_status(jid)
        record = self._need(jid, kind)
        if record["status"] in P.ACTIVE and not self.records.held(jid, kind):
            # Never stuck: the request doing it ended (action timeout, crash) without a word.
            record = {"status": "finishedWithError", "timestamp": P.iso(self.clock()),
                      "message": f"the {kind} job was interrupted before it finished; POST it again"}
        return self._compute(jid, record)

    def _in_flight(self, jid: str, kind: str, existing: dict[str, Any] | None) -> dict[str, Any]:
        """Another request is doing this job right now: answer as it stands (idempotent)."""
        if existing and existing["status"] in P.ACTIVE:
            return self._compute(jid, existing)
        return P.compute(jid, status="started", message=f"{kind} in progress")

    def remove(self, kind: str, jid: str) -> None:
        """pfcon's DELETE <kind>/<jid>/: forget the job; a running plugin job is cancelled."""
        record = self.records.get(jid, kind)
        if record is None:
            return  # pfcon ignores a container that does not exist
        if kind == "plugin":
            from radcloud.work.dispatch import cancel_job

            try:
                cancel_job(self.jobs, record["job_id"], self.executors, self.finaliser)  # Slurm: scancel
            except (NotFound, Conflict):
                pass  # gone or already final
        self.records.drop(jid, kind)

    def _need(self, jid: str, kind: str) -> dict[str, Any]:
        record = self.records.get(jid, kind)
        if record is None:
            raise NotFound(f"no {kind} job for jid {jid!r}", field="jid")
        return record

    @staticmethod
    def _compute(jid: str, record: dict[str, Any]) -> dict[str, Any]:
        return P.compute(jid, status=record["status"], message=record.get("message", ""),
                         timestamp=record.get("timestamp", ""))


def chris_env(env: Mapping[str, str]) -> dict[str, str]:
    """The CHRIS_* variables CUBE injects, minus its user token: shard payloads are
    kept in OpenWhisk's activation records, and plugins run without network anyway."""
    return {k: v for k, v in env.items() if k.startswith("CHRIS_") and k not in _SECRET_ENV}


def _message(job: dict[str, Any]) -> str:
    """Better than pfcon: the real exit code and why (oom, timeout), and cache hits; for a job on
    Slurm, its Slurm job, why it waits and its attempt, as the web UI and the CLI say them."""
    from radcloud.work.jobview import wait_and_attempt_words

    if job.get("cached"):
        return f"radcloud job {job['id']} succeeded: cache hit, results of {job.get('results_of')}"
    parts = [f"radcloud job {job['id']} {job['state']}"]
    for shard in job.get("shards", []):
        if shard.get("executor") == "slurm" and shard.get("activation_id"):
            parts.append(f"on Slurm job {shard['activation_id']}")
        parts.extend(wait_and_attempt_words(shard))
        if shard.get("exit_code") is not None:
            parts.append(f"exit code {shard['exit_code']}")
        if shard.get("reason"):
            parts.append(str(shard["reason"]))
    if job.get("reason") and job["reason"] not in parts:
        parts.append(str(job["reason"]))
    return "; ".join(parts)


def _norm(image: str) -> str:
    image = image.strip()
    for prefix in ("docker.io/", "index.docker.io/"):
        if image.startswith(prefix):
            image = image[len(prefix):]
    return image[len("library/"):] if image.startswith("library/") else image


def _untagged(image: str) -> str:
    image = image.split("@", 1)[0]
    head, _, last = image.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]
