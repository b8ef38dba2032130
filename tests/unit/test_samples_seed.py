"""Seeding logic without a server: what is counted and what is skipped before generation."""

from __future__ import annotations

import io

import pydicom

from radcloud.samples import seed
from radcloud.samples.spec import archive_bench_spec
from radcloud.samples.synthetic import plan, pydicom_test_files

SPEC = archive_bench_spec(4, series_per_study=2, instances_per_series=3, matrix=16)


class FakeOrthanc:
    """Answers series_instance_count from a dict; records nothing else."""

    def __init__(self, held: dict[str, int]) -> None:
        self.held = held
        self.asked: list[str] = []

    def series_instance_count(self, series_uid: str) -> int:
        self.asked.append(series_uid)
        return self.held.get(series_uid, 0)


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


def test_complete_series_are_skipped_before_generating_pixels():
    plans = plan(SPEC)
    complete, partial = plans[0], plans[1]
    fake = FakeOrthanc({complete.series_uid: complete.count, partial.series_uid: 1})
    outcome = {"uploaded": 0, "already_stored": 0, "failed": 0}
    reported = []
    payloads = list(seed._payloads(plans, [], fake, outcome, reported.append))
    # The complete series is counted as stored; the partial one is re-sent whole
    # (Orthanc answers AlreadyStored for the instance it has).
    assert outcome["already_stored"] == complete.count
    assert reported == [complete.count]
    assert len(payloads) == sum(p.count for p in plans) - complete.count
    assert fake.asked == [p.series_uid for p in plans]
    first = pydicom.dcmread(io.BytesIO(payloads[0]))
    assert first.SeriesInstanceUID == partial.series_uid


def test_pydicom_files_are_sent_as_is():
    files = pydicom_test_files()[:2]
    outcome = {"uploaded": 0, "already_stored": 0, "failed": 0}
    payloads = list(seed._payloads([], files, FakeOrthanc({}), outcome, lambda n: None))
    assert payloads == [f.read_bytes() for f in files]
