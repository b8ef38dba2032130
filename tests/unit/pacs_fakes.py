"""Fakes for query/retrieve unit tests, passed to constructors (no sockets, no mock.patch).

* :class:`FakeOrthanc` is a ``requests.Session`` stand-in serving a tiny
  in-memory archive the way Orthanc 1.10's REST API answers.
* :class:`FakeMinio` is a ``minio.Minio`` stand-in that reads streams the
  way the SDK does (a whole part before sending) and keeps objects in a dict.
* :class:`FakeWhisk` records invokes.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import io
import json
from types import SimpleNamespace
from typing import Any

import requests
from minio.error import S3Error

from radcloud.pacs.orthanc import patient_resource_id


class FakeResponse:
    def __init__(self, status: int = 200, body: Any = None, data: bytes | None = None,
                 fail_after: int | None = None) -> None:
        self.status_code = status
        self._body = body
        self.content = data if data is not None else json.dumps(body).encode()
        self.text = self.content.decode("latin-1")
        self.headers = {"Content-Length": str(len(self.content))}
        self.raw = _Raw(self.content, fail_after)
        self.closed = False

    def json(self) -> Any:
        if self._body is None:
            raise ValueError("not JSON")
        return self._body

    def iter_content(self, chunk: int):
        while block := self.raw.read(chunk):
            yield block

    def close(self) -> None:
        self.closed = True


class _Raw(io.BytesIO):
    """A body stream that can break part-way, like a killed server."""

    def __init__(self, data: bytes, fail_after: int | None) -> None:
        super().__init__(data)
        self.fail_after = fail_after

    def read(self, size: int = -1) -> bytes:
        if self.fail_after is not None and self.tell() + (size if size > 0 else 1 << 30) > self.fail_after:
            raise requests.exceptions.ChunkedEncodingError("connection broken")
        return super().read(size)


@dataclasses.dataclass
class Inst:
    id: str
    sop: str
    number: int
    data: bytes


class FakeOrthanc:
    """Serves studies -> series -> instances; ``down``/``status`` simulate faults."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.studies: dict[str, dict] = {}
        self.series: dict[str, dict] = {}
        self.instances: dict[str, Inst] = {}
        self.down = False
        self.status: int | None = None           # answer every call with this
        self.broken: set[str] = set()            # instance ids whose stream breaks
        self.bad_md5: set[str] = set()           # instance ids whose stored MD5 is wrong
        self.remote_answers: list[dict] = []     # C-FIND answers
        self.remote_queries: list[dict] = []
        self.moves: list[dict] = []
        self.job_running_polls = 0               # C-MOVE job polls answered "Running" before "Success"
        self.auth = None
        self.headers: dict[str, str] = {}

    def add_study(self, sid: str, uid: str, patient_id: str, date: str, **tags: Any) -> None:
        self.studies[sid] = {"ID": sid, "Type": "Study", "ParentPatient": patient_resource_id(patient_id), "Series": [],
                             "MainDicomTags": {"StudyInstanceUID": uid, "StudyDate": date, **tags},
                             "PatientMainDicomTags": {"PatientID": patient_id, "PatientName": "DOE^JANE",
                                                      "PatientBirthDate": "19700101", "PatientSex": "F"}}

    def add_series(self, sid: str, study: str, uid: str, n: int, *, modality: str = "CT",
                   number: int = 1, size: int = 64) -> list[Inst]:
        self.series[sid] = {"ID": sid, "Type": "Series", "ParentStudy": study, "Instances": [],
                            "MainDicomTags": {"SeriesInstanceUID": uid, "Modality": modality,
                                              "SeriesNumber": str(number), "SeriesDescription": "AXIAL"}}
        self.studies[study]["Series"].append(sid)
        made = []
        for k in range(n, 0, -1):  # stored out of order: staging must sort
            inst = Inst(f"{sid}-i{k}", f"{uid}.{k}", k, bytes([k % 256]) * (size + k))
            self.instances[inst.id] = inst
            self.series[sid]["Instances"].append(inst.id)
            made.append(inst)
        return made

    # -- the Session interface -------------------------------------------------
    def request(self, method: str, url: str, *, json: Any = None, params: Any = None,
                stream: bool = False, data: Any = None, timeout: float | None = None) -> FakeResponse:
        path = "/" + url.split("/", 3)[3]
        self.calls.append((method, path, json))
        if self.down:
            raise requests.ConnectionError("refused")
        if self.status is not None:
            return FakeResponse(self.status, {"HttpError": "x"})
        return self._route(method, path, json)

    def _route(self, method: str, path: str, body: Any) -> FakeResponse:
        parts = path.strip("/").split("/")
        if path == "/tools/find":
            return FakeResponse(200, self._find(body))
        if parts[0] == "patients":
            return self._patient(parts[1], parts[2:])
        if parts[0] in ("studies", "series") and len(parts) == 2:
            table = self.studies if parts[0] == "studies" else self.series
            return FakeResponse(200, table[parts[1]]) if parts[1] in table else FakeResponse(404, {})
        if parts[0] == "series" and parts[2:] == ["instances"]:
            ids = self.series[parts[1]]["Instances"]
            return FakeResponse(200, [self._instance(self.instances[i]) for i in ids])
        if parts[0] == "instances" and parts[1] in self.instances:
            inst = self.instances[parts[1]]
            if parts[2:] == ["attachments", "dicom", "md5"]:
                md5 = "0" * 32 if inst.id in self.bad_md5 else hashlib.md5(inst.data).hexdigest()
                return FakeResponse(200, data=md5.encode())
            if parts[2:] == ["file"]:
                return FakeResponse(200, data=inst.data,
                                    fail_after=len(inst.data) // 2 if inst.id in self.broken else None)
        if parts[0] == "modalities" and parts[2] == "query":
            self.remote_queries.append(body)
            return FakeResponse(200, {"ID": "q1", "Path": "/queries/q1"})
        if parts[0] == "queries" and parts[2:] == ["answers"]:
            return FakeResponse(200, self._remote_find(self.remote_queries[-1]))
        if parts[0] == "queries" and method == "DELETE":
            return FakeResponse(200, {})
        if parts[0] == "modalities" and parts[2] == "move":
            self.moves.append(body)
            return FakeResponse(200, {"ID": "job1"})
        if parts[0] == "jobs":
            if self.job_running_polls > 0:
                self.job_running_polls -= 1
                return FakeResponse(200, {"ID": parts[1], "State": "Running"})
            return FakeResponse(200, {"ID": parts[1], "State": "Success"})
        return FakeResponse(404, {})

    # Patients exist through their studies (ids as Orthanc derives them from the PatientID).
    def _patient(self, pid: str, rest: list[str]) -> FakeResponse:
        studies = [s for s in self.studies.values() if s["ParentPatient"] == pid]
        if not studies:
            return FakeResponse(404, {})
        if rest == ["studies"]:
            return FakeResponse(200, studies)
        if rest == ["series"]:
            return FakeResponse(200, [self.series[i] for s in studies for i in s["Series"]])
        return FakeResponse(200, {"ID": pid, "Type": "Patient", "Studies": [s["ID"] for s in studies],
                                  "MainDicomTags": dict(studies[0]["PatientMainDicomTags"])})

    def _instance(self, inst: Inst) -> dict:
        return {"ID": inst.id, "FileSize": len(inst.data), "Type": "Instance",
                "MainDicomTags": {"SOPInstanceUID": inst.sop, "InstanceNumber": str(inst.number)}}

    def _find(self, body: dict) -> list:
        level, query = body["Level"], body["Query"]
        rows = {"Study": self.studies, "Series": self.series}.get(level, {})
        out = []
        for res in rows.values():
            tags = dict(res["MainDicomTags"])
            if level == "Study":
                tags.update(res["PatientMainDicomTags"])
            else:
                study = self.studies[res["ParentStudy"]]
                tags.update(study["MainDicomTags"], **study["PatientMainDicomTags"])
            if all(_match(*_fold(k, tags.get(k, ""), v)) for k, v in query.items()):
                out.append(res if body.get("Expand") else res["ID"])
        return out[: body.get("Limit") or None]

    def _remote_find(self, body: dict) -> list:
        query = body["Query"]
        return [a for a in self.remote_answers
                if all(_match(a.get(k, ""), v) for k, v in query.items() if v)]


def _fold(key: str, value: str, pattern: str) -> tuple[str, str]:
    # Orthanc 1.10 matches PatientID case-insensitively (measured).
    return (value.upper(), pattern.upper()) if key == "PatientID" else (value, pattern)


def _match(value: str, pattern: str) -> bool:
    if "\\" in pattern:
        return any(_match(value, p) for p in pattern.split("\\"))
    if "-" in pattern and pattern.replace("-", "").isdigit():
        low, _, high = pattern.partition("-")
        return (not low or value >= low) and (not high or value <= high)
    return fnmatch.fnmatchcase(value, pattern)


class FakeMinio:
    """In-memory S3 with minio's calling conventions."""

    def __init__(self) -> None:
        self.objects: dict[str, dict] = {}
        self.puts = 0
        self.refuse: str | None = None   # an S3 error code to answer every put with

    def put_object(self, bucket: str, name: str, data: Any, length: int, content_type: str = "",
                   metadata: dict | None = None, part_size: int = 0) -> Any:
        body = b""
        while len(body) < length:  # the SDK reads a whole part before sending it
            block = data.read(length - len(body))
            if not block:
                raise IOError("stream having not enough data")
            body += block
        if self.refuse:
            raise S3Error(None, self.refuse, "refused", name, "r", "h", bucket_name=bucket, object_name=name)
        self.puts += 1
        etag = hashlib.md5(body).hexdigest()
        meta = {f"x-amz-meta-{k}": v for k, v in (metadata or {}).items()}
        self.objects[name] = {"data": body, "etag": etag, "ctype": content_type, "meta": meta}
        return SimpleNamespace(etag=etag)

    def stat_object(self, bucket: str, name: str) -> Any:
        obj = self._get(bucket, name)
        return SimpleNamespace(size=len(obj["data"]), etag=obj["etag"], content_type=obj["ctype"],
                               metadata=obj["meta"])

    def get_object(self, bucket: str, name: str) -> Any:
        stream = io.BytesIO(self._get(bucket, name)["data"])
        stream.release_conn = lambda: None
        return stream

    def fget_object(self, bucket: str, name: str, path: str) -> None:
        with open(path, "wb") as fh:
            fh.write(self._get(bucket, name)["data"])

    def list_objects(self, bucket: str, prefix: str = "", recursive: bool = True):
        for name in sorted(self.objects):
            if name.startswith(prefix):
                obj = self.objects[name]
                yield SimpleNamespace(object_name=name, size=len(obj["data"]), etag=obj["etag"], is_dir=False)

    def remove_object(self, bucket: str, name: str) -> None:
        self.objects.pop(name, None)

    def remove_objects(self, bucket: str, items: list):
        for item in items:
            self.objects.pop(item.name, None)
        return iter(())

    def presigned_get_object(self, bucket: str, name: str, expires: Any = None) -> str:
        return f"http://s3.invalid/{bucket}/{name}?ttl={int(expires.total_seconds())}"

    def presigned_put_object(self, bucket: str, name: str, expires: Any = None) -> str:
        return f"http://s3.invalid/{bucket}/{name}?put-ttl={int(expires.total_seconds())}"

    def copy_object(self, bucket: str, name: str, source: Any, metadata: dict | None = None,
                    metadata_directive: str | None = None) -> None:
        obj = self._get(bucket, name)
        obj["meta"] = {f"x-amz-meta-{k}": v for k, v in (metadata or {}).items() if k != "Content-Type"}

    def _get(self, bucket: str, name: str) -> dict:
        if name not in self.objects:
            raise S3Error(None, "NoSuchKey", "no such key", name, "r", "h", bucket_name=bucket, object_name=name)
        return self.objects[name]


class FakeS3Http:
    """A urllib3 PoolManager in front of a FakeMinio: PUTs to its presigned URLs.

    Like S3 it refuses a body whose MD5 is not ``Content-MD5`` (``BadDigest``),
    unless ``ignore_content_md5`` (a store that does not check); ``corrupt``
    flips a byte on the way in; ``refuse`` answers an S3 error code;
    ``down`` raises as urllib3 does once its retries are spent.
    """

    def __init__(self, s3: FakeMinio) -> None:
        self.s3 = s3
        self.requests: list[tuple[str, str, dict]] = []
        self.ignore_content_md5 = False
        self.corrupt = False
        self.refuse: tuple[int, str] | None = None
        self.down = False

    def request(self, method: str, url: str, body: bytes = b"", headers: dict | None = None) -> Any:
        import base64
        from urllib.parse import urlsplit

        import urllib3

        headers = dict(headers or {})
        self.requests.append((method, url, headers))
        if self.down:
            raise urllib3.exceptions.MaxRetryError(None, url, "connection refused")
        if self.refuse:
            status, code = self.refuse
            return SimpleNamespace(status=status, headers={}, data=f"<Error><Code>{code}</Code></Error>".encode())
        assert method == "PUT" and "put-ttl=" in url, (method, url)
        if self.corrupt:
            body = bytes([body[0] ^ 1]) + body[1:]
        digest = hashlib.md5(body).digest()
        if not self.ignore_content_md5 and "Content-MD5" in headers \
                and base64.b64decode(headers["Content-MD5"]) != digest:
            return SimpleNamespace(status=400, headers={}, data=b"<Error><Code>BadDigest</Code></Error>")
        name = urlsplit(url).path.split("/", 2)[2]
        self.s3.puts += 1
        self.s3.objects[name] = {"data": body, "etag": digest.hex(), "ctype": headers.get("Content-Type", ""),
                                 "meta": {}}
        return SimpleNamespace(status=200, headers={"ETag": f'"{digest.hex()}"'}, data=b"")


class FakeWhisk:
    """Invokes are recorded; ``records[id]`` is an ended activation's record (absent: still running)."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.invokes: list[tuple[str, dict, bool]] = []
        self.fail = fail
        self.records: dict[str, dict] = {}
        self.lookups: list[str] = []
        self.lookup_fail: Exception | None = None

    def activation(self, activation_id: str) -> dict | None:
        self.lookups.append(activation_id)
        if self.lookup_fail is not None:
            raise self.lookup_fail
        return self.records.get(activation_id)

    def invoke(self, action: str, params: dict, *, blocking: bool = False, **_: Any) -> dict:
        if self.fail is not None:
            raise self.fail
        self.invokes.append((action, params, blocking))
        return {"activationId": f"act{len(self.invokes)}"}
