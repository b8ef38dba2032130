"""The rules of radcloud's derived series: UIDs, numbers, descriptions, the marker, source references."""

from __future__ import annotations

from radcloud.pacs import derivedseries as derived

CT = "1.2.840.10008.5.1.4.1.1.2"


def test_rules_number_describe_and_recognise_derived_series():
    assert derived.series_number("3", "pictures") == 301 and derived.series_number(12, "measurements") == 1203
    assert derived.series_number(None, "segmentation") == 9902 and derived.series_number("x", "images") == 9904
    assert derived.description("radcloud lung-seg", "segmentation", "3", "CT chest") == \
        "radcloud lung-seg segmentation of #3 CT chest"
    assert derived.description("dcm2png", "pictures", "", "") == "radcloud dcm2png pictures of an unnumbered series"
    assert len(derived.description("p", "pictures", 1, "x" * 200)) == 64
    made = derived.uid("9.9", "p", "1.0", "seg")
    assert made.startswith(derived.UID_ROOT) and len(made) <= 64
    # The UID root decides, not the words: a renamed result is still one; another tool's text is not.
    assert derived.is_derived({"SeriesInstanceUID": made, "SeriesDescription": "renamed by a user"})
    assert not derived.is_derived({"SeriesInstanceUID": "1.2.3", "SeriesDescription": "radcloud dcm2png pictures of #3"})
    assert not derived.is_derived({"Manufacturer": "radcloud", "SeriesDescription": "AXIAL",  # a sample study
                                   "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.7212345"})  # pydicom's random UID
    assert not derived.is_derived({})
    assert derived.uid("9.9", "p", "1.0", "seg") == made
    assert derived.uid("9.9", "p", "1.0", "seg") != derived.uid("9.9", "p", "1.1", "seg")


def test_a_frame_picture_names_its_frame():
    refs = derived.source_references("9.9", [(CT, "9.9.1")], "s000/9.9.1-f0004.png")
    (src,) = refs["SourceImageSequence"]
    assert src.ReferencedSOPInstanceUID == "9.9.1" and src.ReferencedFrameNumber == 4


def test_a_result_is_dated_when_it_was_made():
    from datetime import datetime

    from pydicom.dataset import Dataset

    ds = derived.date_stamp(Dataset(), datetime(2026, 12, 6, 3, 4, 5))
    assert (ds.SeriesDate, ds.SeriesTime, ds.ContentDate, ds.ContentTime) == ("20261206", "030405", "20261206", "030405")
