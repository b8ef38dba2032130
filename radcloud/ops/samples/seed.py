"""Load the sample studies into Orthanc: parallel, streaming, idempotent.

``radcloud stack seed`` calls :func:`seed_orthanc`. Instances are generated
one at a time on the calling thread and uploaded by a small thread pool
(``POST /instances``), with at most ``2 x workers`` encoded instances in
memory. Orthanc is asked which instances of each series it holds before
any pixel is generated, so a second seed is nearly free; instances it
already holds count as ``already_stored`` (so does an ``AlreadyStored``
answer).

Errors that make the whole seed pointless (Orthanc down, wrong password)
raise :class:`radcloud.core.errors.UpstreamError` naming the URL; one rejected
instance is counted as ``failed`` and logged without patient attributes.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pydicom
import requests

from radcloud.core.errors import BadRequest, NotFound, UpstreamError
from radcloud.pacs.orthanc import Orthanc
from radcloud.ops.samples.spec import Spec
from radcloud.ops.samples.synthetic import SeriesPlan, dataset_bytes, plan, pydicom_test_files
from radcloud.core.settings import Settings

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
# The encoded instances ``numbers`` (1-based, in that order) of one series.
Encode = Callable[[SeriesPlan, list[int]], Iterable[bytes]]
_FIND_CHUNK = 200     # UIDs per /tools/find (~13 kB of query)


class _Archive:
    """What seeding asks Orthanc, on one :class:`radcloud.pacs.orthanc.Orthanc` with a pooled session."""

    def __init__(self, settings: Settings, pool_size: int) -> None:
        session = requests.Session()
        # Orthanc compresses answers by default; gzip would cost far more
        # CPU than the bytes it saves on loopback.
        session.headers["Accept-Encoding"] = "identity"
        session.trust_env = False  # loopback: no per-request proxy/netrc lookups
        # One connection per upload thread, kept alive.
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self.orthanc = Orthanc.from_settings(settings, session=session)
        self.url = self.orthanc.url

    def check(self) -> None:
        """Fail early, in one line naming the URL, if Orthanc is down or refuses the login."""
        try:
            self.orthanc.system()
        except (BadRequest, NotFound) as exc:  # not an Orthanc at this URL
            raise UpstreamError(f"Orthanc at {self.url}/system answered HTTP {exc.status}") from None

    def held_series(self, series_uids: list[str]) -> dict[str, tuple[str, int]]:
        """``{series UID: (Orthanc ID, instance count)}`` for the UIDs Orthanc holds.

        One ``/tools/find`` per chunk of UIDs (a DICOM UID list match): a
        lookup per series cost ~10 ms each, so checking a 1,000-study
        archive took longer than uploading it.
        """
        held: dict[str, tuple[str, int]] = {}
        for start in range(0, len(series_uids), _FIND_CHUNK):
            chunk = series_uids[start:start + _FIND_CHUNK]
            for series in self.orthanc.find("Series", {"SeriesInstanceUID": "\\".join(chunk)}):
                uid = series.get("MainDicomTags", {}).get("SeriesInstanceUID", "")
                held[uid] = (series["ID"], len(series.get("Instances", [])))
        return held

    def held_instances(self, sop_uids: list[str]) -> set[str]:
        """The SOP Instance UIDs among ``sop_uids`` that Orthanc holds."""
        held: set[str] = set()
        for start in range(0, len(sop_uids), _FIND_CHUNK):
            chunk = sop_uids[start:start + _FIND_CHUNK]
            held.update(i.get("MainDicomTags", {}).get("SOPInstanceUID", "")
                        for i in self.orthanc.find("Instance", {"SOPInstanceUID": "\\".join(chunk)}))
        return held

    def series_sop_uids(self, orthanc_id: str) -> set[str]:
        """SOP Instance UIDs of one series Orthanc holds (by Orthanc ID); none if it is gone."""
        try:
            instances = self.orthanc.series_instances(orthanc_id)
        except NotFound:
            return set()
        return {i.get("MainDicomTags", {}).get("SOPInstanceUID", "") for i in instances}

    def store(self, data: bytes) -> str:
        """Upload one DICOM file; returns ``"uploaded"``, ``"already_stored"`` or ``"failed"``."""
        try:
            status = self.orthanc.store_instance(data).get("Status", "")
        except (BadRequest, NotFound) as exc:  # this file refused; the next may be fine
            log.warning("Orthanc at %s refused an instance: HTTP %s", self.url, exc.status)
            return "failed"
        return "already_stored" if status == "AlreadyStored" else "uploaded"


def encode_instances(series_plan: SeriesPlan, numbers: list[int]) -> Iterator[bytes]:
    """Generate and encode instances ``numbers`` of one series, one at a time (how seeding gets them)."""
    return (dataset_bytes(ds) for ds in series_plan.datasets(numbers))


def seed_orthanc(settings: Settings, *, workers: int = 4, progress: Progress | None = None,
                 include_pydicom_files: bool = True, spec: Spec | None = None,
                 encode: Encode = encode_instances) -> dict:
    """Upload the sample archive (``spec``, default the standard samples) to Orthanc.

    Parameters:
        workers: upload threads (4 measured fastest on 2 cores).
        progress: called on this thread as ``progress(done, total)`` instances.
        include_pydicom_files: also upload pydicom's bundled real test files.
        encode: where the encoded instances Orthanc lacks come from; a caller that
            seeds the same spec into several archives (the tests) may pass one that
            generates each instance once and keeps its bytes.

    Returns:
        ``{patients, studies, series, instances}`` of the sample set, and
        ``{uploaded, already_stored, failed, seconds}`` of this run.

    Raises:
        UpstreamError: Orthanc is unreachable or rejects the credentials.
    """
    started = time.perf_counter()
    orthanc = _Archive(settings, pool_size=max(1, workers))
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
            for data in _payloads(plans, files, orthanc, outcome, report, encode):
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


def _payloads(plans: list[SeriesPlan], files: list[Path], orthanc: _Archive,
              outcome: dict[str, int], report: Callable[[int], None],
              encode: Encode = encode_instances) -> Iterator[bytes]:
    """Encoded instances Orthanc lacks; those it holds are counted, never generated.

    Asking first matters: an Orthanc with OverwriteInstances (the stack's
    has it off) answers a re-upload "Success", not "AlreadyStored".
    """
    held = orthanc.held_series([p.series_uid for p in plans])
    for series_plan in plans:
        orthanc_id, count = held.get(series_plan.series_uid, ("", 0))
        if count >= series_plan.count:
            missing = []
        elif count:
            stored = orthanc.series_sop_uids(orthanc_id)
            missing = [n for n in range(1, series_plan.count + 1) if series_plan.sop_uid(n) not in stored]
        else:
            missing = list(range(1, series_plan.count + 1))
        if len(missing) < series_plan.count:
            outcome["already_stored"] += series_plan.count - len(missing)
            report(series_plan.count - len(missing))
        if missing:
            yield from encode(series_plan, missing)
    uids = [str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in files]
    stored_files = orthanc.held_instances(uids) if uids else set()
    for path, sop_uid in zip(files, uids):
        if sop_uid in stored_files:
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
