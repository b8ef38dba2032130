"""The executor interface (radcloud.work.executors): the action and in-process executors, the registry."""

from __future__ import annotations

import pytest

from radcloud.core.errors import ConfigError, RadcloudError, TooManyRequests, UpstreamError
from radcloud.core.settings import Settings
from radcloud.work.executors import Executor, ExecutorBusy, Resources, Unit, UnitStatus, executor_for, known
from radcloud.work.executors.action import ActionExecutor, status_of
from radcloud.work.executors.inprocess import InProcessExecutor

UNIT = Unit(job_id="j1", unit_id="s000", action="plugin-copy", payload={"job_id": "j1", "shard_id": "s000",
                                                                       "inputs": ["a/b.dcm"]},
            resources=Resources(memory_mb=512, timeout_s=60))


class Whisk:
    """The two calls the action executor makes of radcloud.core.openwhisk.OpenWhisk."""

    def __init__(self, raise_on_invoke: Exception | None = None, answer=None) -> None:
        self.raise_on_invoke, self.answer = raise_on_invoke, answer
        self.invokes: list[tuple[str, dict, bool]] = []
        self.records: dict[str, dict | None] = {}

    def invoke(self, action, params, *, blocking=False):
        if self.raise_on_invoke:
            raise self.raise_on_invoke
        self.invokes.append((action, params, blocking))
        return self.answer if self.answer is not None else {"activationId": "a" * 32}

    def activation(self, aid):
        if aid == "boom":
            raise UpstreamError("OpenWhisk at x unreachable: ConnectionError")
        return self.records.get(aid)


def test_both_executors_satisfy_the_protocol():
    assert isinstance(ActionExecutor(Whisk()), Executor) and isinstance(InProcessExecutor(), Executor)


def test_unit_status_refuses_what_cannot_be():
    with pytest.raises(ValueError, match="phase"):
        UnitStatus("finished")
    with pytest.raises(ValueError, match="outcome"):
        UnitStatus("ended", outcome="ok")
    with pytest.raises(ValueError, match="needs phase 'ended'"):
        UnitStatus("running", outcome="failed")


def test_action_submit_is_one_non_blocking_invoke_of_package_action_with_the_payload():
    whisk = Whisk()
    handle = ActionExecutor(whisk, package="rc").submit(UNIT)
    assert handle == "a" * 32
    assert whisk.invokes == [("rc/plugin-copy", dict(UNIT.payload), False)]


def test_action_submit_turns_a_busy_namespace_into_executor_busy_naming_the_unit():
    busy = Whisk(raise_on_invoke=TooManyRequests("OpenWhisk refused to invoke x for 3 s (HTTP 429: ...)"))
    with pytest.raises(ExecutorBusy, match="s000 of j1 waits for a free slot") as err:
        ActionExecutor(busy).submit(UNIT)
    assert err.value.status == 429


@pytest.mark.parametrize("failure, message", [
    (UpstreamError("OpenWhisk at x unreachable: ConnectionError"), "unreachable"),
    (ConnectionError("controller down"), "invoke of plugin-copy failed: ConnectionError: controller down"),
])
def test_action_submit_other_failures_are_radcloud_errors_with_the_cause(failure, message):
    with pytest.raises(RadcloudError, match=message) as err:
        ActionExecutor(Whisk(raise_on_invoke=failure)).submit(UNIT)
    assert not isinstance(err.value, ExecutorBusy)


def test_action_submit_without_an_activation_id_is_an_error():
    with pytest.raises(UpstreamError, match="no activation id"):
        ActionExecutor(Whisk(answer={"error": "odd"})).submit(UNIT)


def test_action_poll_maps_activation_records():
    whisk = Whisk()
    whisk.records = {"ok": {"response": {"status": "success"}},
                     "dev": {"response": {"status": "action developer error"}}}
    got = ActionExecutor(whisk).poll(["ok", "dev", "inflight"])
    assert got["inflight"] == UnitStatus("running", reason="activation in flight",
                                         detail={"activation_id": "inflight"})
    assert (got["ok"].phase, got["ok"].outcome) == ("ended", "succeeded")
    assert (got["dev"].outcome, got["dev"].reason) == ("failed", "activation dev ended (action developer error)")


def test_action_poll_that_cannot_ask_raises_and_concludes_nothing():
    with pytest.raises(UpstreamError):
        ActionExecutor(Whisk()).poll(["boom"])


def test_action_cancel_is_a_no_op_openwhisk_cannot_stop_an_activation():
    whisk = Whisk()
    ActionExecutor(whisk).cancel("a" * 32)
    assert whisk.invokes == []


def test_status_of_an_unknown_status_is_a_failure_that_says_so():
    s = status_of("x", {"response": {}})
    assert (s.phase, s.outcome, s.reason) == ("ended", "failed", "activation x ended (ended)")


def test_inprocess_runs_the_unit_and_reports_how_it_ended():
    seen = []
    ex = InProcessExecutor(lambda payload, handle: seen.append((payload["shard_id"], handle)))
    h = ex.submit(UNIT)
    assert seen == [("s000", h)] and ex.poll([h])[h].outcome == "succeeded"


def test_inprocess_a_raising_unit_ended_failed_in_the_executors_view():
    def crash(payload, handle):
        raise RuntimeError("x")
    ex = InProcessExecutor(crash)
    h = ex.submit(UNIT)
    assert (ex.poll([h])[h].outcome, ex.poll([h])[h].reason) == ("failed", f"unit {h} raised RuntimeError")


def test_inprocess_capacity_refusal_and_freeing():
    ex = InProcessExecutor(capacity=1)  # no runner: units stay running until finished
    h = ex.submit(UNIT)
    with pytest.raises(ExecutorBusy, match="capacity of 1"):
        ex.submit(UNIT)
    ex.finish(h)
    assert ex.submit(UNIT) != h


def test_inprocess_refuse_forget_and_down():
    ex = InProcessExecutor()
    ex.refuse(2)
    for _ in range(2):
        with pytest.raises(ExecutorBusy):
            ex.submit(UNIT)
    h = ex.submit(UNIT)
    assert ex.poll([h])[h].phase == "running"
    ex.forget(h)
    assert ex.poll([h, "never"]) == {}
    ex.down()
    with pytest.raises(UpstreamError):
        ex.poll([h])


def test_inprocess_threaded_returns_at_once():
    import threading

    gate = threading.Event()
    ex = InProcessExecutor(lambda p, h: gate.wait(5), threaded=True)
    h = ex.submit(UNIT)
    assert ex.poll([h])[h].phase in ("queued", "running")
    gate.set()
    ex.join()
    assert ex.poll([h])[h].outcome == "succeeded"


def test_registry_knows_the_installed_executors_and_builds_them():
    assert {"action", "inprocess"} <= set(known()) and "base" not in known()
    settings = Settings.load(environ={"RADCLOUD_OW_API_HOST": "127.0.0.1:1", "RADCLOUD_OW_API_KEY": "u:p"})
    assert isinstance(executor_for("action", settings), ActionExecutor)
    runner = lambda p, h: None  # noqa: E731
    ex = executor_for("inprocess", settings, runner=runner)
    assert isinstance(ex, InProcessExecutor) and ex.runner is runner


@pytest.mark.parametrize("name", ["slurmm", "base", "../x", "", "Action"])
def test_registry_refuses_an_unknown_executor_naming_the_known_ones(name):
    with pytest.raises(ConfigError, match="known executors: action, inprocess"):
        executor_for(name, Settings.load(environ={}))


def test_the_executor_setting_defaults_to_action_and_is_read_from_the_environment():
    assert Settings.load(environ={}).executor == "action"
    assert Settings.load(environ={"RADCLOUD_EXECUTOR": "inprocess"}).executor == "inprocess"
