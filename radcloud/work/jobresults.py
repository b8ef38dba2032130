"""A job's results: the manifest, download URLs, thumbnails, push to the PACS.

The manifest lists every output file a job's shards uploaded (key, name
relative to the job's output prefix, size, content type, MD5, shard, source
series). It is built from the shard outcomes already in Redis — no bucket
listing — by the job's finaliser, stored in S3 next to the outputs
(``results/{job}/manifest.json``, the durable copy) and in Redis
(``P:job:{id}:manifest``, the fast one). A cached job has no outputs of its
own: its manifest is the one of the job named by ``results_of``.

Thumbnails are made on first request (Pillow, PNG, at most 256 px) and kept
under ``results/{job}/.thumbs/``. Presigned URLs are signed per request with
a short TTL (``presign_ttl_s``).
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
import tempfile
from typing import Any

from radcloud.core.errors import BadRequest, Conflict, NotFound
from radcloud.work.jobs import FINAL_STATES, JOB_TTL_S, JobStore

log = logging.getLogger(__name__)

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/tiff")
THUMB_PX = 256
THUMB_DIR = ".thumbs/"
MAX_THUMB_SOURCE = 64 * 2**20


def build_manifest(job: dict[str, Any]) -> dict[str, Any]:
    prefix = job.get("output_prefix") or f"results/{job['id']}/"
    outputs = []
    for shard in job.get("shards", []):
        for out in shard.get("outputs") or []:
            key = out["key"]
            outputs.append({
                "key": key, "name": key[len(prefix):] if key.startswith(prefix) else key,
                "size": int(out.get("size") or 0), "content_type": out.get("content_type") or "",
                "md5": out.get("md5") or "", "shard": shard["id"],
                "series_uid": shard.get("series_uid", ""), "study_uid": shard.get("study_uid", ""),
                "image": (out.get("content_type") or "") in IMAGE_TYPES,
            })
    outputs.sort(key=lambda o: o["key"])
    return {"job_id": job["id"], "plugin": job.get("plugin"), "plugin_version": job.get("plugin_version"),
            "prefix": prefix, "outputs": outputs, "count": len(outputs),
            "bytes": sum(o["size"] for o in outputs),
            "shards": {s["id"]: {"state": s["state"], "reason": s.get("reason") or ""}
                       for s in job.get("shards", [])}}


class Results:
    """Manifests, URLs and thumbnails of jobs (object store, Redis and job store passed in)."""

    def __init__(self, store: Any, redis: Any, jobs: JobStore) -> None:
        self.store, self.r, self.jobs = store, redis, jobs

    def _rkey(self, job_id: str) -> str:
        return self.jobs.key(job_id, "manifest")

    def save_manifest(self, job: dict[str, Any]) -> dict[str, Any]:
        """Build and store the manifest of a job (the finaliser calls this)."""
        manifest = build_manifest(job)
        self.store.put_json(posixpath.join(manifest["prefix"], "manifest.json"), manifest)
        self.r.set(self._rkey(job["id"]), json.dumps(manifest), ex=JOB_TTL_S)
        return manifest

    def manifest(self, job_id: str) -> dict[str, Any]:
        """The manifest of a finished job; a cached job answers with its origin's outputs.

        Raises NotFound (no job) or Conflict (the job has not finished).
        """
        job = self.jobs.get(job_id)
        if job["state"] not in FINAL_STATES:
            raise Conflict(f"job {job_id} is {job['state']}; results exist once it has finished",
                           field="job", state=job["state"])
        source = job.get("results_of") or job_id
        raw = self.r.get(self._rkey(source))
        if raw:
            manifest = json.loads(raw)
        else:
            prefix = job.get("output_prefix") or f"results/{source}/"
            try:
                manifest = self.store.get_json(posixpath.join(prefix, "manifest.json"))
            except NotFound:
                raise NotFound(f"job {job_id} has no results manifest (its results may have "
                               "been deleted)", field="job") from None
        return {**manifest, "job_id": job_id, "results_of": job.get("results_of") or None,
                "cached": bool(job.get("cached")), "state": job["state"], "subject": job.get("subject") or None}

    def output(self, manifest: dict[str, Any], name_or_key: str) -> dict[str, Any]:
        for out in manifest["outputs"]:
            if name_or_key in (out["key"], out["name"]):
                return out
        raise NotFound(f"job {manifest['job_id']} has no output named {name_or_key!r}", field="name")

    def with_urls(self, manifest: dict[str, Any], ttl_s: int, names: list[str] | None = None) -> dict[str, Any]:
        """The manifest with a presigned GET ``url`` on each (or the named) output."""
        wanted = set(names) if names else None
        outputs = []
        for out in manifest["outputs"]:
            if wanted is None or out["name"] in wanted or out["key"] in wanted:
                out = {**out, "url": self.store.presign_get(out["key"], ttl_s)}
            outputs.append(out)
        return {**manifest, "outputs": outputs, "url_ttl_s": ttl_s}

    def thumbnail(self, manifest: dict[str, Any], name: str, ttl_s: int) -> dict[str, Any]:
        """A presigned URL of a thumbnail of an image output, made on first request."""
        out = self.output(manifest, name)
        if not out.get("image"):
            raise BadRequest(f"output {name!r} is {out['content_type'] or 'not an image'}; "
                             "thumbnails exist for images only", field="name")
        if out["size"] > MAX_THUMB_SOURCE:
            raise BadRequest(f"output {name!r} is too large for a thumbnail", field="name")
        thumb_key = posixpath.join(manifest["prefix"], THUMB_DIR, out["name"] + ".thumb.png")
        if self.store.stat(thumb_key) is None:
            with tempfile.NamedTemporaryFile(suffix=".img") as tmp:
                self.store.get_to_file(out["key"], tmp.name)
                data = make_thumbnail(tmp.name)
            self.store.put_bytes(thumb_key, data, content_type="image/png")
        return {"name": out["name"], "thumbnail_key": thumb_key, "url": self.store.presign_get(thumb_key, ttl_s),
                "url_ttl_s": ttl_s}


def make_thumbnail(path: str, px: int = THUMB_PX) -> bytes:
    from PIL import Image

    with Image.open(path) as img:
        img.thumbnail((px, px))
        if img.mode not in ("L", "RGB", "RGBA"):
            img = img.convert("RGB")
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        return buf.getvalue()


def pacs_pusher(settings: Any, store: Any) -> Any:
    """A ``(job, manifest) -> {"series_uid", "instances"}`` that stores derived series in Orthanc."""
    def push(job: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
        from radcloud.results import derived
        from radcloud.pacs.orthanc import Orthanc

        return derived.push(job, manifest, store=store, pacs=derived.OrthancPacs(Orthanc.from_settings(settings)))
    return push
