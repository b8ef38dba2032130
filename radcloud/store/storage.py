"""Object storage for staged studies and plugin results, over the ``minio`` SDK.

radcloud codes against the S3 API only (SeaweedFS locally, MinIO or any S3
in production). This module is the one place that talks to it:

* keys are validated (no ``..``, no leading ``/``, no control characters),
  so a caller-supplied path can never escape its prefix;
* every object's MD5 is known, because staging/result manifests and the
  result cache key on content digests: a single-part object's ETag is its
  MD5; a multipart one (whose ETag is not) carries it in ``x-amz-meta-md5``;
* writes are all-or-nothing. An S3 PUT is atomic per object (a PUT that
  fails or is aborted leaves no object; a multipart upload is invisible
  until completed). Bytes whose MD5 is not the expected one are refused
  before they become visible under their final key: a single-part PUT whose
  MD5 the caller knows carries it as ``Content-MD5`` and the store refuses a
  mismatch (``BadDigest``); any other upload is hashed *while it is read*,
  before the request is sent.

The checked single-part PUT (:meth:`ObjectStore.put_stream` with ``md5``)
goes out as a presigned URL on the SDK's own connection pool: the SDK signs
the payload's SHA-256 over plain HTTP and cannot send ``Content-MD5``, so
staging a series would hash every byte twice more on a CPU it shares with
Orthanc and the store (measured in bench/retrieve_bench.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import mimetypes
import os
import re
import xml.etree.ElementTree as ET
from base64 import b64encode
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, BinaryIO

import minio
from minio.commonconfig import CopySource, REPLACE
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from radcloud.core.errors import BadRequest, NotFound, UpstreamError

log = logging.getLogger(__name__)

MD5_META = "md5"  # stored as x-amz-meta-md5
PRESIGN_PUT_TTL = timedelta(minutes=10)  # a checked PUT's URL is used at once
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one object. ``md5`` is hex ('' if unknown)."""

    key: str
    size: int
    md5: str
    content_type: str = ""
    metadata: dict = dataclasses.field(default_factory=dict)
    modified: float | None = None   # epoch seconds, where a listing says (S3's LastModified)


class ChecksumMismatch(UpstreamError):
    """The bytes read did not have the expected MD5; nothing was stored."""


def validate_key(key: str, *, prefix: bool = False) -> str:
    """Return ``key`` if it is a safe object key, else raise BadRequest.

    ``prefix=True`` allows the empty string and a trailing ``/``.
    """
    if not isinstance(key, str) or (not key and not prefix):
        raise BadRequest("object key must be a non-empty string", field="key")
    if key.startswith("/"):
        raise BadRequest("object key must not start with '/'", field="key")
    if _CONTROL.search(key):
        raise BadRequest("object key must not contain control characters", field="key")
    if any(part in ("..", ".") for part in key.split("/")):
        raise BadRequest("object key must not contain '.' or '..' segments", field="key")
    if len(key.encode("utf-8")) > 1024:
        raise BadRequest("object key is longer than 1024 bytes", field="key")
    return key


class _HashingReader:
    """Wraps a stream: computes MD5 as it is read and checks it at the end.

    minio reads a whole part before sending it, so raising here on the last
    byte aborts the upload before the final object exists.
    """

    def __init__(self, stream: BinaryIO, length: int, expected_md5: str | None) -> None:
        self._stream = stream
        self._left = length
        self._expected = expected_md5
        self._md5 = hashlib.md5()

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if size is None or size < 0 else min(size, self._left)
        data = self._stream.read(want)
        if not data:
            return b""
        self._md5.update(data)
        self._left -= len(data)
        if self._left == 0 and self._expected and self._md5.hexdigest() != self._expected:
            raise ChecksumMismatch(f"content MD5 {self._md5.hexdigest()} does not match "
                                   f"the expected {self._expected}; object not stored")
        return data

    def hexdigest(self) -> str:
        return self._md5.hexdigest()


class ObjectStore:
    """One bucket of an S3 store, through an injected ``minio.Minio`` client."""

    def __init__(self, client: minio.Minio, bucket: str, *, part_size: int = 64 * 2**20,
                 http: Any = None) -> None:
        self.client = client
        self.bucket = bucket
        # SeaweedFS multipart PUT is ~3x slower than single-part: large parts.
        self.part_size = part_size
        # A urllib3 PoolManager for checked single-part PUTs; None: the SDK does every write.
        self.http = http

    @classmethod
    def from_settings(cls, settings: Any) -> "ObjectStore":
        import urllib3  # minio's own transport

        settings.require("s3_endpoint", "s3_access_key", "s3_secret_key", "s3_bucket")
        # Retries ride out a restart of the S3 server (0.5 + 1 + 2 + 4 s), then the error is reported.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5.0, read=60.0), maxsize=8,
            retries=urllib3.Retry(total=4, backoff_factor=0.5, backoff_max=4.0,
                                  status_forcelist=(500, 502, 503, 504)),
        )
        client = minio.Minio(settings.s3_endpoint, access_key=settings.s3_access_key,
                             secret_key=settings.s3_secret_key.reveal(), secure=settings.s3_secure,
                             region=settings.s3_region, http_client=http)
        return cls(client, settings.s3_bucket, http=http)

    # -- writing -----------------------------------------------------------
    def put_stream(self, key: str, stream: BinaryIO, length: int, *,
                   content_type: str = "application/octet-stream", md5: str | None = None,
                   metadata: dict | None = None, part_size: int | None = None) -> ObjectInfo:
        """Upload ``length`` bytes from ``stream``; verify ``md5`` when given.

        The SDK holds one part in memory: ``part_size`` (default the store's)
        bounds that for a caller that streams several uploads at once.

        Raises:
            ChecksumMismatch: the bytes' MD5 differs from ``md5`` (nothing stored).
            UpstreamError: the store refused or is unreachable.
        """
        validate_key(key)
        if md5 is not None and not _HEX32.match(md5):
            raise BadRequest("md5 must be 32 lowercase hex digits", field="md5")
        if md5 and not metadata and self.http is not None and length <= (part_size or self.part_size):
            return self._put_checked(key, stream, length, md5, content_type)
        meta = dict(metadata or {})
        if md5:
            meta[MD5_META] = md5
        reader = _HashingReader(stream, length, md5)
        result = self._call("put", key, self.client.put_object, self.bucket, key, reader, length,
                            content_type=content_type, metadata=meta or None,
                            part_size=part_size or self.part_size)
        digest = reader.hexdigest()
        etag = (result.etag or "").strip('"')
        if _HEX32.match(etag) and etag != digest:
            # The store received other bytes than we hashed: never keep them.
            self._remove(key)
            raise ChecksumMismatch(f"store ETag {etag} differs from the sent MD5 {digest} for {key}; removed")
        if not md5:
            meta[MD5_META] = digest
            if not _HEX32.match(etag):  # multipart: record the MD5 by an in-place copy
                self._call("copy", key, self.client.copy_object, self.bucket, key,
                           CopySource(self.bucket, key),
                           metadata={MD5_META: digest, "Content-Type": content_type, **meta},
                           metadata_directive=REPLACE)
        return ObjectInfo(key, length, digest, content_type, {k: v for k, v in meta.items() if k != MD5_META})

    def put_file(self, key: str, path: str | os.PathLike, *, content_type: str | None = None) -> ObjectInfo:
        """Upload a local file; MD5 computed first so it lands in the metadata."""
        digest = hashlib.md5()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        ctype = content_type or mimetypes.guess_type(str(path))[0] or "application/octet-stream"
        if str(path).lower().endswith(".dcm"):
            ctype = content_type or "application/dicom"
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            return self.put_stream(key, fh, size, content_type=ctype, md5=digest.hexdigest())

    def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        return self.put_stream(key, io.BytesIO(data), len(data), content_type=content_type,
                               md5=hashlib.md5(data).hexdigest())

    def put_json(self, key: str, obj: Any) -> ObjectInfo:
        data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return self.put_bytes(key, data, content_type="application/json")

    def _put_checked(self, key: str, stream: BinaryIO, length: int, md5: str, content_type: str) -> ObjectInfo:
        """One PUT carrying ``Content-MD5``: the store refuses other bytes (``BadDigest``).

        The ETag (a single-part object's MD5) is compared too, for a store
        that ignores ``Content-MD5``; the object is then removed.
        """
        data = _read_exactly(stream, length)
        if len(data) != length:
            raise UpstreamError(f"S3 put of {key!r} in bucket {self.bucket} failed: the source gave "
                                f"{len(data)} of {length} bytes")
        url = self._call("presign", key, self.client.presigned_put_object, self.bucket, key, PRESIGN_PUT_TTL)
        headers = {"Content-Type": content_type, "Content-MD5": b64encode(bytes.fromhex(md5)).decode("ascii")}
        try:
            resp = self.http.request("PUT", url, body=data, headers=headers)
        except Exception as exc:  # urllib3's errors, after its retries
            raise UpstreamError(f"S3 put of {key!r} in bucket {self.bucket} failed: {type(exc).__name__}") from None
        if resp.status >= 300:
            code = _error_code(resp.data) or f"HTTP {resp.status}"
            if code in ("BadDigest", "InvalidDigest"):
                raise ChecksumMismatch(f"the store refused {key}: its bytes do not have the MD5 {md5}; "
                                       f"nothing stored")
            raise _translate(code, "put", key, self.bucket)
        etag = (resp.headers.get("ETag") or "").strip('"')
        if _HEX32.match(etag) and etag != md5:
            self._remove(key)
            raise ChecksumMismatch(f"store ETag {etag} differs from the expected MD5 {md5} for {key}; removed")
        return ObjectInfo(key, length, md5, content_type, {})

    # -- reading -----------------------------------------------------------
    def get_json(self, key: str) -> Any:
        """Raises NotFound when the object does not exist."""
        stream = self.open(key)
        try:
            return json.loads(stream.read())
        finally:
            _close(stream)

    def get_to_file(self, key: str, path: str | os.PathLike) -> None:
        validate_key(key)
        self._call("get", key, self.client.fget_object, self.bucket, key, str(path))

    def open(self, key: str) -> Any:
        """A readable response stream; the caller closes it (``.close()``)."""
        validate_key(key)
        return self._call("get", key, self.client.get_object, self.bucket, key)

    def stat(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        try:
            obj = self._call("stat", key, self.client.stat_object, self.bucket, key)
        except NotFound:
            return None
        return _info(key, obj.size or 0, obj.etag, obj.content_type or "", obj.metadata)

    def list(self, prefix: str, recursive: bool = True) -> Iterator[ObjectInfo]:
        """Objects under ``prefix``. ``md5`` comes from the ETag when it is one
        (single-part); multipart objects are stat-ed for their metadata."""
        validate_key(prefix, prefix=True)
        try:
            for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=recursive):
                if obj.is_dir:
                    continue
                etag = (obj.etag or "").strip('"')
                if _HEX32.match(etag):
                    when = getattr(obj, "last_modified", None)   # minio: a datetime (fakes may omit it)
                    modified = when.timestamp() if when else None
                    yield ObjectInfo(obj.object_name, obj.size or 0, etag, modified=modified)
                else:
                    info = self.stat(obj.object_name)
                    if info is not None:
                        yield info
        except S3Error as exc:
            raise _translate(exc.code, "list", prefix, exc.bucket_name) from None
        except (OSError, ValueError) as exc:  # urllib3 errors are OSErrors/ValueErrors
            raise UpstreamError(f"S3 list of {prefix!r} in bucket {self.bucket} failed: "
                                f"{type(exc).__name__}") from None

    def presign_get(self, key: str, ttl_s: int) -> str:
        validate_key(key)
        return self._call("presign", key, self.client.presigned_get_object, self.bucket, key,
                          expires=timedelta(seconds=int(ttl_s)))

    def presign_put(self, key: str, ttl_s: int) -> str:
        """A URL that may PUT this one key until ``ttl_s`` from now (a shard run off-site uploads with it)."""
        validate_key(key)
        return self._call("presign", key, self.client.presigned_put_object, self.bucket, key,
                          expires=timedelta(seconds=int(ttl_s)))

    # -- deleting ----------------------------------------------------------
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` (must be non-empty); return the count."""
        validate_key(prefix)
        keys = [info.key for info in self.list(prefix)]
        for start in range(0, len(keys), 1000):
            batch = [DeleteObject(k) for k in keys[start:start + 1000]]
            errors = list(self.client.remove_objects(self.bucket, batch))  # lazy: must iterate
            if errors:
                raise UpstreamError(f"S3 refused to delete {len(errors)} objects under {prefix!r}: "
                                    f"{errors[0].code}")
        return len(keys)

    # -- plumbing ----------------------------------------------------------
    def _remove(self, key: str) -> None:
        try:
            self.client.remove_object(self.bucket, key)
        except Exception:  # best effort; the caller is already failing
            log.warning("could not remove %s after a failed write", key)

    def _call(self, op: str, key: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except S3Error as exc:
            raise _translate(exc.code, op, key, exc.bucket_name) from None
        except (ChecksumMismatch, BadRequest):
            raise
        except (OSError, ValueError) as exc:
            raise UpstreamError(f"S3 {op} of {key!r} in bucket {self.bucket} failed: "
                                f"{type(exc).__name__}: {str(exc)[:200]}") from None


def _info(key: str, size: int, etag: str | None, ctype: str, meta: Any) -> ObjectInfo:
    user: dict[str, str] = {}
    for name, value in (meta or {}).items():
        lname = name.lower()
        if lname.startswith("x-amz-meta-"):
            user[lname[len("x-amz-meta-"):]] = value
    md5 = user.pop(MD5_META, "")
    etag = (etag or "").strip('"')
    if not md5 and _HEX32.match(etag):
        md5 = etag
    return ObjectInfo(key, size, md5, ctype, user)


def _read_exactly(stream: BinaryIO, length: int) -> bytes:
    """Up to ``length`` bytes: a socket stream may give fewer per read."""
    chunks, left = [], length
    while left > 0:
        block = stream.read(left)
        if not block:
            break
        chunks.append(block)
        left -= len(block)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _error_code(body: bytes) -> str:
    """The ``<Code>`` of an S3 error document ('' if the body is not one)."""
    try:
        return ET.fromstring(body[:65536]).findtext("Code") or ""
    except ET.ParseError:
        return ""


def _translate(code: str, op: str, key: str, bucket: str | None) -> Exception:
    """An S3 error code (from the SDK or an error document) as radcloud's error."""
    if code in ("NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"):
        return NotFound(f"no object {key!r} in the store", field="key")
    if code == "NoSuchBucket":
        return UpstreamError(f"S3 bucket {bucket!r} does not exist; create it first")
    return UpstreamError(f"S3 {op} of {key!r} refused: {code}")


def _close(stream: Any) -> None:
    stream.close()
    release = getattr(stream, "release_conn", None)
    if release:
        release()
