"""The deployed query and retrieve actions, driven through localwhisk against the real stack.

deploy/manifest.yaml is deployed as ``radcloud deploy --local`` does
(radcloud.deploy: every image is this checkout, common modules preloaded).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time

import pytest

from radcloud.orthanc import Orthanc
from radcloud.samples.seed import seed_orthanc
from radcloud.storage import ObjectStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def whisk(stack, tmp_path_factory):
    from localwhisk.testing import Server
    from radcloud import deploy

    seed_orthanc(stack.settings, include_pydicom_files=False)
    tmp = tmp_path_factory.mktemp("whisk-retrieve")
    env = {**stack.env(), "RADCLOUD_TOKEN_SECRET": secrets.token_urlsafe(40)}
    env.update(deploy.local_image_env(env))
    images = tmp / "images.json"  # what `radcloud deploy --local` runs with: the checkout, preloaded
    images.write_text(json.dumps(deploy.local_images(env)))
    with Server(tmp / "state", extra_args=["--images-file", str(images)], env=env) as server:
        deploy.deploy(server.api_host, server.auth, env)
        yield server


def call(whisk, action, params):
    status, body = whisk.invoke(f"radcloud/{action}", params)
    return status, body


def test_query_then_retrieve_through_the_deployed_actions(whisk, stack):
    status, answer = call(whisk, "query", {"PatientID": ["RC100002", "RC100003"], "StudyDate": "20250101-"})
    assert status == 200, answer
    assert [i["AccessionNumber"] for i in answer["items"]] == ["RCA0000201", "RCA0000302"]
    study = answer["items"][1]["StudyInstanceUID"]

    store = ObjectStore.from_settings(stack.settings)
    store.delete_prefix(f"staged/{study}/")
    started = time.monotonic()
    status, queued = call(whisk, "retrieve", {"StudyInstanceUID": study})
    assert status == 200 and queued["state"] == "queued" and queued["series"] == 1, queued
    rid = queued["retrieve_id"]
    deadline = time.monotonic() + 90
    while True:
        status, view = call(whisk, "retrieve", {"retrieve_id": rid})
        assert status == 200, view
        if view["state"] in ("succeeded", "failed", "partial") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert view["state"] == "succeeded", view
    assert view["instances_done"] == view["instances_total"] == 30
    assert view["series"][0]["activation"]
    orthanc = Orthanc.from_settings(stack.settings)
    expected = {i["MainDicomTags"]["SOPInstanceUID"]: orthanc.instance_md5(i["ID"])
                for i in orthanc.find("Instance", {"StudyInstanceUID": study})}
    staged = {}
    for info in store.list(f"staged/{study}/"):
        if info.key.endswith(".dcm"):
            stream = store.open(info.key)
            staged[info.key.rsplit("/", 1)[1][:-4]] = hashlib.md5(stream.read()).hexdigest()
            stream.close()
    assert staged == expected
    print(f"query->retrieve through localwhisk: {time.monotonic() - started:.2f} s for 30 instances")


def test_bad_input_is_a_400_from_the_deployed_actions(whisk):
    status, body = call(whisk, "query", {"StudyDate": "2025-13-01"})
    assert body["error"]["statusCode"] == 400 and body["error"]["field"] == "StudyDate", body
    status, body = call(whisk, "retrieve", {"StudyInstanceUID": "1.2.3.4.99999"})
    assert body["error"]["statusCode"] == 404, body
    status, body = call(whisk, "retrieve", {"retrieve_id": "0123456789abcdef"})
    assert body["error"]["statusCode"] == 404, body
