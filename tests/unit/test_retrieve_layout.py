"""Object keys of staged DICOM: UIDs only by default; ChRIS's SERVICES/PACS tree on request."""

from __future__ import annotations

import pytest

from radcloud.store import layout
from radcloud.core.errors import BadRequest

TAGS = {"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.4", "SOPInstanceUID": "1.2.3.4.5",
        "PatientID": "MRN1", "PatientName": "DOE^JANE", "PatientBirthDate": "19700101",
        "StudyDescription": "CT, CHEST/ABD", "AccessionNumber": "ACC1", "StudyDate": "20250101",
        "SeriesNumber": "3", "SeriesDescription": "AXIAL 5mm", "InstanceNumber": "12"}


def test_uid_layout_has_no_patient_attributes():
    prefix = layout.series_prefix("uid", TAGS)
    key = layout.instance_key("uid", prefix, TAGS)
    assert key == "staged/1.2.3/1.2.3.4/1.2.3.4.5.dcm"
    assert not any(TAGS[t] in key for t in ("PatientID", "PatientName", "PatientBirthDate"))
    assert layout.manifest_key("1.2.3", "1.2.3.4") == "staged/1.2.3/1.2.3.4/manifest.json"


def test_chris_layout_matches_oxidicom_shape_and_sanitises():
    prefix = layout.series_prefix("chris", TAGS, pacs_name="PACS1")
    key = layout.instance_key("chris", prefix, TAGS)
    h = layout.series_hash("1.2.3.4")
    assert key == (f"SERVICES/PACS/PACS1/MRN1-DOE^JANE-19700101/CT_ CHEST_ABD-ACC1-20250101/"
                   f"00003-AXIAL 5mm-{h}/0012-1.2.3.4.5.dcm")
    assert len(h) == 7 and "," not in key


def test_series_hash_is_oxidicoms_seahash():
    """oxidicom: ``format!("{:x}", seahash::hash(uid))[..7]``. The crate's documented
    vector pins the function; a UID's hash is its hex prefix."""
    import seahash

    assert seahash.hash(b"to be or not to be") == 1988685042348123509
    assert layout.series_hash("to be or not to be") == "1b993a8"
    assert layout.series_hash("1.2.3.4") == format(seahash.hash(b"1.2.3.4"), "x")[:7]


def test_chris_layout_placeholders_for_missing_tags():
    tags = {k: v for k, v in TAGS.items() if k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                                                    "PatientID")}
    key = layout.instance_key("chris", layout.series_prefix("chris", tags), tags)
    assert "/MRN1--/StudyDescription-AccessionNumber-StudyDate/SeriesNumber-SeriesDescription-" in key
    assert key.endswith("/InstanceNumber-1.2.3.4.5.dcm")


def test_unknown_layout_is_refused():
    with pytest.raises(BadRequest) as err:
        layout.check_layout("flat")
    assert err.value.field == "layout"
