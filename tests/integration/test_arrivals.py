"""Studies arriving in the real Orthanc fire ``radcloud-study-stable`` on the stack's localwhisk, exactly once,
through a Redis restart and an Orthanc restart in the middle of a burst of 100 studies, the watcher
running as the stack's ``arrivals`` service."""

from __future__ import annotations

import os
import secrets
import time
from collections import Counter

import pytest
from pydicom.uid import generate_uid

from radcloud.arrivals.rules import PENDING as ROUTING_PENDING
from radcloud.arrivals.watch import CURSOR, PREFIX, TRIGGER
from radcloud.pacs.orthanc import Orthanc
from radcloud.ops.samples.synthetic import dataset_bytes, generate_many_studies

pytestmark = pytest.mark.integration

RECORD = "def main(args):\n    return {'study_uid': args.get('study_uid'), 'series': len(args.get('series', []))}\n"


@pytest.fixture(scope="module")
def whisk(stack):
    """The stack's localwhisk and arrivals watcher (``stack up --with-arrivals``), with the trigger, a rule
    and an action standing for the router; both stopped again after the module."""
    from localwhisk.wskclient import WhiskClient, http_transport, read_wskprops

    for key in stack.redis.scan_iter(PREFIX + "*"):  # the watcher starts at Orthanc's present
        stack.redis.delete(key)
    os.environ["RADCLOUD_ARRIVALS_STABLE_AGE_S"] = "1"  # the service's environment, read at start
    try:
        stack.ensure_up(("whisk", "arrivals"))
    finally:
        del os.environ["RADCLOUD_ARRIVALS_STABLE_AGE_S"]
    props = read_wskprops(stack.state_dir / "whisk" / ".wskprops")
    client = WhiskClient(http_transport(props["APIHOST"]), props["AUTH"])
    for collection, name, body in (
            ("actions", "arrived", {"exec": {"kind": "python:3.11", "code": RECORD}}),
            ("triggers", TRIGGER, {}),
            ("rules", "route-arrivals", {"trigger": f"/_/{TRIGGER}", "action": "/_/arrived"})):
        status, answer = client.put(collection, name, body)
        assert status == 200, answer
    yield client
    stack.stop("arrivals")
    stack.stop("whisk")
    # No route action ran here ("arrived" stands for it): the arrivals it expected are no one's to route.
    stack.redis.delete(ROUTING_PENDING)


def unique_studies(n: int) -> dict[str, bytes]:
    """n one-instance studies (StudyInstanceUID -> file) with UIDs no other test or earlier run used."""
    root, out = f"1.2.826.0.1.3680043.10.{secrets.randbelow(10**8)}.", {}
    for ds in generate_many_studies(n, matrix=16):
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(root), generate_uid(root)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(root)
        out[str(ds.StudyInstanceUID)] = dataset_bytes(ds)
    return out


def fired_uids(client) -> Counter:
    status, records = client.request("GET", "/api/v1/namespaces/_/activations",
                                      query=f"name={TRIGGER}&docs=true&limit=200")
    assert status == 200, records
    return Counter(r["response"]["result"]["study_uid"] for r in records)


def test_a_burst_with_redis_and_orthanc_restarts_is_routed_exactly_once(stack, whisk):
    """The watcher runs as the stack's service (its own process), as `stack up --with-arrivals` runs it."""
    orthanc = Orthanc.from_settings(stack.settings)
    files = unique_studies(100)
    for i, data in enumerate(files.values()):
        if i == 40:
            stack.restart("redis")
        if i == 70:
            stack.restart("orthanc")
            orthanc = Orthanc.from_settings(stack.settings)
        assert orthanc.store_instance(data)["Status"] == "Success"
    last_upload = time.monotonic()
    deadline = time.monotonic() + 40  # bounded wait for the outcome, not a timed assert
    while time.monotonic() < deadline:
        fired = Counter({uid: n for uid, n in fired_uids(whisk).items() if uid in files})
        # Orthanc's own StableStudy (StableAge 2 s here) comes after the watcher's sweep routed
        # each study: wait until the watcher has read past it, then nothing may have repeated.
        cursor = int(stack.redis.get(CURSOR) or 0)
        settled = time.monotonic() - last_upload > 3 and cursor >= orthanc.last_change()
        if sum(fired.values()) >= 100 and settled:
            break
        time.sleep(0.2)
    assert stack.stack.running("arrivals"), "the watcher died; see its log in the stack's logs/arrivals.log"
    assert len(fired) == 100, f"{len(fired)} of 100 studies routed"
    assert set(fired.values()) == {1}, [uid for uid, n in fired.items() if n > 1]
