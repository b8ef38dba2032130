"""ObjectStore over a fake minio client: key validation, MD5 handling, all-or-nothing writes."""

from __future__ import annotations

import hashlib
import io

import pytest

from radcloud.errors import BadRequest, NotFound, UpstreamError
from radcloud.storage import ChecksumMismatch, ObjectStore, validate_key
from pacs_fakes import FakeMinio


@pytest.fixture
def store():
    return ObjectStore(FakeMinio(), "bucket")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a/./b", "..", "a\x00b", "a\nb", "x" * 1025])
def test_unsafe_keys_are_refused(store, key):
    with pytest.raises(BadRequest) as err:
        store.put_bytes(key, b"x")
    assert err.value.field == "key"


def test_prefix_may_be_empty_but_not_escape():
    assert validate_key("", prefix=True) == ""
    with pytest.raises(BadRequest):
        validate_key("../", prefix=True)


def test_put_bytes_records_md5_in_metadata(store):
    info = store.put_bytes("a/b.bin", b"hello")
    assert info.md5 == hashlib.md5(b"hello").hexdigest()
    assert store.client.objects["a/b.bin"]["meta"]["x-amz-meta-md5"] == info.md5
    assert store.stat("a/b.bin").md5 == info.md5


def test_put_stream_with_wrong_md5_stores_nothing(store):
    with pytest.raises(ChecksumMismatch):
        store.put_stream("a/bad", io.BytesIO(b"hello"), 5, md5="0" * 32)
    assert store.stat("a/bad") is None
    assert store.client.puts == 0


def test_put_stream_short_stream_stores_nothing(store):
    with pytest.raises(UpstreamError):
        store.put_stream("a/short", io.BytesIO(b"hel"), 5)
    assert store.stat("a/short") is None


def test_md5_must_be_hex(store):
    with pytest.raises(BadRequest) as err:
        store.put_stream("a/x", io.BytesIO(b"x"), 1, md5="nothex")
    assert err.value.field == "md5"


def test_json_round_trip_and_missing_object(store):
    store.put_json("m.json", {"b": 1, "a": [1, 2]})
    assert store.get_json("m.json") == {"a": [1, 2], "b": 1}
    assert store.client.objects["m.json"]["ctype"] == "application/json"
    with pytest.raises(NotFound):
        store.get_json("nope.json")


def test_put_file_guesses_type_and_get_to_file(store, tmp_path):
    src = tmp_path / "x.dcm"
    src.write_bytes(b"DICM" * 10)
    info = store.put_file("f/x.dcm", src)
    assert info.content_type == "application/dicom"
    assert info.md5 == hashlib.md5(b"DICM" * 10).hexdigest()
    store.get_to_file("f/x.dcm", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"DICM" * 10
    stream = store.open("f/x.dcm")
    assert stream.read() == b"DICM" * 10
    stream.close()


def test_list_and_delete_prefix(store):
    for k in range(3):
        store.put_bytes(f"p/{k}", bytes([k]))
    store.put_bytes("q/0", b"z")
    listed = list(store.list("p/"))
    assert [i.key for i in listed] == ["p/0", "p/1", "p/2"]
    assert listed[1].md5 == hashlib.md5(b"\x01").hexdigest()
    assert store.delete_prefix("p/") == 3
    assert list(store.list("p/")) == [] and store.stat("q/0") is not None


def test_delete_prefix_needs_a_prefix(store):
    with pytest.raises(BadRequest):
        store.delete_prefix("")


def test_store_refusal_is_an_upstream_error_naming_the_key(store):
    store.client.refuse = "AccessDenied"
    with pytest.raises(UpstreamError) as err:
        store.put_bytes("a/b", b"x")
    assert "AccessDenied" in err.value.message and "a/b" in err.value.message


def test_presign_passes_ttl(store):
    store.put_bytes("a", b"x")
    assert store.presign_get("a", 60).endswith("ttl=60")
