"""Reading retrieve's staging manifests: completeness, prefixes, unknown inputs."""

from __future__ import annotations

import pytest
from jobs_fakes import MemStore, stage_series

from radcloud.errors import BadRequest, NotFound
from radcloud.staged import ManifestStaging, parse_manifest


@pytest.mark.parametrize("doc,complete", [
    ({"instances": [{"key": "a"}], "complete": True}, True),
    ({"instances": [{"key": "a"}], "complete": True, "expected": 2}, False),  # fewer than expected
    ({"instances": [{"key": "a"}], "status": "running"}, False),
    ({"instances": [{"key": "a"}], "expected": 1}, True),
    ({"instances": [{"key": "a"}], "complete": False}, False),
])
def test_completeness(doc, complete):
    assert parse_manifest(doc, "p/").complete is complete


def test_prefix_forms_resolve_to_the_same_manifest():
    store = MemStore()
    prefix = stage_series(store, "1.2", "1.2.9", 2)
    staging = ManifestStaging(store)
    by_folder = staging.resolve({"prefixes": [prefix]})
    by_key = staging.resolve({"prefixes": ["manifests/1.2/1.2.9.json"]})
    by_uid = staging.resolve({"series": ["1.2.9"]})  # no Redis index: found by listing manifests/
    assert by_folder == by_key == by_uid
    assert by_uid[0].prefix == prefix and len(by_uid[0].instances) == 2 and by_uid[0].study_uid == "1.2"


def test_duplicates_collapse_and_unknown_kinds_are_refused():
    store = MemStore()
    stage_series(store, "1.2", "1.2.9", 1)
    assert len(ManifestStaging(store).resolve({"series": ["1.2.9", "1.2.9"]})) == 1
    with pytest.raises(BadRequest):
        ManifestStaging(store).resolve({"studies": ["1.2"]})
    with pytest.raises(BadRequest):
        ManifestStaging(store).resolve({"series": [1]})
    with pytest.raises(NotFound):
        ManifestStaging(store).resolve({"prefixes": ["studies/9/9/"]})


def test_reidentification_maps_are_never_inputs():
    import json

    from radcloud.errors import Forbidden

    store = MemStore()
    store.objects["deid-maps/j/s000.json"] = json.dumps({"patients": [], "uids": {}}).encode()
    # A manifest (a plugin could write one into its outputs) pointing at a map is refused too.
    store.objects["results/j/s000/manifest.json"] = json.dumps(
        {"instances": [{"key": "deid-maps/j/s000.json"}], "complete": True, "series_uid": "9"}).encode()
    for prefix in ("deid-maps/j/s000.json", "deid-maps/j/", "staged/../deid-maps/j/s000.json", "results/j/s000/"):
        with pytest.raises(Forbidden):
            ManifestStaging(store).resolve({"prefixes": [prefix]})
