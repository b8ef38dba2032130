"""radcloud.ops.cli.demo: the demo's steps, each on a fake API and a fake stack (no services)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer

from radcloud.core.errors import Unavailable
from radcloud.ops.cli import demo as d
from radcloud.ops.cli.client import ApiError, load_token, save_token, token_file

WHISK = "http://127.0.0.1:13233"
BASE = WHISK + d.WEB_PATH


class FakeApi:
    """Answers ``call`` from a script: ``{(action, method): [answer or exception, ...]}``, in order."""

    def __init__(self, script: dict[tuple[str, str], list[Any]], calls: list) -> None:
        self.script, self.calls = script, calls

    def __call__(self, base: str, token: str | None = None) -> "FakeApi":  # the Demo's client factory
        self.calls.append(("client", token))
        return self

    def call(self, action: str, *, method: str = "GET", path: str = "", params: Any = None, body: Any = None) -> Any:
        self.calls.append((action, method, path, params, body))
        answer = self.script[(action, method)].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeState:
    def __init__(self, root: Path) -> None:
        self.root, self.credentials = root, root / "credentials.json"

    def load_json(self, path: Path) -> dict | None:
        return json.loads(path.read_text()) if path.exists() else None


def _demo(tmp_path: Path, script: dict, calls: list | None = None) -> d.Demo:
    api = FakeApi(script, calls if calls is not None else [])
    run = d.Demo(tmp_path, SimpleNamespace(state=FakeState(tmp_path), last_up={}), timeout=5, client=api)
    run.endpoints = SimpleNamespace(whisk_url=WHISK)
    run.account = {"user": d.DEMO_USER, "password": "pw"}
    run.api = api
    return run


FOUND = {"total": 1, "items": [{"StudyInstanceUID": "1.2.3"}]}
STAGED = {"state": "succeeded", "retrieve_id": "r1", "series": [], "series_total": 2, "instances_done": 60,
          "bytes": 3e6}


def test_login_reuses_the_last_runs_token_else_logs_in_and_saves_it(tmp_path):
    calls: list = []
    run = _demo(tmp_path, {("login", "POST"): [{"token": "t1", "expires_in": 600, "user": {"name": "demo-admin"}}]},
                calls)
    run.login()
    assert ("login", "POST", "", None, {"username": d.DEMO_USER, "password": "pw"}) in calls
    assert load_token(token_file({}, tmp_path), BASE) == "t1" and calls[-1] == ("client", "t1")
    calls.clear()
    run.login()
    assert calls == [("client", "t1")]  # no second login


def test_a_refused_token_is_replaced_by_one_fresh_login_and_the_study_is_kept(tmp_path):
    calls: list = []
    save_token(token_file({}, tmp_path), BASE, "old", 600, {"name": "demo-admin"})
    run = _demo(tmp_path, {("query", "POST"): [ApiError(401, "unauthorized", "token revoked"), FOUND],
                           ("login", "POST"): [{"token": "new", "expires_in": 600, "user": {}}]}, calls)
    assert run.query() == FOUND and run.study == "1.2.3"
    assert [c[0] for c in calls if c[0] != "client"] == ["query", "login", "query"]
    with pytest.raises(ApiError, match="boom"):
        _demo(tmp_path, {("query", "POST"): [ApiError(503, "unavailable", "boom")]}).query()


def test_a_patient_missing_from_orthanc_ends_the_demo_naming_the_seed_step(tmp_path, capsys):
    with pytest.raises(typer.Exit):
        _demo(tmp_path, {("query", "POST"): [{"total": 0, "items": []}]}).query()
    assert "was the seed step skipped" in capsys.readouterr().err


def test_pull_reuses_the_last_runs_retrieve_while_it_lives_else_starts_one_and_records_it(tmp_path):
    run = _demo(tmp_path, {("retrieve", "GET"): [STAGED]})
    run.study = "1.2.3"
    (tmp_path / "demo.json").write_text(json.dumps({"study": "1.2.3", "retrieve_id": "r1"}))
    assert run.pull() == {**STAGED, "reused": True}

    calls: list = []
    run = _demo(tmp_path, {("retrieve", "GET"): [ApiError(404, "not_found", "expired"),
                                                  {**STAGED, "retrieve_id": "r2"}],
                           ("retrieve", "POST"): [{"retrieve_id": "r2"}]}, calls)
    run.study = "1.2.3"
    assert run.pull()["retrieve_id"] == "r2" and not run.staged.get("reused")
    assert json.loads((tmp_path / "demo.json").read_text()) == {"study": "1.2.3", "retrieve_id": "r2"}
    assert ("retrieve", "POST", "", None, {"StudyInstanceUID": ["1.2.3"]}) in calls


def test_a_retrieve_or_job_that_does_not_succeed_fails_its_step_naming_the_state(tmp_path):
    run = _demo(tmp_path, {("retrieve", "POST"): [{"retrieve_id": "r3"}],
                           ("retrieve", "GET"): [{**STAGED, "retrieve_id": "r3", "state": "failed"}]})
    run.study = "1.2.3"
    with pytest.raises(ApiError, match="retrieve r3 ended failed"):
        run.pull()
    assert not (tmp_path / "demo.json").exists()
    run = _demo(tmp_path, {("status", "GET"): [{"state": "failed", "reason": "shard s0: exit 1"}]})
    run.job = {"job_id": "j1"}
    with pytest.raises(ApiError, match="job j1 ended failed: shard s0: exit 1"):
        run.watch()


def test_the_closing_lines_name_the_ui_the_user_and_the_job(tmp_path):
    run = _demo(tmp_path, {("dispatch", "POST"): [{"job_id": "j9", "cached": True}],
                           ("results", "GET"): [{"outputs": [{}, {}], "bytes": 10}]})
    run.staged = STAGED
    assert run.dispatch()["job_id"] == "j9" and run.results()["outputs"] == [{}, {}]
    text = "\n".join(run.ready(12.34))
    assert f"{BASE}ui/" in text and "demo-admin (role admin)" in text and "radcloud status j9" in text
    assert "in 12.3 s" in text and "outputs:   2;" in text


class Scripted(d.Demo):
    """Every step recorded and answered with a canned result; ``fail_at`` raises instead."""

    def __init__(self, root: Path, fail_at: str = "") -> None:
        super().__init__(root, SimpleNamespace(last_up={"redis": "started"}), timeout=1)
        self.done: list[str] = []
        self.fail_at = fail_at
        canned = {"seed": {"patients": 1, "series": 2, "instances": 3, "uploaded": 3, "already_stored": 0},
                  "deploy": "unchanged", "make_account": {"user": "demo-admin"}, "query": FOUND,
                  "pull": STAGED, "dispatch": {"job_id": "j1"}, "watch": {"state": "succeeded"},
                  "results": {"outputs": []}}
        for _title, step, _summary in d.PLAN:
            setattr(self, step.__name__, self._step(step.__name__, canned.get(step.__name__)))

    def _step(self, name: str, result: Any):
        def run() -> Any:
            self.done.append(name)
            if name == self.fail_at:
                raise Unavailable("Orthanc is not answering on 127.0.0.1:18042; run radcloud stack up")
            return result
        return run


def test_the_plan_runs_every_step_in_order_with_a_numbered_progress_line(tmp_path, capsys):
    run = Scripted(tmp_path)
    d.run_plan(run, d.Steps())
    assert run.done == ["start_stack", "seed", "deploy", "start_arrivals", "make_account", "login", "query",
                        "pull", "dispatch", "watch", "results"]
    err = capsys.readouterr().err
    assert f"[1/{d.STEPS}] start Orthanc" in err and f"[{d.STEPS}/{d.STEPS}] list the results" in err
    assert f"log in as {d.DEMO_USER}" in err and "1 patients, 2 series, 3 instances" in err


def test_a_failing_step_ends_the_demo_there_naming_the_step_and_the_cause(tmp_path, capsys):
    run = Scripted(tmp_path, fail_at="seed")
    with pytest.raises(typer.Exit) as exited:
        d.run_plan(run, d.Steps())
    assert exited.value.exit_code != 0 and run.done == ["start_stack", "seed"]
    assert "step 2 (seed sample studies into Orthanc) failed: Orthanc is not answering" in capsys.readouterr().err
