"""Orthanc's REST API: only the calls radcloud needs.

Orthanc is either the hospital's PACS or radcloud's gateway to one (remote
modalities are reached through its C-FIND/C-MOVE endpoints). The session is
injected (tests pass a fake); the default one asks for ``identity`` encoding
because Orthanc's HTTP compression turns a 300 MB/s DICOM download into
9 MB/s (stack.md trap 2), and keeps one connection alive (urllib3 sets
TCP_NODELAY on it).

The two calls made per instance while staging (its MD5, its file) skip
``requests`` when the session is radcloud's own: they go straight to a
urllib3 pool, which costs a third of the CPU per call (measured in
bench/retrieve_bench.py; staging shares 2 cores with Orthanc and the store).

Errors become :mod:`radcloud.core.errors`: unreachable, a refused login (401/403:
radcloud's own configuration, so an upstream problem, not the caller's) and
5xx are :class:`UpstreamError`; 404 is :class:`NotFound`. Messages name the
URL path and the status, never response bodies (they may hold patient data).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import requests
import urllib3

from radcloud.core.errors import BadRequest, NotFound, UpstreamError, reason_of

log = logging.getLogger(__name__)

LEVELS = ("Patient", "Study", "Series", "Instance")
_JOB_DONE = ("Success",)
_JOB_FAILED = ("Failure",)


class JobStillRunning(UpstreamError):
    """An Orthanc job outlived the wait; it goes on in Orthanc and can be waited for again."""

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class Orthanc:
    """A client of one Orthanc server."""

    def __init__(self, url: str, *, user: str = "", password: str = "",
                 session: Any = None, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._pool = None  # per-instance calls; only beside radcloud's own session
        if session is None:
            session = requests.Session()
            session.headers["Accept-Encoding"] = "identity"
            # Orthanc is reached directly; skip per-request proxy/netrc lookups.
            session.trust_env = False
            headers = urllib3.make_headers(basic_auth=f"{user}:{password}") if user else {}
            # GETs only: a retry is safe, and rides out Orthanc closing an idle keep-alive
            # connection (after 1 s) just as it is reused. A dead Orthanc still fails at once.
            self._pool = urllib3.PoolManager(maxsize=8, headers={**headers, "Accept-Encoding": "identity"},
                                             retries=urllib3.Retry(total=2, connect=2, read=1, status=0,
                                                                   redirect=False),
                                             timeout=urllib3.Timeout(timeout_s))
        if user:
            session.auth = (user, password)
        self.session = session

    @classmethod
    def from_settings(cls, settings: Any, *, session: Any = None) -> "Orthanc":
        settings.require("orthanc_url")
        return cls(settings.orthanc_url, user=settings.orthanc_user,
                   password=settings.orthanc_password.reveal(), session=session,
                   timeout_s=settings.orthanc_timeout_s)

    # -- plumbing ----------------------------------------------------------
    def _request(self, method: str, path: str, *, json_body: Any = None, stream: bool = False,
                 params: dict | None = None, data: bytes | None = None, idempotent: bool = False) -> Any:
        """One call; ``idempotent``: a POST that may be sent twice (storing an instance: Orthanc
        answers AlreadyStored) is sent once more when the connection broke, as GETs are."""
        url = self.url + path
        for attempt in (1, 2):
            try:
                resp = self.session.request(method, url, json=json_body, params=params, stream=stream,
                                            data=data, timeout=self.timeout_s)
                break
            except requests.ConnectionError as exc:
                # Orthanc closes an idle keep-alive connection after 1 s; one reused just then breaks.
                if idempotent and attempt == 1:
                    log.info("Orthanc %s %s: connection broke (%s); sending once more", method, path,
                             reason_of(exc))
                    continue
                raise UpstreamError(f"Orthanc at {self.url} unreachable ({method} {path}): {reason_of(exc)}; "
                                    "check that Orthanc runs and orthanc_url") from None
            except requests.RequestException as exc:
                raise UpstreamError(f"Orthanc at {self.url} unreachable ({method} {path}): "
                                    f"{reason_of(exc)}") from None
        status = resp.status_code
        if status < 400:
            return resp
        resp.close()
        self._raise_for(method, path, status)

    def _get(self, path: str, *, stream: bool = False) -> Any:
        """A GET on the per-instance path: the urllib3 pool when there is one, same errors."""
        if self._pool is None:
            return self._request("GET", path, stream=stream)
        try:
            resp = self._pool.request("GET", self.url + path, preload_content=not stream)
        except urllib3.exceptions.HTTPError as exc:
            raise UpstreamError(f"Orthanc at {self.url} unreachable (GET {path}): "
                                f"{type(exc).__name__}") from None
        if resp.status >= 400:
            resp.release_conn()
            self._raise_for("GET", path, resp.status)
        return _PoolResponse(resp)

    def _raise_for(self, method: str, path: str, status: int) -> None:
        if status == 404:
            raise NotFound(f"Orthanc has no {path} (404)")
        if status in (401, 403):
            raise UpstreamError(f"Orthanc at {self.url} refused radcloud's credentials ({status} on "
                                f"{method} {path}); check orthanc_user/orthanc_password")
        if status == 400:
            raise BadRequest(f"Orthanc refused {method} {path} as a bad request (400)")
        raise UpstreamError(f"Orthanc answered {status} to {method} {path}")

    def _json(self, method: str, path: str, body: Any = None, params: dict | None = None) -> Any:
        resp = self._request(method, path, json_body=body, params=params)
        try:
            return resp.json()
        except ValueError:
            raise UpstreamError(f"Orthanc answered {method} {path} with non-JSON") from None

    # -- local archive -----------------------------------------------------
    def system(self) -> dict:
        """``/system``: a cheap health and credentials check."""
        return self._json("GET", "/system")

    def store_instance(self, data: bytes) -> dict:
        """``POST /instances``: store one DICOM file; Orthanc's answer (``Status``, ``ID``, ...).

        ``Status`` is ``"Success"`` or ``"AlreadyStored"`` (an Orthanc with
        OverwriteInstances answers ``"Success"`` to a re-upload too). A file
        Orthanc cannot parse is a :class:`BadRequest`.
        """
        resp = self._request("POST", "/instances", data=data, idempotent=True)
        try:
            answer = resp.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise UpstreamError("Orthanc answered POST /instances with non-JSON")
        return answer

    def find(self, level: str, query: dict[str, str], *, expand: bool = True,
             limit: int | None = None, since: int | None = None) -> list[Any]:
        """``POST /tools/find``: one round trip; expanded resources when ``expand``."""
        if level not in LEVELS:
            raise BadRequest(f"level {level!r} is not one of {', '.join(LEVELS)}", field="level")
        body: dict[str, Any] = {"Level": level, "Query": query, "Expand": expand}
        if limit is not None:
            body["Limit"] = limit
        if since is not None:
            body["Since"] = since
        return self._json("POST", "/tools/find", body)

    def lookup(self, uid: str) -> list[dict]:
        """``POST /tools/lookup``: which resources carry this UID (``[{ID, Type, Path}]``)."""
        resp = self._request("POST", "/tools/lookup", data=uid.encode("ascii", "replace"))
        return resp.json()

    def resource(self, level: str, orthanc_id: str) -> dict:
        """``GET /{studies|series|instances}/{id}``."""
        return self._json("GET", f"/{_plural(level)}/{orthanc_id}")

    def children(self, level: str, orthanc_id: str, child_level: str) -> list[dict]:
        """``GET /{level}/{id}/{children}``: the expanded children, e.g. a patient's studies."""
        return self._json("GET", f"/{_plural(level)}/{orthanc_id}/{_plural(child_level)}")

    def changes(self, since: int, limit: int = 1000) -> dict:
        """``GET /changes?since=&limit=``: ``{Changes: [{ChangeType, ID, Seq, ...}], Last, Done}``."""
        return self._json("GET", "/changes", params={"since": since, "limit": limit})

    def last_change(self) -> int:
        """The sequence number of Orthanc's latest change (``/changes?last``)."""
        return int(self._json("GET", "/changes", params={"last": ""})["Last"])

    def now(self) -> str:
        """Orthanc's clock (``/tools/now``, UTC, ``YYYYMMDDTHHMMSS``): what ``LastUpdate`` is measured in."""
        return self._request("GET", "/tools/now").text.strip().strip('"')

    def metadata(self, level: str, orthanc_id: str, name: str) -> str:
        """One metadata item (e.g. an instance's ``RemoteAET``); NotFound when it is not set."""
        return self._request("GET", f"/{_plural(level)}/{orthanc_id}/metadata/{name}").text.strip()

    def delete(self, level: str, orthanc_id: str) -> None:
        """``DELETE /{studies|series|instances}/{id}``: the resource and everything under it."""
        self._request("DELETE", f"/{_plural(level)}/{orthanc_id}")

    def series_instances(self, series_id: str) -> list[dict]:
        """``GET /series/{id}/instances``: expanded (ID, FileSize, MainDicomTags)."""
        return self._json("GET", f"/series/{series_id}/instances")

    def preview(self, instance_id: str) -> bytes:
        """``GET /instances/{id}/preview``: Orthanc's own rendering of the image (PNG, its window)."""
        return self._request("GET", f"/instances/{instance_id}/preview").content

    def instance_md5(self, instance_id: str) -> str:
        """The MD5 Orthanc computed when it stored the file (attachment info)."""
        resp = self._get(f"/instances/{instance_id}/attachments/dicom/md5")
        return resp.text.strip().strip('"')

    def open_instance(self, instance_id: str) -> Any:
        """Stream ``/instances/{id}/file``; the caller reads ``.raw`` and closes."""
        return self._get(f"/instances/{instance_id}/file", stream=True)

    def iter_instance(self, instance_id: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        resp = self.open_instance(instance_id)
        try:
            yield from resp.iter_content(chunk)
        finally:
            resp.close()

    # -- remote modalities (through Orthanc) ------------------------------
    def modality_find(self, modality: str, level: str, query: dict[str, str]) -> list[dict]:
        """C-FIND on a registered modality; the answers, simplified.

        Orthanc keeps each query as a resource; it is deleted afterwards so a
        busy gateway does not accumulate them.
        """
        created = self._json("POST", f"/modalities/{modality}/query",
                             {"Level": level, "Query": query, "Normalize": True})
        query_id = created["ID"]
        try:
            return self._json("GET", f"/queries/{query_id}/answers", params={"expand": "", "simplify": ""})
        finally:
            try:
                self._request("DELETE", f"/queries/{query_id}")
            except Exception:  # cleanup only; the answers are what matters
                log.debug("could not delete query %s", query_id)

    def modality_move(self, modality: str, level: str, resources: list[dict[str, str]],
                      *, target_aet: str | None = None) -> str | None:
        """C-MOVE from ``modality`` into Orthanc; the job id to poll, or None if it is done.

        Orthanc >= 1.11 honours ``Asynchronous`` and answers a job; 1.10
        (Debian 12) runs the move within the request and answers ``{}``.
        """
        body: dict[str, Any] = {"Level": level, "Resources": resources, "Asynchronous": True}
        if target_aet:
            body["TargetAet"] = target_aet
        answer = self._json("POST", f"/modalities/{modality}/move", body)
        return answer.get("ID") if isinstance(answer, dict) else None

    def job(self, job_id: str) -> dict:
        return self._json("GET", f"/jobs/{job_id}")

    def wait_job(self, job_id: str, *, timeout_s: float, poll_s: float = 0.05,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> dict:
        """Poll ``/jobs/{id}`` until it ends.

        Raises UpstreamError when the job failed, JobStillRunning when it
        outlived ``timeout_s``.
        """
        deadline = clock() + timeout_s
        delay = poll_s
        while True:
            job = self.job(job_id)
            state = job.get("State")
            if state in _JOB_DONE:
                return job
            if state in _JOB_FAILED:
                raise UpstreamError(f"Orthanc job {job_id} failed: {job.get('ErrorDescription', 'unknown')}")
            if clock() >= deadline:
                raise JobStillRunning(f"Orthanc job {job_id} still {state} after {timeout_s:.0f} s",
                                      job_id=job_id)
            sleep(delay)
            delay = min(delay * 2, 1.0)

    # -- DICOMweb (optional QIDO-RS) --------------------------------------
    def qido(self, level: str, params: dict[str, str], root: str = "/dicom-web") -> list[dict]:
        """QIDO-RS search (``/studies``, ``/series``, ``/instances``) as DICOM JSON."""
        path = {"Study": "/studies", "Series": "/series", "Instance": "/instances"}.get(level)
        if path is None:
            raise BadRequest(f"QIDO-RS has no {level} level", field="level")
        return self._json("GET", root + path, params=params)


class _PoolResponse:
    """A urllib3 response seen through the few ``requests.Response`` members callers use."""

    def __init__(self, resp: Any) -> None:
        self.raw = resp
        self.headers = resp.headers

    @property
    def text(self) -> str:
        return self.raw.data.decode("utf-8", "replace")

    def iter_content(self, chunk: int) -> Iterator[bytes]:
        yield from self.raw.stream(chunk)

    def close(self) -> None:
        if self.raw.length_remaining:  # not read to the end: its connection cannot be reused
            self.raw.close()
        self.raw.release_conn()


def _plural(level: str) -> str:
    try:
        return {"Patient": "patients", "Study": "studies", "Series": "series", "Instance": "instances"}[level]
    except KeyError:
        raise BadRequest(f"level {level!r} is not one of {', '.join(LEVELS)}", field="level") from None


def patient_resource_id(patient_id: str) -> str:
    """Orthanc's id for the patient with this PatientID, without asking Orthanc.

    Orthanc names every resource by the SHA-1 of its DICOM identifiers (the
    Orthanc Book, "Orthanc identifiers"); for a patient that is the PatientID
    without its trailing padding, in five dash-joined groups of 8 hex digits.
    """
    digest = hashlib.sha1(patient_id.rstrip(" ").encode("utf-8")).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))
