"""Load the sample studies into Orthanc: parallel, streaming, idempotent.

``radcloud stack seed`` calls :func:`seed_orthanc`. Instances are generated
one at a time on the calling thread and uploaded by a small thread pool
(``POST /instances``), with at most ``2 x workers`` encoded instances in
memory. Orthanc is asked which instances of each series it holds before
any pixel is generated, so a second seed is nearly free; instances it
already holds count as ``already_stored`` (so does an ``AlreadyStored``
answer).

Errors that make the whole seed pointless (Orthanc down, wrong password)
raise :class:`radcloud.errors.UpstreamError` naming the URL; one rejected
instance is counted as ``failed`` and logged without patient attributes.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pydicom
import requests

from radcloud.errors import UpstreamError
from radcloud.samples.spec import Spec
from radcloud.samples.synthetic import SeriesPlan, dataset_bytes, plan, pydicom_test_files
from radcloud.settings import Settings

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


class _Orthanc:
    """The three Orthanc calls seeding needs, on one pooled session."""

    def __init__(self, settings: Settings, pool_size: int) -> None:
        self.url = settings.orthanc_url.rstrip("/")
        self.timeout = settings.orthanc_timeout_s
        self.session = requests.Session()
        self.session.auth = (settings.orthanc_user, settings.orthanc_password.reveal())
        # Orthanc compresses answers by default; gzip would cost far more
        # CPU than the bytes it saves on loopback.
        self.session.headers["Accept-Encoding"] = "identity"
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        url = self.url + path
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise UpstreamError(f"Orthanc at {self.url} is unreachable ({type(exc).__name__}); "
                                "is the stack up? try `radcloud stack status`") from None
        if response.status_code in (401, 403):
            raise UpstreamError(f"Orthanc at {self.url} rejected the credentials "
                                f"(HTTP {response.status_code}); check orthanc_user/orthanc_password")
        return response

    def check(self) -> None:
        response = self.request("GET", "/system")
        if response.status_code != 200:
            raise UpstreamError(f"Orthanc at {self.url}/system answered HTTP {response.status_code}")

    def series_sop_uids(self, series_uid: str) -> set[str]:
        """SOP Instance UIDs Orthanc holds for a series UID (empty if none)."""
        found = self.request("POST", "/tools/lookup", data=series_uid)
        held: set[str] = set()
        for item in found.json() if found.status_code == 200 else []:
            if item.get("Type") == "Series":
                instances = self.request("GET", f"/series/{item['ID']}/instances")
                if instances.status_code == 200:
                    held.update(i.get("MainDicomTags", {}).get("SOPInstanceUID", "")
                                for i in instances.json())
        return held

    def has_instance(self, sop_uid: str) -> bool:
        found = self.request("POST", "/tools/lookup", data=sop_uid)
        return found.status_code == 200 and any(i.get("Type") == "Instance" for i in found.json())

    def store(self, data: bytes) -> str:
        """Upload one DICOM file; returns ``"uploaded"``, ``"already_stored"`` or ``"failed"``."""
        response = self.request("POST", "/instances", data=data,
                                headers={"Content-Type": "application/dicom"})
        if response.status_code != 200:
            log.warning("Orthanc at %s refused an instance: HTTP %s", self.url, response.status_code)
            return "failed"
        status = response.json().get("Status", "")
        return "already_stored" if status == "AlreadyStored" else "uploaded"


def seed_orthanc(settings: Settings, *, workers: int = 4, progress: Progress | None = None,
                 include_pydicom_files: bool = True, spec: Spec | None = None) -> dict:
    """Upload the sample archive (``spec``, default the standard samples) to Orthanc.

    Parameters:
        workers: upload threads (4 measured fastest on 2 cores).
        progress: called on this thread as ``progress(done, total)`` instances.
        include_pydicom_files: also upload pydicom's bundled real test files.

    Returns:
        ``{patients, studies, series, instances}`` of the sample set, and
        ``{uploaded, already_stored, failed, seconds}`` of this run.

    Raises:
        UpstreamError: Orthanc is unreachable or rejects the credentials.
    """
    started = time.perf_counter()
    orthanc = _Orthanc(settings, pool_size=max(1, workers))
    orthanc.check()
    plans = plan(spec)
    files = pydicom_test_files() if include_pydicom_files else []
    counts = _sample_counts(plans, files)
    total = counts["instances"]
    outcome = {"uploaded": 0, "already_stored": 0, "failed": 0}
    done = 0

    def report(n: int = 1) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    in_flight: deque[Future[str]] = deque()

    def collect(block_until: int) -> None:
        # Consume finished uploads in order; an UpstreamError re-raises here.
        while in_flight and (len(in_flight) > block_until or in_flight[0].done()):
            outcome[in_flight.popleft().result()] += 1
            report()

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="seed") as pool:
        try:
            for data in _payloads(plans, files, orthanc, outcome, report):
                in_flight.append(pool.submit(orthanc.store, data))
                collect(block_until=2 * max(1, workers))
            collect(block_until=0)
        except BaseException:
            for future in in_flight:
                future.cancel()
            raise
    seconds = time.perf_counter() - started
    log.info("seeded Orthanc at %s: %d uploaded, %d already stored, %d failed in %.1f s",
             orthanc.url, outcome["uploaded"], outcome["already_stored"], outcome["failed"], seconds)
    return {**counts, **outcome, "seconds": round(seconds, 3)}


def _payloads(plans: list[SeriesPlan], files: list[Path], orthanc: _Orthanc,
              outcome: dict[str, int], report: Callable[[int], None]) -> Iterator[bytes]:
    """Encoded instances Orthanc lacks; those it holds are counted, never generated.

    Asking first matters: the stack's Orthanc runs with OverwriteInstances,
    so a re-upload would be answered "Success", not "AlreadyStored".
    """
    for series_plan in plans:
        held = orthanc.series_sop_uids(series_plan.series_uid)
        missing = [n for n in range(1, series_plan.count + 1) if series_plan.sop_uid(n) not in held]
        if len(missing) < series_plan.count:
            outcome["already_stored"] += series_plan.count - len(missing)
            report(series_plan.count - len(missing))
        if missing:
            for ds in series_plan.datasets(missing):
                yield dataset_bytes(ds)
    for path in files:
        sop_uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        if orthanc.has_instance(sop_uid):
            outcome["already_stored"] += 1
            report(1)
        else:
            yield path.read_bytes()


def _sample_counts(plans: list[SeriesPlan], files: list[Path]) -> dict[str, int]:
    """Distinct patients/studies/series/instances, as Orthanc will count them."""
    patients = {p.patient.patient_id for p in plans}
    studies = {(p.patient.patient_id, p.study_uid) for p in plans}
    series = {(p.patient.patient_id, p.study_uid, p.series_uid) for p in plans}
    instances = sum(p.count for p in plans)
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        pid = str(ds.get("PatientID", ""))
        patients.add(pid)
        studies.add((pid, ds.StudyInstanceUID))
        series.add((pid, ds.StudyInstanceUID, ds.SeriesInstanceUID))
        instances += 1
    return {"patients": len(patients), "studies": len(studies), "series": len(series),
            "instances": instances}
