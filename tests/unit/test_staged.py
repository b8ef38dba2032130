"""Reading retrieve's staging manifests: completeness, prefixes, unknown inputs."""

from __future__ import annotations

import json

import pytest
from jobs_fakes import MemStore, stage_series

from radcloud.core.errors import BadRequest, NotFound
from radcloud.pacs.derivedseries import uid
from radcloud.store.staged import parse_manifest
from radcloud.work.staging import ManifestStaging


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

    from radcloud.core.errors import Forbidden

    store = MemStore()
    store.objects["deid-maps/j/s000.json"] = json.dumps({"patients": [], "uids": {}}).encode()
    # A manifest (a plugin could write one into its outputs) pointing at a map is refused too.
    store.objects["results/j/s000/manifest.json"] = json.dumps(
        {"instances": [{"key": "deid-maps/j/s000.json"}], "complete": True, "series_uid": "9"}).encode()
    for prefix in ("deid-maps/j/s000.json", "deid-maps/j/", "staged/../deid-maps/j/s000.json", "results/j/s000/"):
        with pytest.raises(Forbidden):
            ManifestStaging(store).resolve({"prefixes": [prefix]})


def _results(store, job, shard="s000", instances=None):
    import json

    store.objects[f"results/{job}/{shard}/x.dcm"] = b"DICM"
    store.objects[f"results/{job}/{shard}/manifest.json"] = json.dumps(
        {"instances": instances or [{"key": f"results/{job}/{shard}/x.dcm"}], "complete": True,
         "series_uid": f"9.{job}"}).encode()


def access_for(caller, privileged=False):
    from radcloud.store.staged import InputAccess

    owners = {"jbob": "bob", "jalice": "alice"}
    return InputAccess(caller, privileged=privileged, job_owner=owners.get)


def test_another_users_results_and_a_missing_job_answer_the_same_404():
    """Finding 5: another user's results/<job>/ was accepted; an unknown job id answered differently."""
    store = MemStore()
    _results(store, "jbob")
    staging = ManifestStaging(store)
    for form in ("results/{}/s000/", "results/{}/s000/manifest.json", "staged/../results/{}/s000/"):
        answers = []
        for job in ("jbob", "jnobody"):  # exists but not alice's; does not exist
            with pytest.raises(NotFound) as info:
                staging.resolve({"prefixes": [form.format(job)]}, access_for("alice"))
            answers.append(json.dumps(info.value.to_dict()).replace(job, "<job>"))
        assert answers[0] == answers[1], answers  # no existence leak
    assert len(staging.resolve({"prefixes": ["results/jbob/s000/"]}, access_for("bob"))) == 1  # the owner
    assert len(staging.resolve({"prefixes": ["results/jbob/s000/"]}, access_for("root", True))) == 1  # admin


def test_a_manifest_of_ones_own_cannot_point_into_another_users_results():
    store = MemStore()
    _results(store, "jbob")
    _results(store, "jalice", instances=[{"key": "results/jbob/s000/x.dcm"}])
    with pytest.raises(NotFound):
        ManifestStaging(store).resolve({"prefixes": ["results/jalice/s000/"]}, access_for("alice"))
    assert ManifestStaging(store).resolve({"prefixes": ["results/jalice/s000/"]}, access_for("bob", True))


def test_the_staged_list_groups_series_by_study_with_patient_size_and_completeness():
    store = MemStore()
    who = {"PatientName": "SMITH^JOHN", "PatientID": "RC1", "StudyDate": "20250611", "StudyDescription": "MR BRAIN"}
    stage_series(store, "1.2", "1.2.2", 2, tags={**who, "SeriesNumber": "2", "SeriesDescription": "T2"})
    stage_series(store, "1.2", "1.2.1", 3, tags={**who, "SeriesNumber": "1", "SeriesDescription": "T1"})
    stage_series(store, "1.2", uid("1.2.2", "dcm2png", "1", "pictures-series"), 1,  # a result pulled on purpose
                 tags={**who, "SeriesNumber": "201", "SeriesDescription": "renamed by a user"})
    stage_series(store, "1.3", "1.3.1", 1, complete=False)   # older manifests: no patient tags
    from radcloud.store.staged import list_studies

    answer = list_studies(store, now=1000.0)
    assert not answer["truncated"]
    by_uid = {s["StudyInstanceUID"]: s for s in answer["studies"]}
    study = by_uid["1.2"]
    assert (study["PatientName"], study["PatientID"], study["StudyDescription"]) == ("SMITH^JOHN", "RC1", "MR BRAIN")
    assert [s["SeriesDescription"] for s in study["series"]][:2] == ["T1", "T2"]   # by series number
    assert [s["derived"] for s in study["series"]] == [False, False, True]  # the Run page leaves results out
    assert study["instances"] == 6 and study["bytes"] == sum(s["bytes"] for s in study["series"]) > 0
    assert study["series"][0]["manifest"] == "manifests/1.2/1.2.1.json" and study["series"][0]["complete"]
    assert study["age_s"] is None   # the fake store says no time
    assert by_uid["1.3"]["PatientName"] == "" and not by_uid["1.3"]["series"][0]["complete"]
    assert len(list_studies(store, now=1000.0, limit=1)["studies"]) == 1
    assert list_studies(store, now=1000.0, limit=1)["truncated"]
