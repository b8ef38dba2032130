"""The lifecycle's one table, checked exhaustively: every state × event of every machine."""

from __future__ import annotations

import pytest

from radcloud.core.errors import Conflict
from radcloud.work import lifecycle as L

# What each machine must do, written out independently of the table: (state, event) -> new state.
# Anything not listed is a refusal.
EXPECTED = {
    "job": {
        ("created", "submit"): "staging",
        ("created", "start"): "running", ("staging", "start"): "running", ("running", "start"): "running",
        ("created", "cancel"): "created", ("staging", "cancel"): "staging", ("running", "cancel"): "running",
        ("created", "all_done"): "finishing", ("staging", "all_done"): "finishing",
        ("running", "all_done"): "finishing",
        ("finishing", "succeed"): "succeeded", ("finishing", "fail"): "failed",
        ("finishing", "part"): "partial", ("finishing", "cancelled"): "cancelled",
        ("failed", "retry"): "staging", ("partial", "retry"): "staging",
    },
    "shard": {
        ("pending", "busy"): "pending",
        ("pending", "invoked"): "invoked",
        ("pending", "started"): "running", ("invoked", "started"): "running",
        ("running", "progress"): "running",
        **{(s, "log"): s for s in ("pending", "invoked", "running")},
        **{(s, "succeed"): "succeeded" for s in ("pending", "invoked", "running")},
        **{(s, "fail"): "failed" for s in ("pending", "invoked", "running")},
        **{(s, "cancel"): "cancelled" for s in ("pending", "invoked", "running")},
        ("running", "stage"): "invoked",
        ("invoked", "requeued"): "invoked", ("running", "requeued"): "running",  # a Slurm requeue
        **{(s, "handle"): s for s in ("running", "succeeded", "failed", "cancelled")},
        ("failed", "retry"): "pending",
        ("failed", "rerun"): "pending", ("cancelled", "rerun"): "pending",   # a pipeline's steps, on its retry
    },
    "series": {
        **{(s, "submitted"): s for s in ("queued", "moving", "staging")},
        ("queued", "move"): "moving", ("moving", "move"): "moving",
        **{(s, "stage"): "staging" for s in ("queued", "moving", "staging")},
        **{(s, "succeed"): "succeeded" for s in ("queued", "moving", "staging")},
        **{(s, "fail"): "failed" for s in ("queued", "moving", "staging")},
    },
}

CASES = [(m, s, e) for m in L.MACHINES for s in m.states for e in m.events]


def test_every_machine_is_covered():
    assert {m.name for m in L.MACHINES} == set(EXPECTED)
    assert len(CASES) == 175  # 6 shard states x 1 more event (requeued)


@pytest.mark.parametrize("machine,state,event", CASES, ids=[f"{m.name}-{s}-{e}" for m, s, e in CASES])
def test_every_state_and_event(machine, state, event):
    expected = EXPECTED[machine.name].get((state, event))
    assert machine.allows(state, event) is (expected is not None)
    if expected is None:
        with pytest.raises(Conflict) as err:
            machine.next(state, event)
        assert state in err.value.message and event in err.value.message
    else:
        assert machine.next(state, event) == expected
        assert state in machine.sources(event)


def test_final_states_are_left_only_by_retry():
    for m in L.MACHINES:
        for (state, event), to in m.table.items():
            if m.is_final(state) and to != state:
                assert event in ("retry", "rerun"), (m.name, state, event)
    assert L.SHARD.sources("rerun") == ("failed", "cancelled") and L.SHARD.sources("retry") == ("failed",)


def test_final_states_defined_once():
    assert L.JOB.final == {"succeeded", "failed", "partial", "cancelled"}
    assert L.SHARD.final == {"succeeded", "failed", "cancelled"}
    assert L.SERIES.final == {"succeeded", "failed"}
    assert all(L.is_final(s) for s in L.JOB_FINAL | L.SHARD_FINAL | L.SERIES_FINAL | L.RETRIEVE_FINAL)
    assert not any(L.is_final(s) for s in ("created", "staging", "running", "finishing", "pending", "invoked",
                                             "queued", "moving", L.STALLED))


def test_every_final_state_has_its_completing_event():
    assert {L.JOB.next("finishing", L.COMPLETE_EVENT[s]) for s in L.JOB_FINAL} == set(L.JOB_FINAL)
    assert {L.SHARD.next("running", L.SHARD_OUTCOME_EVENT[s]) for s in L.SHARD_FINAL} == set(L.SHARD_FINAL)


def test_a_bad_table_is_refused_when_built():
    with pytest.raises(ValueError):
        L.Machine("x", ("a", "b"), frozenset({"b"}), ("go",), {("b", "go"): "a"})
    with pytest.raises(ValueError):
        L.Machine("x", ("a",), frozenset(), ("go",), {("a", "nope"): "a"})
    with pytest.raises(ValueError):
        L.JOB.sources("nope")


@pytest.mark.parametrize("states,expected", [
    ([], "succeeded"), (["succeeded"] * 2, "succeeded"), (["failed", "stalled"], "failed"),
    (["succeeded", "failed"], "partial"), (["succeeded", "stalled"], "partial"), (["queued"] * 2, "queued"),
    (["queued", "running"], "running"), (["succeeded", "queued"], "running")])
def test_retrieve_state_derived_from_series(states, expected):
    assert L.retrieve_state(states) == expected


def test_job_outcome():
    base = {"shards_total": 2, "shards": []}
    assert L.job_outcome({**base, "shards_succeeded": 2}) == ("succeeded", "")
    assert L.job_outcome({**base, "shards_succeeded": 2, "cancel": True})[0] == "cancelled"
    assert L.job_outcome({**base, "shards_failed": 2})[0] == "failed"
    state, reason = L.job_outcome({**base, "shards_succeeded": 1, "shards_failed": 1,
                                   "shards": [{"state": "failed", "reason": "oom"}]})
    assert state == "partial" and "oom" in reason


def test_pipeline_outcome_names_the_step_that_stopped_it():
    def pipeline(*states, cancel=False):
        reasons = {"failed": "step 2 (lung-seg): exit 1", "cancelled": "not run: step 2 (lung-seg) failed"}
        return {"kind": L.PIPELINE_KIND, "cancel": cancel,
                "shards": [{"id": f"s{i:02d}", "state": s, "reason": reasons.get(s, "")} for i, s in enumerate(states)]}

    assert L.job_outcome(pipeline("succeeded", "succeeded")) == ("succeeded", "")
    assert L.job_outcome(pipeline("succeeded", "failed", "cancelled")) == (
        "failed", "stopped at step 2 (lung-seg): exit 1")
    assert L.job_outcome(pipeline("succeeded", "cancelled", cancel=True)) == (
        "cancelled", "cancelled; 1/2 steps had succeeded")
    state, reason = L.job_outcome({**pipeline("succeeded", "cancelled"),
                                   "shards": [{"id": "s00", "state": "cancelled", "reason": "step 1 (x): cancelled"}]})
    assert (state, reason) == ("cancelled", "stopped at step 1 (x): cancelled")
