"""Seeding logic without a server: what is counted and what is skipped before generation."""

from __future__ import annotations

import io

import pydicom

from radcloud.ops.samples import seed
from radcloud.ops.samples.spec import archive_bench_spec
from radcloud.ops.samples.synthetic import plan, pydicom_test_files

SPEC = archive_bench_spec(4, series_per_study=2, instances_per_series=3, matrix=16)


class FakeOrthanc:
    """Holds SOP Instance UIDs per series UID; records the calls seeding makes."""

    def __init__(self, held: dict[str, set[str]], instances: set[str] = frozenset()) -> None:
        self.held = held
        self.instances = instances
        self.calls: list[tuple[str, int]] = []

    def held_series(self, series_uids):
        self.calls.append(("held_series", len(series_uids)))
        return {uid: (f"id-{uid}", len(self.held[uid])) for uid in series_uids if uid in self.held}

    def series_sop_uids(self, orthanc_id):
        self.calls.append(("series_sop_uids", 1))
        return self.held[orthanc_id.removeprefix("id-")]

    def held_instances(self, sop_uids):
        self.calls.append(("held_instances", len(sop_uids)))
        return self.instances & set(sop_uids)


def test_counts_are_distinct_patients_studies_series_instances():
    plans = plan(SPEC)
    counts = seed._sample_counts(plans, [])
    assert counts == {"patients": 2, "studies": 4, "series": 8, "instances": 24}


def test_counts_include_pydicom_files_by_patient_and_study():
    files = pydicom_test_files()
    counts = seed._sample_counts([], files)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert counts["instances"] == len(files)
    assert counts["patients"] == len({ds.PatientID for ds in headers})
    assert counts["studies"] == len({(ds.PatientID, ds.StudyInstanceUID) for ds in headers})


def _outcome():
    return {"uploaded": 0, "already_stored": 0, "failed": 0}


def test_held_instances_are_counted_and_never_generated():
    plans = plan(SPEC)
    complete, partial = plans[0], plans[1]
    fake = FakeOrthanc({complete.series_uid: {complete.sop_uid(n) for n in (1, 2, 3)},
                        partial.series_uid: {partial.sop_uid(2)}})
    outcome, reported = _outcome(), []
    payloads = list(seed._payloads(plans, [], fake, outcome, reported.append))
    assert outcome["already_stored"] == complete.count + 1
    assert reported == [complete.count, 1]
    assert len(payloads) == sum(p.count for p in plans) - complete.count - 1
    # One bulk question for all series, one listing for the partial series only.
    assert fake.calls == [("held_series", len(plans)), ("series_sop_uids", 1)]
    sent = [pydicom.dcmread(io.BytesIO(data)) for data in payloads[:2]]
    assert [(ds.SeriesInstanceUID, ds.InstanceNumber) for ds in sent] == \
           [(partial.series_uid, 1), (partial.series_uid, 3)]


def test_pydicom_files_are_sent_as_is_unless_held():
    files = pydicom_test_files()[:3]
    held = pydicom.dcmread(files[1], stop_before_pixels=True).SOPInstanceUID
    outcome = _outcome()
    payloads = list(seed._payloads([], files, FakeOrthanc({}, {held}), outcome, lambda n: None))
    assert payloads == [files[0].read_bytes(), files[2].read_bytes()]
    assert outcome["already_stored"] == 1


class _Uploads:
    """A session answering POST /instances: Success, AlreadyStored for b"held", 400 for b"junk"."""

    def request(self, method, url, *, data=None, **kwargs):
        from pacs_fakes import FakeResponse
        assert (method, url) == ("POST", "http://orthanc:8042/instances")
        if data == b"junk":
            return FakeResponse(400, {"HttpError": "Bad Request"})
        return FakeResponse(200, {"ID": "x", "Status": "AlreadyStored" if data == b"held" else "Success"})


def test_store_counts_refused_files_as_failed_and_goes_on():
    from radcloud.pacs.orthanc import Orthanc
    from radcloud.core.settings import Settings

    archive = seed._Archive(Settings.load({"orthanc_url": "http://orthanc:8042"}, environ={}), pool_size=1)
    archive.orthanc = Orthanc(archive.url, session=_Uploads())  # the upload calls, without a server
    assert [archive.store(d) for d in (b"new", b"held", b"junk")] == ["uploaded", "already_stored", "failed"]
