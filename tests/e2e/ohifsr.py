"""What OHIF 3.13.2 should show of a radcloud SR (radcloud.results.segsr): its measurement text and the
outline each planar group draws. Shared by the browser tests that open an SR in Orthanc's OHIF
(tests/e2e/browser/test_zero_click.py). On the path of every tier (pyproject: tests/e2e)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal


def ohif_lines(sr) -> dict[str, list[str]]:
    """Per segment (tracking identifier, in the report's order) the text OHIF writes for its
    measurements: each NUM of its groups (volumetric and planar, merged by tracking UID) as
    "<concept>: <value, 2 decimals> <UCUM code>"."""
    import highdicom as hd

    report = hd.sr.Comprehensive3DSR.from_dataset(sr)
    lines: dict[str, list[str]] = {}
    for group in [*report.content.get_volumetric_roi_measurement_groups(),
                  *report.content.get_planar_roi_measurement_groups()]:
        for m in group.get_measurements():
            # JS toFixed(2) on the double the DS string parses to: its exact binary value rounded half
            # away from zero (14927.685 is 14927.68499... as a double: "14927.68", not "...69")
            value = Decimal(float(m.value)).quantize(Decimal("0.01"), ROUND_HALF_UP)
            lines.setdefault(str(group.tracking_identifier), []).append(f"{m.name.meaning}: {value} {m.unit.value}")
    return lines


def planar_outlines(sr) -> dict[str, tuple[str, list[tuple[float, float]]]]:
    """Per segment: the SOP Instance UID of the image its planar group outlines it on, and the
    outline's vertices (column, row; 0,0 the first pixel's corner, as OHIF's image coordinates)."""
    import highdicom as hd

    report = hd.sr.Comprehensive3DSR.from_dataset(sr)
    out = {}
    for group in report.content.get_planar_roi_measurement_groups():
        region = group.roi
        image = str(region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        out[str(group.tracking_identifier)] = (image, [(float(x), float(y)) for x, y in region.value])
    return out
