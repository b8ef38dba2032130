"""Running queries on a fake Orthanc: round trips, counts, normalised and ordered answers."""

from __future__ import annotations

import pytest

from radcloud.core.errors import BadRequest
from radcloud.pacs.derivedseries import uid

from radcloud.pacs import query as q
from radcloud.pacs import search
from radcloud.pacs.orthanc import Orthanc, patient_resource_id
from pacs_fakes import FakeOrthanc


@pytest.fixture
def fake():
    f = FakeOrthanc()
    f.add_study("st1", "1.2.1", "MRN1", "20250102", StudyTime="101500", StudyDescription="CT CHEST")
    f.add_series("se1", "st1", "1.2.1.1", 3, number=2)
    f.add_series("se2", "st1", "1.2.1.2", 2, modality="SR", number=1)
    f.add_study("st2", "1.2.2", "MRN2", "20240615", StudyDescription="MR BRAIN")
    f.add_series("se3", "st2", "1.2.2.1", 4, modality="MR")
    f.add_study("st3", "1.2.3", "MRN3", "20230101")
    return f


def run(fake, params):
    return search.run(q.parse(params), Orthanc("http://o", session=fake))


def test_study_search_is_two_round_trips_with_counts(fake):
    answer = run(fake, {"PatientID": ["MRN1", "MRN2"], "StudyDate": "20240101-"})
    assert [c[1] for c in fake.calls] == ["/tools/find", "/tools/find"]
    assert fake.calls[1][2]["Query"] == {"StudyInstanceUID": "1.2.1\\1.2.2"}
    first, second = answer["items"]
    assert (first["StudyInstanceUID"], second["StudyInstanceUID"]) == ("1.2.1", "1.2.2")  # newest first
    assert first["NumberOfStudyRelatedSeries"] == 2
    assert first["NumberOfStudyRelatedInstances"] == 5
    assert first["ModalitiesInStudy"] == ["CT", "SR"]
    assert first["StudyDate"] == "2025-01-02" and first["StudyTime"] == "10:15:00"
    assert first["PatientBirthDate"] == "1970-01-01"
    assert first["orthanc"] == {"patient": patient_resource_id("MRN1"), "study": "st1"}
    assert answer["total"] == 2 and answer["truncated"] is False


def test_counts_off_is_one_round_trip(fake):
    run(fake, {"counts": False})
    assert len(fake.calls) == 1


def test_date_range_and_paging(fake):
    answer = run(fake, {"StudyDate": "20240101-", "limit": 1, "offset": 1})
    assert answer["total"] == 2
    assert [i["StudyInstanceUID"] for i in answer["items"]] == ["1.2.2"]
    assert len(fake.calls[1][2]["Query"]["StudyInstanceUID"].split("\\")) == 1  # counts for the page only


def test_series_level_joins_parent_study(fake):
    answer = run(fake, {"level": "series", "StudyInstanceUID": "1.2.1"})
    items = answer["items"]
    assert [i["SeriesNumber"] for i in items] == [1, 2]
    assert items[0]["StudyInstanceUID"] == "1.2.1" and items[0]["PatientID"] == "MRN1"
    assert items[1]["NumberOfSeriesRelatedInstances"] == 3
    assert items[1]["orthanc"] == {"patient": patient_resource_id("MRN1"), "study": "st1", "series": "se1"}
    assert len(fake.calls) == 2  # find + one parent GET


def test_series_written_by_radcloud_are_marked_derived_locally_and_remotely(fake):
    made = uid("1.2.1.2", "lung-seg", "1", "seg-series")
    fake.series["se1"]["MainDicomTags"]["SeriesInstanceUID"] = made
    fake.series["se2"]["MainDicomTags"]["SeriesDescription"] = "radcloud-like words another tool wrote"
    items = run(fake, {"level": "series", "StudyInstanceUID": "1.2.1"})["items"]
    assert [(i["SeriesInstanceUID"], i["derived"]) for i in items] == [("1.2.1.2", False), (made, True)]
    fake.remote_answers = [{"StudyInstanceUID": "9.1", "SeriesInstanceUID": made, "SeriesNumber": "301",
                            "SeriesDescription": "renamed"},
                           {"StudyInstanceUID": "9.1", "SeriesInstanceUID": "9.1.2", "SeriesNumber": "3",
                            "SeriesDescription": "radcloud dcm2png pictures of #3"}]
    remote = run(fake, {"modality": "PACS", "level": "series", "StudyInstanceUID": "9.1"})["items"]
    assert {i["SeriesInstanceUID"]: i["derived"] for i in remote} == {made: True, "9.1.2": False}


def test_series_level_many_parents_uses_one_find(fake, monkeypatch):
    monkeypatch.setattr(search, "PARENT_GETS", 0)
    answer = run(fake, {"level": "series"})
    assert answer["total"] == 3
    assert [c[1] for c in fake.calls] == ["/tools/find", "/tools/find"]


def test_remote_query_splits_non_uid_lists_and_dedups(fake):
    fake.remote_answers = [
        {"PatientID": "A", "StudyInstanceUID": "9.1", "StudyDate": "20250101", "NumberOfStudyRelatedInstances": "7",
         "ModalitiesInStudy": "CT\\MR"},
        {"PatientID": "B", "StudyInstanceUID": "9.2", "StudyDate": "20240101"},
    ]
    answer = run(fake, {"modality": "PACS", "PatientID": ["A", "B", "A*"]})
    assert [qq["Query"]["PatientID"] for qq in fake.remote_queries] == ["A", "B", "A*"]
    assert all(qq["Level"] == "Study" for qq in fake.remote_queries)
    assert "NumberOfStudyRelatedInstances" in fake.remote_queries[0]["Query"]  # asked as a return key
    assert [i["StudyInstanceUID"] for i in answer["items"]] == ["9.1", "9.2"]
    assert answer["items"][0]["NumberOfStudyRelatedInstances"] == 7
    assert answer["items"][0]["ModalitiesInStudy"] == ["CT", "MR"]
    assert answer["items"][0]["orthanc"] is None and answer["source"] == "modality:PACS"


def test_qido_values_are_normalised():
    class Qido(FakeOrthanc):
        def _route(self, method, path, body):
            from pacs_fakes import FakeResponse
            return FakeResponse(200, [{"0020000D": {"vr": "UI", "Value": ["1.2.7"]},
                                       "00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^JANE"}]},
                                       "00080020": {"vr": "DA", "Value": ["20250101"]},
                                       "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
                                       "00201208": {"vr": "IS", "Value": [12]}}])
    answer = search.run(q.parse({"source": "dicomweb"}), Orthanc("http://o", session=Qido()))
    item = answer["items"][0]
    assert item["PatientName"] == "DOE^JANE" and item["StudyDate"] == "2025-01-01"
    assert item["ModalitiesInStudy"] == ["CT", "SR"] and item["NumberOfStudyRelatedInstances"] == 12


def test_search_by_a_few_exact_mrns_goes_straight_to_the_patients(fake):
    direct = run(fake, {"PatientID": ["MRN1", "MRN2", "MRN9"]})
    p1, p2 = patient_resource_id("MRN1"), patient_resource_id("MRN2")
    assert [c[1] for c in fake.calls] == [f"/patients/{p1}/studies", f"/patients/{p2}/studies",
                                          f"/patients/{patient_resource_id('MRN9')}/studies",
                                          f"/patients/{p1}/series", f"/patients/{p2}/series"]
    fake.calls.clear()
    # The same search through find (a date range that selects everything) answers the same.
    by_find = run(fake, {"PatientID": ["MRN1", "MRN2", "MRN9"], "StudyDate": "19000101-"})
    assert fake.calls[0][1] == "/tools/find"
    assert direct == by_find
    assert [i["NumberOfStudyRelatedInstances"] for i in direct["items"]] == [5, 4]


def test_mrns_match_exactly_and_case_sensitively_on_both_paths(fake):
    fake.add_study("st4", "1.2.4", "mrn1", "20220101")  # another patient, in lower case
    for extra in ({}, {"StudyDate": "19000101-"}):
        answer = run(fake, {"PatientID": "MRN1", **extra})
        assert [i["StudyInstanceUID"] for i in answer["items"]] == ["1.2.1"], extra
    assert run(fake, {"PatientID": "mrn1"})["total"] == 1
    assert run(fake, {"PatientID": "NOPE"})["items"] == []
    patients = run(fake, {"level": "patient", "PatientID": "MRN1"})
    assert [(p["PatientID"], p["NumberOfPatientRelatedStudies"]) for p in patients["items"]] == [("MRN1", 1)]
    series = run(fake, {"level": "series", "PatientID": "MRN1"})  # find path, filtered the same way
    assert {i["PatientID"] for i in series["items"]} == {"MRN1"}


def test_many_mrns_or_wildcards_use_one_find(fake):
    run(fake, {"PatientID": ["MRN1", "MRN2", "MRN3", "MRN4", "MRN5"], "counts": False})
    run(fake, {"PatientID": "MRN*", "counts": False})
    assert [c[1] for c in fake.calls] == ["/tools/find", "/tools/find"]


def test_patient_resource_id_is_orthancs():
    # Ids Orthanc 1.10 gave these PatientIDs (trailing padding is not part of the value).
    assert patient_resource_id("Abc 1") == "fb4804e1-c8debdc2-38927a53-e6cb68b2-913d18cb"
    assert patient_resource_id(" pad7 ") == "10535db5-e1f18edb-646279fd-ba21b134-a7b73257"


def test_recent_lists_what_orthanc_received_last_not_the_newest_study_dates(fake):
    """#21: Home's "recent" on the demo's 2025-dated studies: by Orthanc's arrival time (LastUpdate)."""
    fake.studies["st1"]["LastUpdate"] = "20261206T051500"
    fake.studies["st2"]["LastUpdate"] = "20261206T090000"   # scanned 2024, received last
    fake.studies["st3"]["LastUpdate"] = "20251101T120000"
    answer = run(fake, {"recent": True, "limit": 2})
    assert [(i["StudyInstanceUID"], i["received_at"]) for i in answer["items"]] == [
        ("1.2.2", "2026-12-06T09:00:00Z"), ("1.2.1", "2026-12-06T05:15:00Z")]
    assert answer["total"] == 3
    assert [i["StudyInstanceUID"] for i in run(fake, {})["items"]] == ["1.2.1", "1.2.2", "1.2.3"]  # by StudyDate
    assert run(fake, {"recent": "true"})["items"][0]["StudyInstanceUID"] == "1.2.2"   # from a GET query string
    for bad in ({"recent": True, "level": "series"}, {"recent": True, "modality": "PACS"}, {"recent": "soon"}):
        with pytest.raises(BadRequest) as err:
            q.parse(bad)
        assert err.value.field == "recent"
    assert q.iso_received("garbage") is None and q.iso_received(None) is None
