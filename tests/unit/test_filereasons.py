"""radcloud.run.filereasons: real reasons from exceptions, and an untrusted list read back safely."""

from __future__ import annotations

import json

import pytest

from radcloud.run import filereasons as fr


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:  # noqa: BLE001 - the traceback is what is under test
        return caught


@pytest.mark.parametrize("exc, expected", [
    (ValueError("invalid literal for int() with base 10: '1A'"),
     "invalid literal for int() with base 10: '1A' (ValueError)"),
    (KeyError("BitsAllocated"), "required DICOM attribute or key missing: 'BitsAllocated'"),
    (RuntimeError("With tag (0008,0008) got exception: boom\nTraceback (most recent call last):\n  File x"),
     "With tag (0008,0008) got exception: boom (RuntimeError)"),
])
def test_explain_gives_the_message_not_the_class(exc, expected):
    assert fr.explain(exc) == expected


def test_explain_names_memory_and_where_a_silent_exception_came_from():
    assert fr.explain(MemoryError()).startswith("not enough memory to decode it; raise the plugin's memory limit")
    silent = fr.explain(_raised(RuntimeError()))
    assert silent.startswith("RuntimeError raised without a message in test_filereasons.py:")


def test_written_list_is_read_back_into_the_outcome(tmp_path, capsys):
    reasons = fr.FileReasons("p", 3)
    reasons.ok(2)
    reasons.skip("a/b.dcm", "no   pixel\ndata")
    reasons.write(tmp_path)
    assert "skipped a/b.dcm: no pixel data" in capsys.readouterr().err
    outcome, lines = {}, []
    fr.into_outcome(tmp_path, outcome, lines.append)
    assert outcome == {"warnings": 1, "processed": 2, "file_reasons": [{"file": "a/b.dcm", "reason": "no pixel data"}]}
    assert fr.first(outcome) == "a/b.dcm: no pixel data" and lines == [
        "1 of 3 input file(s) not processed; the list is in file-reasons.json"]


def test_a_malformed_or_linked_list_never_breaks_the_runner(tmp_path):
    (tmp_path / fr.FILE_NAME).write_text("{not json")
    found = fr.read(tmp_path)
    assert found["not_processed"][0]["reason"].startswith("the plugin wrote an unreadable list:")
    (tmp_path / fr.FILE_NAME).unlink()
    (tmp_path / "elsewhere.json").write_text(json.dumps({"not_processed": [{"file": "x", "reason": "y"}]}))
    (tmp_path / fr.FILE_NAME).symlink_to(tmp_path / "elsewhere.json")
    assert fr.read(tmp_path) is None  # a link may point outside the output dir: not followed
    assert fr.read(tmp_path / "missing") is None


def test_a_message_about_a_patient_attribute_never_carries_its_value():
    exc = ValueError("With tag (0010,0010) got exception: invalid value for VR PN: 'DOE^JANE'")
    assert "DOE" not in fr.explain(exc) and "(0010,0010)" in fr.explain(exc)
    assert fr.explain(ValueError("invalid literal for int() with base 10: '1A'")).endswith("'1A' (ValueError)")
