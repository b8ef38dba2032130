"""Property-based fuzzing of the query parser (radcloud/pacs/query.py): no sockets, fast.

Any JSON the web layer can hand over either parses into a Query whose
filters are safe C-FIND strings, or raises BadRequest naming the field —
never another exception (which the action guard would turn into a 500).
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radcloud.pacs import query
from radcloud.core.errors import BadRequest

FIELDS = sorted(query.FIELDS)
KEYS = st.sampled_from(FIELDS + sorted(query.CONTROL_KEYS) + ["", "_x", "PatientId", "__proto__", "../x"])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=12)
DICOMISH = st.one_of(
    st.from_regex(r"\A[0-9]{8}(-[0-9]{8})?\Z"), st.from_regex(r"\A-?[0-9]{4}-?[0-9]{2}-?[0-9]{2}-?\Z"),
    st.from_regex(r"\A[0-9.]{1,70}\Z"), st.from_regex(r"\A[A-Za-z*?^ ]{0,20}\Z"),
    st.from_regex(r"\A[0-9:.]{0,15}\Z"), st.sampled_from(["CT", "MR", "ct", "*", "?", "\\", "a\\b", "\x00", "O", "F"]),
    st.lists(st.text(max_size=12), max_size=query.MAX_LIST + 3),
)
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(params, max_limit=1000):
    try:
        parsed = query.parse(params, max_limit=max_limit)
    except BadRequest as exc:
        assert exc.status == 400 and exc.field is not None and exc.message
        return None
    assert parsed.level in query.LEVELS and 1 <= parsed.limit <= max_limit and parsed.offset >= 0
    for key, value in parsed.filters.items():
        assert key in query.FIELDS and isinstance(value, str)
        assert not re.search(r"[\x00-\x1f\x7f]", value), (key, value)  # nothing Orthanc would choke on
    return parsed


@SETTINGS
@given(st.dictionaries(KEYS, JSON | DICOMISH, max_size=6))
def test_any_json_parses_or_is_a_400_naming_the_field(params):
    _check(params)


@SETTINGS
@given(st.dictionaries(st.sampled_from(FIELDS), DICOMISH, min_size=1, max_size=4),
       st.sampled_from(query.LEVELS), st.integers(1, 5000))
def test_dicom_shaped_values_at_every_level(filters, level, max_limit):
    _check({**filters, "level": level, "limit": min(max_limit, 50)}, max_limit=max_limit)


@SETTINGS
@given(st.text(max_size=80))
def test_any_string_in_every_field(text):
    for field in FIELDS:
        _check({field: text, "level": "instance"})


def test_hand_written_bad_inputs_name_the_field():
    cases = {
        "StudyInstanceUID": ["1/2", ".2", "1.2 a", "1." * 70 + "1", ["1.2", "x/y"], "1.2\x00x"],
        "StudyDate": ["20241301", "2024-02-30", "yesterday", "20240101-20230101-", "2024010"],
        "PatientID": ["*" * 20, "a" * 200, ["MRN"] * (query.MAX_LIST + 1), "MRN\\OTHER"],
        "PatientName": ["\x00", "Doe\\Jane", "?" * 9],
        "StudyTime": ["25", "1260", "12:00:61"],
        "Modality": ["C T", "ct;drop", "X" * 20],
        "limit": [0, -1, 10**9, "ten", 1.5, None],
        "offset": [-1, "x", 10**9],
        "level": ["STUDYY", 3, None],
    }
    accepted = []
    for field, values in cases.items():
        for value in values:
            params = {field: value, "level": "instance"} if field != "level" else {"level": value}
            try:
                query.parse(params)
                accepted.append((field, value))
            except BadRequest as exc:
                assert exc.field == field or (field == "Modality" and exc.field == "ModalitiesInStudy"), (field, value, exc.field)
    # lower-case modality codes and a plain PatientName wildcard count are fine; everything else must be refused
    assert [a for a in accepted if a[0] not in ("Modality",)] == [], accepted


def test_unicode_names_are_accepted():
    parsed = query.parse({"PatientName": "Müller^Zoë*", "level": "patient"})
    assert parsed.filters["PatientName"].startswith("Müller")
