"""Routing rules: glob matching on routing attributes, validation when saved (the repository's plugins)."""

from __future__ import annotations

import pytest

from radcloud.errors import BadRequest
from radcloud.plugins import Registry
from radcloud.routing import matching_series, route, validate

ARRIVAL = {"study_uid": "1.2", "study_description": "CT THORAX", "calling_aet": "CT_SCANNER_3",
           "series": [{"orthanc_series": "a", "modality": "CT", "body_part": "CHEST", "series_description": "Lung 1mm"},
                      {"orthanc_series": "b", "modality": "CT", "body_part": "ABDOMEN", "series_description": "Soft"},
                      {"orthanc_series": "c", "modality": "SR", "body_part": "", "series_description": ""}]}


@pytest.fixture(scope="module")
def registry():
    return Registry()


@pytest.mark.parametrize("match, series", [
    ({"modality": "CT", "body_part": "CHEST*"}, ["a"]),
    ({"modality": "ct"}, ["a", "b"]),                     # case-insensitive
    ({"series_description": "*lung*"}, ["a"]),
    ({"calling_aet": "CT_*", "modality": "SR"}, ["c"]),
    ({"calling_aet": "MR_*"}, []),
    ({"study_description": "*THORAX*", "body_part": "ABD*"}, ["b"]),
    ({}, ["a", "b", "c"]),                                 # no match: every series
])
def test_matching_series(match, series):
    rule = {"name": "r", "match": match, "pipeline": [{"plugin": "lung-seg"}]}
    assert [s["orthanc_series"] for s in matching_series(rule, ARRIVAL)] == series


def test_disabled_rules_do_not_route_and_order_is_kept():
    rules = [{"name": "off", "enabled": False, "match": {}}, {"name": "ct", "match": {"modality": "CT"}},
             {"name": "all", "match": {}}]
    assert [r["name"] for r, _ in route(rules, ARRIVAL)] == ["ct", "all"]


def test_a_valid_rule_is_normalised_with_plugin_defaults(registry):
    plugin = registry.names()[0]
    rule = validate({"name": "ct-chest", "match": {"modality": "CT"}, "pipeline": [{"plugin": plugin}]}, registry)
    assert rule["enabled"] is True and rule["pipeline"][0]["plugin"] == plugin
    assert rule["pipeline"][0]["params"] == registry.get(plugin).validate({})


@pytest.mark.parametrize("rule, field, message", [
    ({"name": "x", "pipeline": [{"plugin": "no-such-plugin"}]}, "pipeline[0]", "step 1 (no-such-plugin): no plugin"),
    ({"name": "x", "pipeline": [{"plugin": "lung-seg", "params": {"bogus": 1}}]}, "pipeline[0]",
     "unknown parameter 'bogus'"),
    ({"name": "x", "pipeline": []}, "pipeline", "non-empty list"),
    ({"name": "x", "match": {"patient_name": "DOE*"}, "pipeline": [{"plugin": "lung-seg"}]}, "match.patient_name",
     "not a routing attribute"),
    ({"name": "x", "match": {"modality": ""}, "pipeline": [{"plugin": "lung-seg"}]}, "match.modality", "glob"),
    ({"name": "bad name!", "pipeline": [{"plugin": "lung-seg"}]}, "name", "letters"),
    ({"name": "x", "enabled": "yes", "pipeline": [{"plugin": "lung-seg"}]}, "enabled", "true or false"),
    ({"name": "x", "pipeline": [{"plugin": "lung-seg", "when": 1}]}, "pipeline[0]", "unknown field"),
])
def test_bad_rules_are_refused_naming_the_field(registry, rule, field, message):
    with pytest.raises(BadRequest) as err:
        validate(rule, registry)
    assert err.value.field == field and message in err.value.message
