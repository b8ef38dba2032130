"""The Orthanc REST client against a fake session: requests sent, errors translated."""

from __future__ import annotations

import pytest

from radcloud.core.errors import BadRequest, NotFound, UpstreamError
from radcloud.pacs.orthanc import Orthanc
from pacs_fakes import FakeOrthanc


@pytest.fixture
def fake():
    f = FakeOrthanc()
    f.add_study("st1", "1.2.1", "MRN1", "20250102")
    f.add_series("se1", "st1", "1.2.1.1", 3)
    return f


def client(fake):
    return Orthanc("http://orthanc:8042/", user="u", password="p", session=fake)


def test_default_session_asks_for_identity_encoding():
    assert Orthanc("http://x").session.headers["Accept-Encoding"] == "identity"


def test_find_sends_one_expanded_request(fake):
    found = client(fake).find("Study", {"PatientID": "MRN1"}, limit=10)
    assert [s["ID"] for s in found] == ["st1"]
    assert fake.calls == [("POST", "/tools/find",
                           {"Level": "Study", "Query": {"PatientID": "MRN1"}, "Expand": True, "Limit": 10})]
    assert fake.auth == ("u", "p")


def test_find_refuses_unknown_level(fake):
    with pytest.raises(BadRequest):
        client(fake).find("Frame", {})
    assert fake.calls == []


def test_unreachable_is_upstream_naming_the_url(fake):
    fake.down = True
    with pytest.raises(UpstreamError) as err:
        client(fake).system()
    assert "http://orthanc:8042" in err.value.message and "/system" in err.value.message


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_upstream_not_caller_errors(fake, status):
    fake.status = status
    with pytest.raises(UpstreamError) as err:
        client(fake).find("Study", {})
    assert str(status) in err.value.message and "orthanc_password" in err.value.message


def test_404_is_not_found_and_500_upstream(fake):
    with pytest.raises(NotFound):
        client(fake).resource("Series", "nope")
    fake.status = 500
    with pytest.raises(UpstreamError) as err:
        client(fake).series_instances("se1")
    assert "500" in err.value.message


def test_md5_and_stream(fake):
    orthanc = client(fake)
    inst = orthanc.series_instances("se1")[0]
    md5 = orthanc.instance_md5(inst["ID"])
    data = b"".join(orthanc.iter_instance(inst["ID"]))
    import hashlib
    assert hashlib.md5(data).hexdigest() == md5 and len(data) == inst["FileSize"]


def test_modality_find_deletes_its_query(fake):
    fake.remote_answers = [{"PatientID": "MRN1", "StudyInstanceUID": "1.2.9"}]
    answers = client(fake).modality_find("PACS", "Study", {"PatientID": "MRN1"})
    assert answers[0]["StudyInstanceUID"] == "1.2.9"
    assert ("DELETE", "/queries/q1", None) in fake.calls


def test_wait_job_polls_until_done_and_times_out():
    class Jobs(FakeOrthanc):
        def __init__(self, states):
            super().__init__()
            self.states = states

        def _route(self, method, path, body):
            from pacs_fakes import FakeResponse
            return FakeResponse(200, {"State": self.states.pop(0) if len(self.states) > 1 else self.states[0],
                                      "ErrorDescription": "C-MOVE refused"})

    slept = []
    orthanc = Orthanc("http://o", session=Jobs(["Pending", "Running", "Success"]))
    assert orthanc.wait_job("j", timeout_s=10, sleep=slept.append)["State"] == "Success"
    assert len(slept) == 2
    with pytest.raises(UpstreamError, match="C-MOVE refused"):
        Orthanc("http://o", session=Jobs(["Failure"])).wait_job("j", timeout_s=10, sleep=slept.append)
    now = iter(range(100))
    with pytest.raises(UpstreamError, match="still Running"):
        Orthanc("http://o", session=Jobs(["Running"])).wait_job(
            "j", timeout_s=3, sleep=lambda s: None, clock=lambda: next(now))


class _Store(FakeOrthanc):
    """Answers POST /instances like Orthanc: AlreadyStored the second time, 400 for non-DICOM."""

    def __init__(self):
        super().__init__()
        self.bodies: list[bytes] = []

    def request(self, method, url, *, data=None, **kwargs):
        self.bodies.append(data)
        return super().request(method, url, data=data, **kwargs)

    def _route(self, method, path, body):
        from pacs_fakes import FakeResponse
        if method != "POST" or path != "/instances":
            return super()._route(method, path, body)
        data = self.bodies[-1]
        if not data.startswith(b"DICM"):
            return FakeResponse(400, {"HttpError": "Bad Request"})
        status = "AlreadyStored" if data in self.bodies[:-1] else "Success"
        return FakeResponse(200, {"ID": "i1", "Status": status})


def test_store_instance_posts_the_bytes_and_returns_orthancs_answer():
    fake = _Store()
    orthanc = Orthanc("http://o", user="u", password="p", session=fake)
    assert orthanc.store_instance(b"DICM one")["Status"] == "Success"
    assert orthanc.store_instance(b"DICM one")["Status"] == "AlreadyStored"
    assert fake.bodies == [b"DICM one", b"DICM one"] and fake.calls[0][:2] == ("POST", "/instances")
    with pytest.raises(BadRequest):
        orthanc.store_instance(b"not dicom")
    fake.status = 401
    with pytest.raises(UpstreamError, match="credentials"):
        orthanc.store_instance(b"DICM two")


class _BreaksOnce:
    """A session whose first request breaks as a reused keep-alive connection Orthanc closed does."""

    def __init__(self) -> None:
        self.sent = 0
        self.auth = None

    def request(self, method, url, **kw):
        import http.client

        import requests
        import urllib3

        self.sent += 1
        if self.sent == 1:
            raise requests.ConnectionError(urllib3.exceptions.ProtocolError(
                "Connection aborted.", http.client.RemoteDisconnected("Remote end closed connection without response")))
        resp = requests.Response()
        resp.status_code = 200
        resp._content = b'{"Status": "AlreadyStored", "ID": "i1"}'
        return resp


def test_storing_an_instance_is_sent_once_more_when_the_connection_broke():
    # Seen in a fresh-clone run: seeding a second Orthanc failed with a bare "ConnectionError".
    session = _BreaksOnce()
    answer = Orthanc("http://o", session=session).store_instance(b"DICM")
    assert answer["Status"] == "AlreadyStored" and session.sent == 2


def test_a_broken_connection_on_a_call_not_safe_to_repeat_names_the_cause():
    session = _BreaksOnce()
    with pytest.raises(UpstreamError) as err:
        Orthanc("http://o", session=session).find("Study", {})
    assert session.sent == 1
    assert err.value.message == ("Orthanc at http://o unreachable (POST /tools/find): Remote end closed connection "
                                 "without response; check that Orthanc runs and orthanc_url")
