"""wskdeploy manifest parsing, interpolation, validation, and deploy through Controller.handle."""

from __future__ import annotations

import base64
import io
import zipfile

import pytest
from lw_fakes import KEY, call, make_controller

from localwhisk.manifest import ManifestError, Plan, interpolate, load_plan
from localwhisk.wskclient import DeployError, WhiskClient, apply, read_wskprops, resolve_credentials

MANIFEST = """
project:
  name: demo
  packages:
    demo:
      inputs:
        db_url: ${DB_URL}
        plain: $PLAIN
        literal: $${KEEP}
        typed: {type: integer, value: "$PORT"}
        fallback: {type: string, default: dflt}
      actions:
        hello:
          function: actions/hello.py
          runtime: python:3.11
          main: handler
          web: true
          limits: {timeout: 30000, memorySize: 128, logSize: 5, instances: 2}
          annotations:
            require-whisk-auth: ${WEB_SECRET}
          inputs: {greeting: hi}
        thumbs:
          function: actions/thumbs
          runtime: python:3.12
          exclude: ["*.md"]
        raw:
          function: actions/hello.py
          web: raw
        boxed:
          function: actions/hello.py
          docker: ${USER_NAME}/ocr:1.0
      sequences:
        pipeline:
          actions: hello, thumbs
          web: true
    default:
      actions:
        top:
          function: actions/hello.py
          runtime: python:3.10
"""
ENV = {"DB_URL": "postgres://db", "PLAIN": "p", "PORT": "8080", "WEB_SECRET": "s3", "USER_NAME": "me"}


@pytest.fixture
def project(tmp_path):
    (tmp_path / "actions" / "thumbs").mkdir(parents=True)
    (tmp_path / "actions" / "hello.py").write_text("def handler(a):\n    return {'hi': a.get('greeting')}\n")
    (tmp_path / "actions" / "thumbs" / "__main__.py").write_text("def main(a):\n    return a\n")
    (tmp_path / "actions" / "thumbs" / "README.md").write_text("not shipped")
    (tmp_path / "manifest.yaml").write_text(MANIFEST)
    return tmp_path


def by_path(entities):
    return {e.path: e.body for e in entities}


def kv(lst):
    return {p["key"]: p["value"] for p in lst}


def test_interpolation_forms():
    env = {"A": "x"}
    assert interpolate("$A-${A}-$${A}", env) == "x-x-${A}"
    warnings = []
    assert interpolate("${MISSING}", env, warnings) == "" and "MISSING" in warnings[0]
    assert interpolate(5, env) == 5


def test_plan_packages_actions_and_sequences(project):
    plan = load_plan(project / "manifest.yaml", environ=ENV)
    pkg = by_path(plan.packages)["demo"]
    assert kv(pkg["parameters"]) == {"db_url": "postgres://db", "plain": "p", "literal": "${KEEP}",
                                     "typed": 8080, "fallback": "dflt"}
    actions = by_path(plan.actions)
    hello = actions["demo/hello"]
    assert hello["exec"] == {"kind": "python:3.11", "main": "handler", "binary": False,
                             "code": "def handler(a):\n    return {'hi': a.get('greeting')}\n"}
    assert kv(hello["annotations"]) == {"require-whisk-auth": "s3", "web-export": True, "final": True,
                                        "raw-http": False}
    assert hello["limits"] == {"timeout": 30000, "memory": 128, "logs": 5, "instances": 2}  # instances: OpenWhisk 2.0
    assert kv(hello["parameters"]) == {"greeting": "hi"}
    thumbs = actions["demo/thumbs"]["exec"]
    assert thumbs["binary"] is True and thumbs["kind"] == "python:3.12"
    names = zipfile.ZipFile(io.BytesIO(base64.b64decode(thumbs["code"]))).namelist()
    assert names == ["__main__.py"]
    assert kv(actions["demo/raw"]["annotations"])["raw-http"] is True
    assert actions["demo/raw"]["exec"]["kind"] == "python:3.10"  # .py without runtime: the default kind
    assert actions["demo/boxed"]["exec"]["kind"] == "blackbox"
    assert actions["demo/boxed"]["exec"]["image"] == "me/ocr:1.0" and actions["demo/boxed"]["exec"]["code"]
    assert "top" in actions  # package "default" means the namespace root
    seq = by_path(plan.sequences)["demo/pipeline"]
    assert seq["exec"] == {"kind": "sequence", "components": ["/_/demo/hello", "/_/demo/thumbs"]}


def test_deployment_file_and_params_override(project):
    (project / "deployment.yaml").write_text(
        "project:\n  name: demo\n  apihost: http://h:1\n  packages:\n    demo:\n      inputs:\n"
        "        db_url: from-deployment\n        plain: from-deployment\n      actions:\n"
        "        hello:\n          inputs: {greeting: hello-dep}\n")
    plan = load_plan(project / "manifest.yaml", project / "deployment.yaml", {"plain": "from-param"}, ENV)
    params = kv(by_path(plan.packages)["demo"]["parameters"])
    assert params["db_url"] == "from-deployment" and params["plain"] == "from-param"
    assert kv(by_path(plan.actions)["demo/hello"]["parameters"]) == {"greeting": "hello-dep"}
    assert plan.credentials == {"apihost": "http://h:1"}


@pytest.mark.parametrize("edit, message", [
    (("runtime: python:3.11", "runtime: python:9"),
     "Invalid or missing runtime [python:9] specified in manifest for the action [hello]."),
    (("function: actions/thumbs", "function: actions/nothere"), "actions/nothere] of the action [thumbs] does not exist."),
    (("web: raw", "web: sometimes"), "The value for key [web] is not valid"),
])
def test_validation_errors(project, edit, message):
    (project / "manifest.yaml").write_text(MANIFEST.replace(*edit))
    with pytest.raises(ManifestError) as err:
        load_plan(project / "manifest.yaml", environ=ENV)
    assert message in str(err.value)


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match=r"Manifest file not found at path \["):
        load_plan(tmp_path / "nope.yaml")


def test_runtime_not_offered_by_server_is_an_error(project):
    with pytest.raises(ManifestError, match="python:3.12"):
        load_plan(project / "manifest.yaml", environ=ENV, kinds=("python:3.10", "python:3.11", "blackbox"))


def controller_client(ctrl):
    def transport(method, path, query, headers, body):
        resp = ctrl.handle(method, path, query, headers, body)
        return resp.status, resp.body
    return WhiskClient(transport, KEY)


def test_apply_deploys_over_the_rest_api_and_is_repeatable(project):
    ctrl = make_controller()
    client = controller_client(ctrl)
    assert client.kinds()[0] == "python:3.10"
    plan = load_plan(project / "manifest.yaml", environ=ENV, kinds=client.kinds())
    # sequences listed before their components still deploy (retried after the others)
    plan.sequences.insert(0, type(plan.sequences[0])("sequence", "demo/outer", {
        "exec": {"kind": "sequence", "components": ["/_/demo/pipeline"]}}))
    lines = []
    apply(plan, client, echo=lines.append)
    apply(plan, client, echo=lines.append)  # overwrite=true: a second deploy succeeds
    assert "Action [demo/hello] has been successfully deployed." in lines
    got = call(ctrl, "GET", "/api/v1/namespaces/_/actions/demo/hello").json()
    assert got["exec"]["main"] == "handler" and got["version"] == "0.0.2"
    res = call(ctrl, "POST", "/api/v1/namespaces/_/actions/demo/hello", {}, query="blocking=true&result=true")
    assert res.json() == {"hi": "hi"}
    assert call(ctrl, "GET", "/api/v1/namespaces/_/actions/demo/outer").status == 200
    ctrl.close()


def test_apply_reports_server_errors(project):
    ctrl = make_controller()
    plan = load_plan(project / "manifest.yaml", environ=ENV)
    plan.actions[0].body["limits"] = {"timeout": 1}
    with pytest.raises(DeployError, match="error code: 400"):
        apply(plan, controller_client(ctrl), echo=lambda _m: None)
    ctrl.close()


def test_credentials_precedence(tmp_path):
    props = tmp_path / ".wskprops"
    props.write_text("APIHOST=127.0.0.1:3233\nAUTH=u:k\nNAMESPACE=guest\n")
    assert read_wskprops(props)["AUTH"] == "u:k"
    plan = Plan(credentials={"auth": "dep:key"})
    assert resolve_credentials(None, None, None, plan, props) == ("http://127.0.0.1:3233", "dep:key", "guest")
    assert resolve_credentials("https://ow", "flag:key", "ns", plan, props) == ("https://ow", "flag:key", "ns")
    with pytest.raises(DeployError, match="The API host is not configured."):
        resolve_credentials(None, None, None, Plan(), tmp_path / "none")


TRIGGERS = """
      triggers:
        arrived:
          inputs: {source: pacs}
        nightly:
          feed: /whisk.system/alarms/alarm
          inputs:
            cron: ${NIGHTLY_CRON}
            trigger_payload: {why: nightly}
      rules:
        on-arrival:
          trigger: arrived
          action: hello
        on-nightly:
          trigger: nightly
          action: pipeline
"""


def test_triggers_feeds_and_rules_deploy_and_fire(project):
    (project / "manifest.yaml").write_text(MANIFEST.replace("    default:\n", TRIGGERS + "    default:\n"))
    ctrl = make_controller()
    client = controller_client(ctrl)
    plan = load_plan(project / "manifest.yaml", environ={**ENV, "NIGHTLY_CRON": "0 2 * * *"}, kinds=client.kinds())
    triggers = {t.path: t for t in plan.triggers}
    assert kv(triggers["arrived"].body["parameters"]) == {"source": "pacs"} and triggers["arrived"].feed is None
    assert triggers["nightly"].feed == "/whisk.system/alarms/alarm"
    assert triggers["nightly"].feed_params == {"cron": "0 2 * * *", "trigger_payload": {"why": "nightly"}}
    assert by_path(plan.rules)["on-arrival"] == {"name": "on-arrival", "trigger": "/_/arrived",
                                                 "action": "/_/demo/hello"}
    lines = []
    apply(plan, client, echo=lines.append)
    apply(plan, client, echo=lines.append)  # a redeploy replaces the feed's registration
    assert "Feed [/whisk.system/alarms/alarm] for trigger [nightly] has been successfully deployed." in lines
    assert call(ctrl, "GET", "/api/v1/namespaces/_/rules/on-arrival").json()["status"] == "active"
    [alarm] = ctrl.store.list_all_entities("alarm")
    assert alarm["cron"] == "0 2 * * *" and alarm["name"] == "nightly"
    fired = call(ctrl, "POST", "/api/v1/namespaces/_/triggers/arrived", {"study": "1.2.3"})
    assert fired.status == 202
    ctrl.close()


def test_a_feed_that_refuses_fails_the_deploy_with_its_reason(project):
    (project / "manifest.yaml").write_text(MANIFEST.replace("    default:\n", TRIGGERS + "    default:\n"))
    ctrl = make_controller()
    plan = load_plan(project / "manifest.yaml", environ={**ENV, "NIGHTLY_CRON": "every night"})
    with pytest.raises(DeployError, match=r"feed \[/whisk.system/alarms/alarm\].*cron 'every night'"):
        apply(plan, controller_client(ctrl), echo=lambda _m: None)
    ctrl.close()


def test_typed_input_with_an_unset_variable_takes_its_default(tmp_path):
    (tmp_path / "manifest.yaml").write_text(
        "packages:\n  p:\n    triggers:\n      t:\n        feed: /whisk.system/alarms/alarm\n        inputs:\n"
        "          cron: {type: string, value: \"${CRON}\", default: \"*/5 * * * *\"}\n")
    assert load_plan(tmp_path / "manifest.yaml", environ={}).triggers[0].feed_params == {"cron": "*/5 * * * *"}
    set_ = load_plan(tmp_path / "manifest.yaml", environ={"CRON": "0 * * * *"})
    assert set_.triggers[0].feed_params == {"cron": "0 * * * *"}
