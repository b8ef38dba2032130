"""ObjectStore over a fake minio client: key validation, MD5 handling, all-or-nothing writes."""

from __future__ import annotations

import hashlib
import io

import pytest

from radcloud.core.errors import BadRequest, NotFound, UpstreamError
from radcloud.store.storage import ChecksumMismatch, ObjectStore, validate_key
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


# -- checked single-part PUT (presigned, Content-MD5) --------------------------------------------
@pytest.fixture
def checked():
    from pacs_fakes import FakeS3Http

    s3 = FakeMinio()
    return ObjectStore(s3, "bucket", http=FakeS3Http(s3))


def test_checked_put_sends_content_md5_and_knows_the_md5_from_the_etag(checked):
    data = b"dicom bytes" * 100
    md5 = hashlib.md5(data).hexdigest()
    info = checked.put_stream("s/a.dcm", io.BytesIO(data), len(data), md5=md5, content_type="application/dicom")
    assert (info.md5, info.size) == (md5, len(data))
    method, url, headers = checked.http.requests[-1]
    assert method == "PUT" and "put-ttl=600" in url
    import base64
    assert base64.b64decode(headers["Content-MD5"]).hex() == md5
    assert checked.stat("s/a.dcm").md5 == md5
    assert checked.client.objects["s/a.dcm"]["ctype"] == "application/dicom"


@pytest.mark.parametrize("store_checks,said", [
    (True, "nothing stored"),   # S3 refuses the PUT (BadDigest)
    (False, "removed"),         # a store ignoring Content-MD5: the ETag gives it away
])
def test_checked_put_of_other_bytes_leaves_no_object(checked, store_checks, said):
    checked.http.corrupt, checked.http.ignore_content_md5 = True, not store_checks
    data = b"abc" * 50
    with pytest.raises(ChecksumMismatch) as err:
        checked.put_stream("s/b.dcm", io.BytesIO(data), len(data), md5=hashlib.md5(data).hexdigest())
    assert said in err.value.message
    assert checked.stat("s/b.dcm") is None


def test_checked_put_of_a_short_stream_sends_nothing(checked):
    with pytest.raises(UpstreamError) as err:
        checked.put_stream("s/d.dcm", io.BytesIO(b"abc"), 10, md5="0" * 32)
    assert "3 of 10 bytes" in err.value.message
    assert checked.http.requests == []


@pytest.mark.parametrize("status,code", [(403, "AccessDenied"), (503, "SlowDown"), (500, "")])
def test_checked_put_refused_names_the_s3_code(checked, status, code):
    checked.http.refuse = (status, code)
    with pytest.raises(UpstreamError) as err:
        checked.put_stream("s/e.dcm", io.BytesIO(b"x"), 1, md5=hashlib.md5(b"x").hexdigest())
    assert not isinstance(err.value, ChecksumMismatch)
    assert (code or f"HTTP {status}") in err.value.message


def test_checked_put_with_the_store_down_is_an_upstream_error(checked):
    checked.http.down = True
    with pytest.raises(UpstreamError) as err:
        checked.put_stream("s/f.dcm", io.BytesIO(b"x"), 1, md5=hashlib.md5(b"x").hexdigest())
    assert "MaxRetryError" in err.value.message


def test_without_md5_or_above_one_part_the_sdk_uploads_and_hashes(checked):
    checked.put_stream("s/g.bin", io.BytesIO(b"hello"), 5)
    big = b"y" * 40
    checked.put_stream("s/h.bin", io.BytesIO(big), 40, md5=hashlib.md5(big).hexdigest(), part_size=16)
    assert checked.http.requests == []
    assert checked.client.puts == 2
    assert checked.stat("s/g.bin").md5 == hashlib.md5(b"hello").hexdigest()
    assert checked.stat("s/h.bin").md5 == hashlib.md5(big).hexdigest()
