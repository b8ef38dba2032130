"""radcloud.run.ctslices: the CT slice checks lung-seg and ct-resample share."""

from pydicom.dataset import Dataset

from radcloud.run import ctslices


def _slice(z: float = 0.0, **attrs) -> Dataset:
    ds = Dataset()
    ds.Modality, ds.SOPClassUID, ds.PixelData = "CT", ctslices.CT_IMAGE, b"\0\0"
    ds.Rows = ds.Columns = 1
    ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = [0, 0, z], [1, 0, 0, 0, 1, 0], [1, 1]
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def test_each_refusal_names_its_cause():
    reason = lambda ds, **kw: ctslices.slice_reason(ds, "x works on CT only", **kw)  # noqa: E731
    assert reason(_slice()) is None
    assert reason(_slice(Modality="MR")) == "modality MR: x works on CT only"
    assert reason(_slice(NumberOfFrames=3)) == "multi-frame: not a single CT slice"
    assert reason(_slice(ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])) == "localizer (scout) image"
    assert reason(_slice(SOPClassUID="1.2.840.10008.5.1.4.1.1.2.1"), ct_image_only=True).startswith("not a (single-frame)")
    assert reason(_slice(), geometry=(*ctslices.GEOMETRY, "FrameOfReferenceUID")) == \
        "missing FrameOfReferenceUID: the slice cannot be placed in space"
    nopix = _slice()
    del nopix.PixelData
    assert reason(nopix) == "no pixel data"


def test_ordered_keeps_one_slice_per_position_along_the_normal():
    skipped: list[dict] = []
    items = [("c", _slice(2.0)), ("a", _slice(0.0)), ("b", _slice(1.0)), ("dup", _slice(1.0)),
             ("odd", _slice(3.0, Rows=2))]
    kept, normal = ctslices.ordered(items, skipped)
    assert [rel for rel, _ in kept] == ["a", "b", "c"] and list(normal) == [0, 0, 1]
    assert {s["path"]: s["reason"] for s in skipped} == {
        "dup": "duplicate slice position in its series",
        "odd": "matrix or orientation differs from the rest of its series"}
