"""The lifecycle of tracked work: one table of states and transitions, final states defined once.

Every piece of tracked work — a plugin job, a pfcon job (a plugin job seen
through pfcon's protocol), a retrieve — follows the same shape::

    create -> plan units -> submit each unit through an Executor
           -> record unit events -> reconcile -> finalise exactly once

and is described here by two :class:`Machine` s: one for the work, one for
its units (shards, series). A machine is a table ``(state, event) -> new
state``; a pair missing from the table is a refusal. Nothing else in
radcloud spells a transition: the job store asks :meth:`Machine.sources`
which states an event may leave (the ``allowed`` list of its atomic Lua
scripts), and code asks :func:`is_final` / the ``*_FINAL`` constants
instead of quoting state names. ``tests/unit/test_lifecycle.py`` checks every
state × event of every machine.

A pipeline (:mod:`radcloud.work.pipelines`) is a job of ``kind`` pipeline
whose units are its steps, each run by another job: the same two machines,
only the outcome rule differs (:func:`job_outcome`: the first step that did
not succeed stops it and names it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from radcloud.core.errors import Conflict

# -- the states, once ---------------------------------------------------------------
SUCCEEDED, FAILED, PARTIAL, CANCELLED = "succeeded", "failed", "partial", "cancelled"

JOB_STATES = ("created", "staging", "running", "finishing", SUCCEEDED, FAILED, PARTIAL, CANCELLED)
JOB_FINAL = frozenset({SUCCEEDED, FAILED, PARTIAL, CANCELLED})
JOB_OPEN = tuple(s for s in JOB_STATES if s not in JOB_FINAL and s != "finishing")

SHARD_STATES = ("pending", "invoked", "running", SUCCEEDED, FAILED, CANCELLED)
SHARD_FINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
SHARD_OPEN = ("pending", "invoked", "running")
SHARD_WAITING = ("pending", "invoked")  # not started yet: waiting for the executor

SERIES_STATES = ("queued", "moving", "staging", SUCCEEDED, FAILED)  # moving: a C-MOVE into Orthanc
SERIES_OPEN = ("queued", "moving", "staging")
SERIES_FINAL = frozenset({SUCCEEDED, FAILED})
STALLED = "stalled"  # a read-side view of an open series with no progress for a while (never stored)

RETRIEVE_STATES = ("queued", "running", SUCCEEDED, FAILED, PARTIAL)
RETRIEVE_FINAL = frozenset({SUCCEEDED, FAILED, PARTIAL})

PIPELINE_KIND = "pipeline"  # a job whose units are steps (radcloud.work.pipelines)


@dataclasses.dataclass(frozen=True)
class Machine:
    """States, events and the transition table of one kind of tracked thing."""

    name: str
    states: tuple[str, ...]
    final: frozenset[str]
    events: tuple[str, ...]
    table: Mapping[tuple[str, str], str]

    def __post_init__(self) -> None:
        for (state, event), to in self.table.items():
            if state not in self.states or to not in self.states or event not in self.events:
                raise ValueError(f"{self.name}: bad transition {state} --{event}--> {to}")
            if state in self.final and to != state and event not in _REOPENING:
                raise ValueError(f"{self.name}: final state {state} cannot leave by {event}")

    def allows(self, state: str, event: str) -> bool:
        return (state, event) in self.table

    def next(self, state: str, event: str) -> str:
        """The state ``event`` moves ``state`` to; Conflict naming both when refused."""
        try:
            return self.table[(state, event)]
        except KeyError:
            raise Conflict(f"{self.name} is {state}; {event} is not possible from there",
                           field=self.name, state=state) from None

    def sources(self, event: str) -> tuple[str, ...]:
        """The states ``event`` may leave, in table order (the store's ``allowed`` lists)."""
        if event not in self.events:
            raise ValueError(f"{self.name} has no event {event!r}")
        return tuple(s for s in self.states if (s, event) in self.table)

    def is_final(self, state: str | None) -> bool:
        return state in self.final


# The events that leave a final state: retry (a job's failed units run again) and rerun (a
# pipeline's failed step and the steps after it run again, on the same job's retry).
_REOPENING = {"retry", "rerun"}


def _table(rows: Iterable[tuple[Iterable[str], str, str | None]]) -> dict[tuple[str, str], str]:
    """Rows of (from states, event, to); ``to`` None keeps the state."""
    out: dict[tuple[str, str], str] = {}
    for sources, event, to in rows:
        for s in sources:
            out[(s, event)] = s if to is None else to
    return out


_LIVE = ("created", "staging", "running")

JOB = Machine(
    "job", JOB_STATES, JOB_FINAL,
    events=("submit", "start", "cancel", "all_done", "succeed", "fail", "part", "cancelled", "retry"),
    table=_table([
        (("created",), "submit", "staging"),               # its units are being submitted
        (("created", "staging"), "start", "running"),      # a unit started
        (("running",), "start", None),
        (_LIVE, "cancel", None),                           # the flag; units see it and stop
        (_LIVE, "all_done", "finishing"),                  # the last unit outcome: one finaliser
        (("finishing",), "succeed", SUCCEEDED),
        (("finishing",), "fail", FAILED),
        (("finishing",), "part", PARTIAL),
        (("finishing",), "cancelled", CANCELLED),
        ((FAILED, PARTIAL), "retry", "staging"),           # failed units only run again
    ]))

# The finaliser's event for each final job state.
COMPLETE_EVENT = {SUCCEEDED: "succeed", FAILED: "fail", PARTIAL: "part", CANCELLED: "cancelled"}

SHARD = Machine(
    "shard", SHARD_STATES, SHARD_FINAL,
    events=("busy", "invoked", "started", "progress", "log", "succeed", "fail", "cancel", "stage", "handle",
            "retry", "rerun", "requeued"),
    table=_table([
        (("pending",), "busy", None),                      # the executor could not take it now
        (("pending",), "invoked", "invoked"),              # the executor took it (a handle)
        (("pending", "invoked"), "started", "running"),    # its runner reported itself, before fetching inputs
        (("running",), "progress", None),
        (SHARD_OPEN, "log", None),
        (SHARD_OPEN, "succeed", SUCCEEDED),
        (SHARD_OPEN, "fail", FAILED),                      # also: lost, deadline passed, submit refused
        (SHARD_OPEN, "cancel", CANCELLED),
        (("running",), "stage", "invoked"),                # its next stage was submitted
        # Its batch job was requeued by the cluster and runs again under the same handle: the
        # same shard, one more attempt (radcloud.work.shardchannel).
        (("invoked", "running"), "requeued", None),
        # A fast unit reported before submit returned: record the handle only.
        (("running", SUCCEEDED, FAILED, CANCELLED), "handle", None),
        ((FAILED,), "retry", "pending"),
        # A pipeline retried (radcloud.work.pipelines.Pipelines.retry): the step that failed and the
        # steps it stopped ("not run", cancelled) run again; the steps that succeeded are kept.
        ((FAILED, CANCELLED), "rerun", "pending"),
    ]))

# The shard event for each final shard state.
SHARD_OUTCOME_EVENT = {SUCCEEDED: "succeed", FAILED: "fail", CANCELLED: "cancel"}

SERIES = Machine(
    "series", SERIES_STATES, SERIES_FINAL,
    events=("submitted", "move", "stage", "succeed", "fail"),
    table=_table([
        (SERIES_OPEN, "submitted", None),                  # a hop recorded its handle
        (("queued", "moving"), "move", "moving"),          # a C-MOVE from a remote PACS, waited for hop by hop
        (SERIES_OPEN, "stage", "staging"),                 # instances are being copied (hop after hop)
        (SERIES_OPEN, "succeed", SUCCEEDED),
        (SERIES_OPEN, "fail", FAILED),                     # also: lost, could not be submitted
    ]))

MACHINES = (JOB, SHARD, SERIES)


def is_final(state: str | None) -> bool:
    """True for a final state of a job, a shard, a series or a retrieve."""
    return state in JOB_FINAL or state in SERIES_FINAL or state in RETRIEVE_FINAL


def retrieve_state(series_states: Iterable[str]) -> str:
    """A retrieve's state, derived from its series' (``stalled`` counts as failed)."""
    states = list(series_states)
    if all(s == SUCCEEDED for s in states):
        return SUCCEEDED
    if all(s in (FAILED, STALLED) for s in states):
        return FAILED
    if all(s in SERIES_FINAL or s == STALLED for s in states):
        return PARTIAL
    if all(s == "queued" for s in states):
        return "queued"
    return "running"


def job_outcome(job: Mapping) -> tuple[str, str]:
    """The final state a finishing job ends in, with a short reason."""
    if job.get("kind") == PIPELINE_KIND:
        return pipeline_outcome(job)
    ok = int(job.get("shards_succeeded", 0))
    failed = int(job.get("shards_failed", 0))
    total = int(job.get("shards_total", 0))
    if str(job.get("cancel")) in ("1", "True", "true"):
        return CANCELLED, f"cancelled; {ok}/{total} shards had succeeded"
    if ok == total:
        warned = [s for s in job.get("shards", []) if int(s.get("warnings") or 0)]
        if warned:  # succeeded with warnings: say so, and how many files
            files = sum(int(s["warnings"]) for s in warned)
            return SUCCEEDED, (f"succeeded with warnings: {files} input file(s) in {len(warned)} shard(s) "
                               f"not processed; see each shard's reason")
        return SUCCEEDED, ""
    reasons = sorted({s.get("reason") or "" for s in job.get("shards", []) if s.get("state") == FAILED})
    why = "; ".join(r for r in reasons if r)[:300]
    if ok == 0:
        return FAILED, why or f"{failed} shard(s) failed"
    return PARTIAL, f"{failed}/{total} shard(s) failed: {why}"


def pipeline_outcome(job: Mapping) -> tuple[str, str]:
    """A pipeline's final state: succeeded when every step did; else the first step that did
    not stops it, and the reason names it (its reason already starts "step N (plugin)")."""
    steps = list(job.get("shards", []))
    done = sum(1 for s in steps if s.get("state") == SUCCEEDED)
    if done == len(steps) and not str(job.get("cancel")) in ("1", "True", "true"):
        return SUCCEEDED, ""
    stop = next((s for s in steps if s.get("state") in (FAILED, CANCELLED)
                 and not str(s.get("reason") or "").startswith("not run")), None)
    if str(job.get("cancel")) in ("1", "True", "true"):
        return CANCELLED, f"cancelled; {done}/{len(steps)} steps had succeeded"
    if stop is None:
        return FAILED, f"{len(steps) - done} step(s) did not run"
    why = f"stopped at {stop.get('reason') or 'step ' + str(int(stop['id'][1:]) + 1)}"[:300]
    return (CANCELLED if stop["state"] == CANCELLED else FAILED), why
