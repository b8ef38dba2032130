"""docs/openapi.yaml and the models of radcloud.api say the same thing.

Each request body and main answer documented in components/schemas is
compared with its pydantic model field by field — the names, which are
required, and for each field its type(s), enumeration, bounds, pattern and
list size — and every documented query parameter of an action must be a field
of the model that action parses, with the same constraints. A field added to
a model and not documented (or the other way round) fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from radcloud.api import answers, models
from radcloud.api import parse
from radcloud.core.errors import BadRequest

ROOT = Path(__file__).resolve().parents[2]
DOC = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
SCHEMAS = DOC["components"]["schemas"]
PREFIX = "/api/v1/web/guest/radcloud/"

# components/schemas name -> its model. Request bodies, then answers.
BODIES = {"LoginRequest": models.LoginRequest, "QueryRequest": models.QueryRequest,
          "RetrieveRequest": models.RetrieveRequest, "DispatchRequest": models.DispatchRequest,
          "RunRequest": models.RunRequest}
ANSWERS = {"LoginAnswer": answers.LoginAnswer, "QueryAnswer": answers.QueryAnswer,
           "RetrieveStarted": answers.RetrieveStarted, "RetrieveStatus": answers.RetrieveStatus,
           "DispatchAnswer": answers.DispatchAnswer, "Job": answers.Job, "Output": answers.Output,
           "ResultManifest": answers.ResultManifest, "StagedList": answers.StagedList,
           "StagedStudy": answers.StagedStudy, "ViewerOverlay": answers.ViewerOverlay}
# Body fields the action takes off before the model sees the rest: query passes ``run`` on
# unchanged; retrieve reads a query's answer (``items``) through models.QueryAnswerInput.
ACTION_FIELDS = {"QueryRequest": {"run"}, "RetrieveRequest": {"items"}}
# (path, method) -> the model the action parses its query string with.
PARAMETERS = {("query", "get"): models.QueryRequest, ("retrieve", "get"): models.RetrieveStatusRequest,
              ("retrieve/{retrieve_id}", "get"): models.RetrieveStatusRequest,
              ("status", "get"): models.StatusList, ("status/{job_id}", "get"): models.StatusWatch,
              ("status/{job_id}/events", "get"): models.StatusEvents,
              ("results/{job_id}", "get"): models.ResultsRequest,
              ("results/{job_id}/url", "get"): models.ResultsRequest,
              ("results/{job_id}/thumbnail", "get"): models.ResultsRequest,
              ("viewer/series/{series_uid}", "get"): models.ViewerRequest,
              ("viewer/job/{job_id}", "get"): models.ViewerRequest,
              ("audit", "get"): models.AuditRequest}
_KEYS = ("enum", "minimum", "maximum", "pattern", "maxItems")


def _resolve(schema: dict, defs: dict) -> dict:
    ref = schema.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        return _resolve(defs.get(name) or SCHEMAS[name], defs)
    if "allOf" in schema:  # a schema built on another (DispatchRequest: RunRequest + inputs required)
        parts = [_resolve(p, defs) for p in schema["allOf"]]
        return {"type": "object", "properties": {k: v for p in parts for k, v in p.get("properties", {}).items()},
                "required": sorted({r for p in parts for r in p.get("required", [])})}
    return schema


def _shape(schema: dict, defs: dict) -> object:
    """What a field accepts, comparable between pydantic's JSON schema and the document."""
    schema = _resolve(schema, defs)
    members = schema.get("anyOf") or schema.get("oneOf")
    if members:
        shapes = [_shape(m, defs) for m in members if m.get("type") != "null"]
        return shapes[0] if len(shapes) == 1 else frozenset(map(repr, shapes))
    shape = {k: schema[k] for k in _KEYS if k in schema}
    shape["type"] = schema.get("type") or ("object" if "properties" in schema else "any")
    if shape["type"] == "number" and schema.get("type") == "integer":
        shape["type"] = "integer"
    if "items" in schema and schema["items"]:
        shape["items"] = _shape(schema["items"], defs)
    return shape


def _compare(documented: dict, model, exempt: set[str] = frozenset(), where: str = "") -> None:
    js = model.model_json_schema()
    defs = js.get("$defs", {})
    doc_props = documented.get("properties", {})
    assert set(doc_props) - exempt == set(js["properties"]), f"{where}: fields differ"
    assert set(documented.get("required", [])) == set(js.get("required", [])), f"{where}: required differ"
    for name, prop in js["properties"].items():
        doc = _resolve(doc_props[name], SCHEMAS)
        got = _resolve(prop, defs)
        if "properties" in got and "properties" in doc:  # a nested model: compare it too
            _compare(doc, _nested(model, name), where=f"{where}.{name}")
            continue
        assert _shape(doc, SCHEMAS) == _shape(prop, defs), f"{where}.{name}"
        if "default" in doc:
            assert prop.get("default") == doc["default"], f"{where}.{name}: default"


def _nested(model, name):
    annotation = model.model_fields[name].annotation
    from radcloud.api.validation import _model_of

    return _model_of(annotation)


@pytest.mark.parametrize("name", sorted(BODIES))
def test_request_bodies_match_their_models(name):
    _compare(_resolve(SCHEMAS[name], SCHEMAS), BODIES[name], ACTION_FIELDS.get(name, set()), name)


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_answers_match_their_models(name):
    _compare(SCHEMAS[name], ANSWERS[name], where=name)


@pytest.mark.parametrize("route", sorted(PARAMETERS), ids="-".join)
def test_query_parameters_are_fields_of_the_action_model(route):
    path, method = route
    op = DOC["paths"][PREFIX + path][method]
    model = PARAMETERS[route]
    js = model.model_json_schema()
    params = [p for p in op.get("parameters", []) if p.get("in") in ("query", "path")]
    assert params, f"{method.upper()} {path} documents no query parameter"
    for param in params:
        assert param["name"] in js["properties"], f"{param['name']} is not a field of {model.__name__}"
        doc, got = _shape(param["schema"], SCHEMAS), _shape(js["properties"][param["name"]], js.get("$defs", {}))
        if isinstance(got, frozenset):  # a value or a list: a query string carries the value
            assert repr(doc) in got, param["name"]
        else:
            assert doc == got, param["name"]


def test_every_documented_body_and_answer_has_a_model():
    for path, ops in DOC["paths"].items():
        for method, op in ops.items():
            if method == "parameters" or "/ui/" in path or "/pfcon/" in path:
                continue
            body = (op.get("requestBody") or {}).get("content", {}).get("application/json", {}).get("schema", {})
            if "$ref" in body:
                assert body["$ref"].rsplit("/", 1)[-1] in BODIES, f"{method} {path}"
            ok = op["responses"].get("200", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if "$ref" in ok:
                assert ok["$ref"].rsplit("/", 1)[-1] in ANSWERS, f"{method} {path}"


@pytest.mark.parametrize("model,params,field,says", [
    (models.DispatchOptions, {"shard_size": 0}, "shard_size", "shard_size must be between 1 and 10000"),
    (models.DispatchOptions, {"force": "yes"}, "force", "force must be true or false"),
    (models.DispatchOptions, {"shard_by": "patient"}, "shard_by", "must be one of 'series' or 'instances'"),
    (models.DispatchOptions, {"colour": 1}, "colour", "unknown field 'colour'; known: deidentify, executor, force"),
    (models.DispatchRequest, {"plugin": "x", "inputs": {"series": [1]}}, "inputs.series",
     "inputs.series.0 must be a string"),
    (models.DispatchRequest, {"plugin": "x"}, "inputs", "inputs is required"),
    (models.QueryRequest, {"PatientID": 5}, "PatientID", "PatientID must be a string or a list of strings"),
    (models.QueryRequest, {"limit": "ten"}, "limit", "limit must be an integer"),
    (models.QueryRequest, {"Colour": "x"}, "Colour", "unknown query field 'Colour'; known: AccessionNumber"),
    (models.StatusList, {"limit": "0"}, "limit", "limit must be between 1 and 500"),
    (models.QueryAnswerInput, {"items": ["1.2.3"]}, "items", "items.0 must be an object"),
    (models.LoginRequest, {"username": "", "password": "p"}, "username", "username must not be empty"),
    (models.RetrieveSeriesRequest, {"retrieve_id": "r", "series": {}}, "series.SeriesInstanceUID",
     "series.SeriesInstanceUID is required"),
    (models.RetrieveSeriesRequest, {"retrieve_id": "r", "series": {"SeriesInstanceUID": "../x"}},
     "SeriesInstanceUID", "holds characters unsafe in object keys"),  # the one UID rule, query.check_uid
])
def test_parse_answers_a_bad_request_naming_the_field(model, params, field, says):
    with pytest.raises(BadRequest) as err:
        parse(model, params)
    assert err.value.field == field
    assert says in err.value.message
    assert "validation error" not in err.value.message and "pydantic" not in err.value.message


def test_a_bad_value_is_shown_short_and_never_as_a_dump():
    with pytest.raises(BadRequest) as err:
        parse(models.StatusList, {"limit": "x" * 500})
    assert len(err.value.message) < 120


def test_query_strings_are_read_leniently_and_json_options_strictly():
    assert parse(models.StatusList, {"mine": "true", "limit": "20"}).limit == 20
    assert parse(models.ResultsRequest, {"urls": ""}).urls is False
    with pytest.raises(BadRequest):
        parse(models.DispatchOptions, {"shard_size": "20"})


def test_what_the_web_ui_sends_is_accepted():
    """The UI's date pickers send a range object; its job filter an empty state for "all"."""
    query = parse(models.QueryRequest, {"level": "study", "limit": 1000, "PatientID": ["A", "B"],
                                        "StudyDate": {"from": "20240101"}}).to_query(max_limit=1000)
    assert query.filters["StudyDate"] == "20240101-" and query.filters["PatientID"] == "A\\B"
    assert parse(models.StatusList, {"state": "", "limit": "50"}).state is None
    with pytest.raises(BadRequest) as err:
        parse(models.QueryRequest, {"StudyDate": 20240101})
    assert err.value.message.startswith("StudyDate must be a string or an object with from/to")
