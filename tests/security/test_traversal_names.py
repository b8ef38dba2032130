"""Every name that reaches storage is refused or made safe before it becomes an object key (no sockets).

Object keys (radcloud.store.storage.validate_key), the ChRIS layout's path
components built from DICOM tags and the PACS name (radcloud.store.layout), and
pfcon's ChRIS storage paths (``input_dirs``, ``job_output_path``) and job
ids (radcloud.pfcon.protocol). The live actions' refusals are in
tests/fuzz/test_bad_input.py.
"""

from __future__ import annotations

import pytest

from radcloud.store import layout
from radcloud.core.errors import BadRequest
from radcloud.pfcon import protocol as P
from radcloud.store.storage import validate_key

EVIL = ["..", "../x", "a/../../b", "a/./b", "/etc/passwd", "x/\x00y", "a/..", "..\\..\\x", "a/\n/b"]


@pytest.mark.parametrize("key", [k for k in EVIL if k != "..\\..\\x"])
def test_object_keys_refuse_traversal_and_control_chars(key):
    with pytest.raises(BadRequest):
        validate_key(key)


def test_layout_components_from_tags_cannot_climb():
    tags = {"StudyInstanceUID": "1.2", "SeriesInstanceUID": "1.2.3", "SOPInstanceUID": "1.2.3.4",
            "PatientID": "../..", "PatientName": "..", "PatientBirthDate": "/etc", "StudyDescription": "a/../b",
            "AccessionNumber": "..\\..", "StudyDate": "\x00", "SeriesNumber": "../1", "SeriesDescription": ".",
            "InstanceNumber": "..", "Modality": "CT"}
    for pacs in ("..", "../../x", "a/b", "."):
        prefix = layout.series_prefix("chris", tags, pacs_name=pacs)
        key = layout.instance_key("chris", prefix, tags)
        assert validate_key(key) == key
        assert key.startswith("SERVICES/PACS/") and "/../" not in key and "\x00" not in key


@pytest.mark.parametrize("path", ["..", "../x", "a/../../b", "a/..", "..\\..\\x", "", "/", "x\x01"])
def test_pfcon_storage_paths_refuse_traversal(path):
    assert P.storage_path(path) == ""
    if path == "":  # an empty form value is an empty list, as pfcon reads it (an fs plugin's copy job)
        assert P.CopyJob.parse({"jid": ["j1"], "input_dirs": [path]}).input_dirs == []
        return
    with pytest.raises(BadRequest) as err:
        P.CopyJob.parse({"jid": ["j1"], "input_dirs": [path]})
    assert err.value.field == "input_dirs"
    if path:
        with pytest.raises(BadRequest) as err:
            P.UploadJob.parse({"jid": ["j1"], "job_output_path": [path]})
        assert err.value.field == "job_output_path"


def test_pfcon_absolute_paths_stay_under_the_bucket_and_jids_are_names():
    assert P.storage_path("/home/user/feed_1/out") == "home/user/feed_1/out"
    for jid in ("../x", "a/b", "x\x00"):
        with pytest.raises(BadRequest) as err:
            P.DeleteJob.parse({"jid": [jid]})
        assert err.value.field == "jid"
