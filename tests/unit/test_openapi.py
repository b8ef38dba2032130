"""docs/openapi.yaml is a valid OpenAPI 3 document and matches the manifest's web actions.

Every web-exported action (and web sequence) of deploy/manifest.yaml has a
path ``/api/v1/web/guest/radcloud/<action>[/...]`` and every path names one;
the error schema is what :func:`radcloud.core.errors.to_response` produces.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from openapi_spec_validator import validate

from radcloud.ops import deploy
from radcloud.core.errors import BadRequest, NotFound, to_response

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "/api/v1/web/guest/radcloud/"
DOC = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
# Callable without a radcloud token: login, the UI shell, and pfcon (CUBE sends pfcon's own JWT).
PUBLIC = {"login", "ui", "pfcon"}


def _web_entities() -> set[str]:
    package = deploy.load_manifest()["project"]["packages"][deploy.PACKAGE]
    names = {n for n, a in package["actions"].items() if str(a.get("web", False)).lower() in ("true", "yes", "raw")}
    names |= {n for n, s in (package.get("sequences") or {}).items() if str(s.get("web", False)).lower() in ("true", "yes")}
    return names


def _documented() -> dict[str, list[str]]:
    by_action: dict[str, list[str]] = {}
    for path in DOC["paths"]:
        assert path.startswith(PREFIX), path
        by_action.setdefault(path[len(PREFIX):].split("/")[0], []).append(path)
    return by_action


def test_document_is_valid_openapi_3():
    validate(DOC)
    assert DOC["openapi"].startswith("3.")


def test_every_web_action_has_a_path_and_every_path_is_a_web_action():
    documented = set(_documented())
    web = _web_entities()
    assert web - documented == set(), "web actions without a path in docs/openapi.yaml"
    assert documented - web == set(), "paths in docs/openapi.yaml for no web action"


def test_non_web_actions_are_not_documented():
    actions = deploy.manifest_actions(deploy.load_manifest())
    hidden = {n for n, a in actions.items() if not a.get("web")}
    assert hidden & set(_documented()) == set()
    assert "retrieve-series" in hidden and any(n.startswith("plugin-") for n in hidden)


def test_only_public_actions_drop_authentication():
    for path, ops in DOC["paths"].items():
        action = path[len(PREFIX):].split("/")[0]
        for method, op in ops.items():
            if method == "parameters":
                continue
            if op.get("security") == []:
                assert action in PUBLIC, f"{method.upper()} {path} is documented as public"


def test_every_operation_documents_an_error_or_is_the_ui():
    for path, ops in DOC["paths"].items():
        for method, op in ops.items():
            if method == "parameters" or "/ui/" in path or method == "delete" and path.endswith("/login"):
                continue
            errors = [c for c in op["responses"] if c.startswith(("4", "5"))]
            assert errors, f"{method.upper()} {path} documents no error response"


@pytest.mark.parametrize("exc", [BadRequest("limit must be between 1 and 1000", field="limit"),
                                 NotFound("no job 'x'"), RuntimeError("boom")])
def test_error_schema_matches_what_actions_answer(exc):
    body = to_response(exc)["error"]["body"]
    jsonschema.validate(body, DOC["components"]["schemas"]["Error"])
