"""Every web action in deploy/manifest.yaml is behind the guard.

No token, an expired token, a forged token, a disabled user's token → 401;
a role the action does not allow → 403; and the body never carries patient
data (the sample MRNs and names below must not appear). The guard runs
before any handler, so no Orthanc/S3 is needed to prove it.
"""

import json
from pathlib import Path

import pytest
import yaml

from radcloud.access import auth
from radcloud.core.settings import Settings
from radcloud.access.users import UserStore
from action_loader import load_path
from fast_hasher import FAST_HASHER

ROOT = Path(__file__).resolve().parents[3]
SECRET = "v" * 40
# login issues tokens; ui redirects to login itself; pfcon checks CUBE's own
# pfcon JWT on every route (tests/unit/test_pfcon_web.py), not radcloud's token.
PUBLIC = {"login", "ui", "pfcon"}
PHI = ("RC100001", "RC100002", "DOE^JANE", "SMITH^JOHN")


def web_actions():
    doc = yaml.safe_load((ROOT / "deploy" / "manifest.yaml").read_text())
    for package in doc["project"]["packages"].values():
        for name, spec in (package.get("actions") or {}).items():
            if str(spec.get("web", "false")).lower() in ("true", "yes", "raw") and name not in PUBLIC:
                yield name, spec["function"]


def load(function):
    # wskdeploy resolves function paths against the manifest's folder
    path = (ROOT / "deploy" / function / "__main__.py").resolve()
    return load_path(path, f"guarded_{path.parent.name}")


ACTIONS = sorted(web_actions())


def test_the_manifest_has_guarded_web_actions():
    names = {n for n, _ in ACTIONS}
    assert {"query", "audit"} <= names


@pytest.fixture
def tokens(redis_client):
    store = UserStore(redis_client, FAST_HASHER)
    store.add("alice", "clinician", "correct horse battery")
    store.add("gone", "clinician", "correct horse battery")
    s = Settings.load({"token_secret": SECRET}, environ={})
    tokens = {
        "expired": auth.issue_token(s, store.get("alice"), now=1_000_000),
        "forged": auth.issue_token(Settings.load({"token_secret": "f" * 40}, environ={}), store.get("alice")),
        "disabled": auth.issue_token(s, store.get("gone")),
        "clinician": auth.issue_token(s, store.get("alice")),
    }
    store.disable("gone")
    return tokens


def call(module, redis_server, method, token=None, **params):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    args = {"__ow_method": method, "__ow_headers": headers, "__ow_path": "", "token_secret": SECRET,
            "redis_url": redis_server, "PatientID": "RC100002", "PatientName": "SMITH^JOHN", **params}
    return module.main(args)


@pytest.mark.parametrize("name,function", ACTIONS)
@pytest.mark.parametrize("case", ["none", "expired", "forged", "disabled"])
def test_refused_without_a_valid_token(name, function, case, tokens, redis_server):
    module = load(function)
    for method in ("get", "post"):
        result = call(module, redis_server, method, None if case == "none" else tokens[case])
        assert result["error"]["statusCode"] == 401, (name, case, method, result)
        body = json.dumps(result)
        assert not any(p in body for p in PHI), (name, case)


def test_wrong_role_is_403_without_data(tokens, redis_server):
    module = load(dict(ACTIONS)["audit"])
    result = call(module, redis_server, "get", tokens["clinician"])
    assert result["error"]["statusCode"] == 403
    assert not any(p in json.dumps(result) for p in PHI)
