"""Studies arriving in the real Orthanc fire ``radcloud-study-stable`` on a real localwhisk, exactly once,
through a Redis restart and an Orthanc restart in the middle of a burst of 100 studies."""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter

import pytest
from pydicom.uid import generate_uid

from radcloud import redisclient
from radcloud.arrivals import PREFIX, TRIGGER, Watcher, trigger_fire
from radcloud.openwhisk import OpenWhisk
from radcloud.orthanc import Orthanc
from radcloud.samples.synthetic import dataset_bytes, generate_many_studies

pytestmark = pytest.mark.integration

RECORD = "def main(args):\n    return {'study_uid': args.get('study_uid'), 'series': len(args.get('series', []))}\n"


@pytest.fixture(scope="module")
def whisk(tmp_path_factory):
    from localwhisk.testing import Server

    with Server(tmp_path_factory.mktemp("whisk-arrivals"), max_concurrent=60) as server:
        c = server.client
        for collection, name, body in (
                ("actions", "arrived", {"exec": {"kind": "python:3.11", "code": RECORD}}),
                ("triggers", TRIGGER, {}),
                ("rules", "route-arrivals", {"trigger": f"/_/{TRIGGER}", "action": "/_/arrived"})):
            status, answer = c.put(collection, name, body)
            assert status == 200, answer
        yield server


def unique_studies(n: int) -> dict[str, bytes]:
    """n one-instance studies (StudyInstanceUID -> file) with UIDs no other test or earlier run used."""
    root, out = f"1.2.826.0.1.3680043.10.{secrets.randbelow(10**8)}.", {}
    for ds in generate_many_studies(n, matrix=16):
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(root), generate_uid(root)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(root)
        out[str(ds.StudyInstanceUID)] = dataset_bytes(ds)
    return out


def fired_uids(whisk) -> Counter:
    status, records = whisk.client.request("GET", "/api/v1/namespaces/_/activations",
                                           query=f"name={TRIGGER}&docs=true&limit=200")
    assert status == 200, records
    return Counter(r["response"]["result"]["study_uid"] for r in records)


def test_a_burst_with_redis_and_orthanc_restarts_is_routed_exactly_once(stack, whisk):
    settings = stack.settings
    for key in stack.redis.scan_iter(PREFIX + "*"):
        stack.redis.delete(key)
    orthanc = Orthanc.from_settings(settings)
    redis = redisclient.client(settings, redisclient.PROGRESS)  # rides out the Redis restart
    ow = OpenWhisk(whisk.api_host, whisk.auth)
    watcher = Watcher(orthanc, redis, trigger_fire(ow), stable_age_s=1)
    stop = threading.Event()
    runner = threading.Thread(target=watcher.run, args=(stop,), kwargs={"poll_s": 0.2, "on_error_s": 0.3},
                              daemon=True)
    watcher.cursor()  # "from now": studies stored before this test are not ours to route
    runner.start()
    try:
        files = unique_studies(100)
        for i, data in enumerate(files.values()):
            if i == 40:
                stack.restart("redis")
            if i == 70:
                stack.restart("orthanc")
                orthanc = Orthanc.from_settings(settings)
            assert orthanc.store_instance(data)["Status"] == "Success"
        last_upload = time.monotonic()
        deadline = time.monotonic() + 40  # bounded wait for the outcome, not a timed assert
        while time.monotonic() < deadline:
            fired = Counter({uid: n for uid, n in fired_uids(whisk).items() if uid in files})
            # Orthanc's own StableStudy (StableAge 2 s here) comes after the watcher's sweep routed
            # each study: wait until the watcher has read past it, then nothing may have repeated.
            settled = time.monotonic() - last_upload > 3 and watcher.cursor() >= orthanc.last_change()
            if sum(fired.values()) >= 100 and settled:
                break
            time.sleep(0.2)
    finally:
        stop.set()
        runner.join(10)
    assert len(fired) == 100, f"{len(fired)} of 100 studies routed"
    assert set(fired.values()) == {1}, [uid for uid, n in fired.items() if n > 1]
