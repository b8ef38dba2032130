"""The viewer action on a series of more than 1000 slices, against the stack's real object store.

OpenWhisk caps an action result at 1 MB: the list of a series' instances the
viewer gets must come in pages, each answer under the cap, and every slice
must be reachable through them. Tiny generated images (8x8), so the cost is
the 1200 objects written and read, not pixels; no browser.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from radcloud.access import auth
from radcloud.access.users import UserStore
from radcloud.core.settings import Settings
from radcloud.ops.samples import viewerdata
from radcloud.store.storage import ObjectStore
from action_loader import load_action
from fast_hasher import FAST_HASHER

SLICES = 1200
RESULT_CAP = 1024 * 1024  # OpenWhisk's default action result limit (localwhisk enforces the same)
SECRET = "v" * 40


@pytest.fixture(scope="module")
def long_series(stack):
    store = ObjectStore.from_settings(stack.settings)
    # UIDs of 64 characters, the longest DICOM allows: the longest keys, so the longest presigned URLs
    ct = viewerdata.ct_series(SLICES, 8, tag="PAGES")
    for ds in ct:
        ds.SOPInstanceUID = (ds.SOPInstanceUID + "." + "9" * 64)[:64].rstrip(".")
    viewerdata.stage(store, stack.redis, ct)
    return str(ct[0].SeriesInstanceUID), {str(ds.SOPInstanceUID): viewerdata.ds_bytes(ds) for ds in ct}


def test_a_series_of_1200_slices_comes_in_pages_under_the_result_cap_and_every_slice_is_reachable(stack, long_series):
    series, staged = long_series
    settings = stack.settings
    users = UserStore(stack.redis, FAST_HASHER)
    users.add("viewer.pages", "clinician", "a long test password")
    token = auth.issue_token(Settings.load({"token_secret": SECRET}, environ={}), users.get("viewer.pages"))
    bound = {"s3_endpoint": settings.s3_endpoint, "s3_access_key": settings.s3_access_key,
             "s3_secret_key": settings.s3_secret_key.reveal(), "s3_bucket": settings.s3_bucket,
             "redis_url": settings.redis_url.reveal(), "token_secret": SECRET}
    action = load_action("viewer")

    pages, offset = [], 0
    while offset is not None:
        result = action.main({**bound, "__ow_method": "get", "__ow_path": f"/series/{series}",
                              "__ow_headers": {"authorization": f"Bearer {token}"},
                              **({"offset": str(offset)} if offset else {})})
        assert result["statusCode"] == 200, result
        # the activation's result as OpenWhisk measures it: its JSON
        assert len(json.dumps(result).encode()) < RESULT_CAP
        pages.append(result["body"])
        offset = result["body"]["next_offset"]
    assert len(pages) >= 2 and all(p["count"] == SLICES for p in pages)
    urls = [i["url"] for p in pages for i in p["instances"]]
    assert len(urls) == SLICES == len(set(urls))

    def read(url):
        answer = requests.get(url, timeout=30)
        answer.raise_for_status()
        return answer.content

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(read, urls))
    # every slice, in the order staged, once
    assert got == list(staged.values())
