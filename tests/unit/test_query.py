"""The query model: every field validated before any PACS call, 400s naming the field."""

from __future__ import annotations

import pytest

from radcloud.pacs import query as q
from radcloud.core.errors import BadRequest


def bad(params, field, **kw):
    with pytest.raises(BadRequest) as err:
        q.parse(params, **kw)
    assert err.value.field == field, err.value.message
    assert err.value.status == 400
    return err.value.message


def test_defaults():
    parsed = q.parse({})
    assert (parsed.level, parsed.limit, parsed.offset, parsed.counts, parsed.filters) == ("study", 100, 0, True, {})


def test_multi_mrn_and_modalities_become_dicom_lists():
    parsed = q.parse({"PatientID": ["MRN1", "MRN2"], "ModalitiesInStudy": ["ct", "MR"]})
    assert parsed.filters == {"PatientID": "MRN1\\MRN2", "ModalitiesInStudy": "CT\\MR"}


def test_modality_at_study_level_means_modalities_in_study():
    assert q.parse({"Modality": "CT"}).filters == {"ModalitiesInStudy": "CT"}
    assert q.parse({"level": "series", "Modality": "CT"}).filters == {"Modality": "CT"}


@pytest.mark.parametrize("value, expected", [
    ("20250314", "20250314"), ("2025-03-14", "20250314"), ("20240101-", "20240101-"),
    ("-20241231", "-20241231"), ("20240101-20241231", "20240101-20241231"),
    ({"from": "2024-01-01"}, "20240101-"), ({"to": "2024-12-31"}, "-20241231"),
    ({"from": "2024-01-01", "to": "2024-12-31"}, "20240101-20241231"),
])
def test_dates_single_open_and_closed_ranges(value, expected):
    assert q.parse({"StudyDate": value}).filters["StudyDate"] == expected
    assert q.parse({"level": "series", "SeriesDate": value}).filters["SeriesDate"] == expected


@pytest.mark.parametrize("value", ["20251301", "20250230", "2025-3-1", "yesterday", "20250101-20240101",
                                   "2024-01-01-2024-02-01", "-", {"from": "x"}, {"since": "20240101"}, 20250101])
def test_bad_dates(value):
    bad({"StudyDate": value}, "StudyDate")


def test_times_and_ranges():
    assert q.parse({"StudyTime": "09:30"}).filters["StudyTime"] == "0930"
    assert q.parse({"StudyTime": "0900-173000"}).filters["StudyTime"] == "0900-173000"
    bad({"StudyTime": "25:00"}, "StudyTime")
    bad({"StudyTime": "1000-0900"}, "StudyTime")


@pytest.mark.parametrize("uid", ["../x", "1.2/3", ".hidden", "1.2.3*", "1 2", "é.1", "1." + "2" * q.MAX_UID])
def test_unsafe_uids(uid):
    bad({"StudyInstanceUID": uid}, "StudyInstanceUID")


@pytest.mark.parametrize("uid", ["1.02.3", "1..2", "1.2.", "abc", "1." + "2" * 70,
                                 "05fa52f0e599f17b8186ff18fcdf2b5570a52206a75c4d03afebf5c475dc8758"])
def test_non_conformant_uids_orthanc_holds_are_accepted(uid):
    # Orthanc accepts these (pydicom's bad_sequence.dcm has hex-digest UIDs):
    # anything it holds must be retrievable, so only key safety is checked.
    assert q.parse({"StudyInstanceUID": uid}).filters["StudyInstanceUID"] == uid


def test_uid_lists():
    assert q.parse({"StudyInstanceUID": ["1.2.3", "1.2.4"]}).filters["StudyInstanceUID"] == "1.2.3\\1.2.4"
    bad({"StudyInstanceUID": ["1.2.3"] * (q.MAX_LIST + 1)}, "StudyInstanceUID")
    bad({"StudyInstanceUID": []} | {"StudyInstanceUID": ["1.2", 3]}, "StudyInstanceUID")


@pytest.mark.parametrize("value", ["*", "**", "?*", "a*b*c*d*e*f*g*h*i*", "DOE\\SMITH", "DOE\x00"])
def test_unsafe_wildcards_and_characters(value):
    bad({"PatientName": value}, "PatientName")


def test_wildcards_allowed_only_in_text_and_ids():
    assert q.parse({"PatientName": "DOE^J*", "PatientID": "RC1?"}).filters == {
        "PatientName": "DOE^J*", "PatientID": "RC1?"}
    bad({"PatientSex": "*"}, "PatientSex")
    bad({"ModalitiesInStudy": "C*"}, "ModalitiesInStudy")


def test_unknown_field_and_level_mismatch_are_named():
    assert "Foo" in bad({"Foo": "x"}, "Foo")
    assert "level=series" in bad({"SeriesDescription": "AX*"}, "SeriesDescription")
    bad({"level": "patient", "StudyDate": "20240101"}, "StudyDate")
    bad({"level": "frame"}, "level")
    bad({"level": 3}, "level")


def test_paging_and_options():
    assert q.parse({"limit": "5", "offset": 10, "counts": "false"}).counts is False
    bad({"limit": 0}, "limit")
    bad({"limit": 2000}, "limit", max_limit=1000)
    bad({"offset": -1}, "offset")
    bad({"limit": True}, "limit")
    bad({"counts": "maybe"}, "counts")
    bad({"modality": "bad name!"}, "modality")
    bad({"source": "ftp"}, "source")
    bad({"source": "dicomweb", "level": "series"}, "source")


def test_sex_normalised_and_checked():
    assert q.parse({"PatientSex": "f"}).filters["PatientSex"] == "F"
    bad({"PatientSex": "X"}, "PatientSex")
    bad({"PatientID": ["A", "B"], "PatientSex": ["F"]}, "PatientSex")


def test_underscore_params_and_empty_values_are_ignored():
    assert q.parse({"_principal": {"name": "x"}, "PatientID": "", "StudyDate": None}).filters == {}


def test_normalise_iso_dates_times_and_numbers():
    item = q.normalise({"StudyDate": "20250314", "StudyTime": "093012.123", "SeriesNumber": " 3"},
                       ("StudyDate", "StudyTime", "SeriesNumber", "StudyDescription"))
    assert item == {"StudyDate": "2025-03-14", "StudyTime": "09:30:12", "SeriesNumber": 3,
                    "StudyDescription": None}


def test_page_orders_newest_first_and_slices():
    items = [{"StudyDate": d, "StudyTime": "10:00:00", "StudyInstanceUID": u}
             for d, u in [("2024-01-01", "1.3"), ("2025-01-01", "1.1"), ("2025-01-01", "1.0"), (None, "1.9")]]
    out = q.page(q.parse({"limit": 2, "offset": 1}), items)
    assert out["total"] == 4
    assert [i["StudyInstanceUID"] for i in out["items"]] == ["1.1", "1.3"]
