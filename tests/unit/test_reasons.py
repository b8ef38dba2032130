"""radcloud.work.reasons: every reason radcloud records reads in plain words, the technical text kept.

The scan reads the modules that record why a job or a part ended and
collects the text at every place a reason is written (``reason=``, a
``"reason"``/``"message"`` entry, an executor's UnitStatus, the sandbox's and
lifecycle's ``(verdict, why)`` answers); f-string holes become ``3``. Each
must map to specific plain words (not the catch-all) without jargon.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from radcloud.work import lifecycle as L
from radcloud.work import reasons
from radcloud.work.jobview import public, summary
from radcloud.work.reconcile import lost_reason

ROOT = Path(__file__).resolve().parents[2] / "radcloud"
WRITERS = ["work/lifecycle.py", "run/sandbox.py", "run/shard.py", "work/reconcile.py", "work/slurmstate.py",
           "work/dispatch.py", "work/pipelines.py", "work/jobs.py", *[f"work/executors/{p.name}" for p in
                                                                     (ROOT / "work/executors").glob("*.py")]]


def _text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "3" for v in node.values)
    return None


def _texts(node: ast.AST) -> list[str]:
    out = [t for n in ast.walk(node) if (t := _text(n)) is not None and len(t) > 8]
    # The outermost text of a conditional/concatenation is what is written; pieces inside f-strings are skipped.
    return [t for t in out if not any(t != o and t in o for o in out)]


def scanned() -> dict[str, str]:
    found: dict[str, str] = {}
    for rel in WRITERS:
        tree = ast.parse((ROOT / rel).read_text())
        for node in ast.walk(tree):
            values: list[ast.AST] = []
            if isinstance(node, ast.keyword) and node.arg == "reason":
                values.append(node.value)
            elif isinstance(node, ast.Dict):
                values += [v for k, v in zip(node.keys, node.values)
                           if isinstance(k, ast.Constant) and k.value in ("reason", "message")]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "UnitStatus" and len(node.args) > 2:
                values.append(node.args[2])
            elif isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple) and len(node.value.elts) == 2:
                values.append(node.value.elts[1])
            for value in values:
                for text in _texts(value):
                    found[text] = f"{rel}:{getattr(value, 'lineno', '?')}"
    return found


SCANNED = scanned()
# Texts at those places that are no reason of a failure (a running unit's note, a status word).
NOT_REASONS = {"activation in flight", "fired; no route run has taken it yet"}


def test_the_scan_sees_the_reasons_a_clinician_tripped_over():
    texts = " | ".join(SCANNED)
    assert len(SCANNED) >= 20
    assert "plugin exited with code 3; see the output tail" in SCANNED and "3/3 shard(s) failed: 3" in SCANNED, texts


@pytest.mark.parametrize("text", sorted(t for t in SCANNED if reasons.JARGON.search(t) and t not in NOT_REASONS))
def test_every_technical_reason_written_has_plain_words(text):
    words = reasons.plain(text)
    assert words and not reasons.JARGON.search(words), (SCANNED[text], words)
    assert words != reasons._FALLBACK, f"{SCANNED[text]}: {text!r} has no plain words of its own"


def test_reasons_of_real_outcomes_in_plain_words():
    job = {"shards_total": 3, "shards_done": 1, "shards_failed": 2, "cancel": 0,
           "shards": [{"state": L.FAILED, "reason": "plugin exited with code 2; see the output tail"},
                      {"state": L.FAILED, "reason": "the action executor no longer knows unit a1; it ended "
                                                   "without an outcome"},
                      {"state": L.SUCCEEDED}]}
    job["shards_succeeded"] = 1
    state, why = L.job_outcome(job)
    assert state == L.PARTIAL and "shard" in why
    assert reasons.plain(why) == "2 of 3 parts failed. The tool stopped with an error. " + reasons.RETRY
    assert reasons.plain(lost_reason("a1", None, "slurm")).startswith("The computer running this part")
    assert reasons.plain("plugin killed by the kernel's OOM killer at its action's memory limit (512 MB)") \
        .startswith("The tool ran out of memory")
    assert reasons.plain("stopped at step 2 (lung-seg): partial: 1/2 shard(s) failed: plugin exited with code 1") \
        == "Stopped at step 2 (lung-seg). 1 of 2 parts failed. The tool stopped with an error. " + reasons.RETRY
    assert reasons.plain("step 2 (dicom-tags): exit 1: no DICOM") == \
        "Stopped at step 2 (dicom-tags). The tool stopped with an error. " + reasons.RETRY
    assert reasons.plain("no study matched the rule's filter") == "no study matched the rule's filter"  # plain already
    assert reasons.plain("sigsegv in frobnicator") == reasons._FALLBACK
    # the router's refusals (a waiting arrival's last reason): busy, not "results too large"
    assert reasons.plain("rule ct: OpenWhisk refused to invoke radcloud/retrieve") == \
        "radcloud was busy, or a service it needs (the PACS, storage) did not answer."
    assert reasons.plain("") == "" and reasons.plain(None) == ""


def test_the_job_answer_carries_both_words_and_technical_reason():
    job = {"id": "j1", "state": L.FAILED, "reason": "1 shard(s) failed",
           "shards": [{"id": "s000", "state": L.FAILED, "reason": "plugin exited with code 1; see the output tail"}]}
    assert summary(job)["reason_plain"].startswith("1 part(s) failed") and summary(job)["reason"] == job["reason"]
    (shard,) = public(job)["shards"]
    assert shard["reason_plain"].startswith("The tool stopped with an error") and "exited" in shard["reason"]


def test_a_shard_s_attempt_is_said_in_words_requeued_or_retried():
    def words(**shard):
        (out,) = public({"id": "j1", "state": "running", "shards": [{"id": "s000", "state": "running", **shard}]})["shards"]
        return out["attempt_plain"]

    assert words() == "" and words(attempt=1) == ""
    requeued = {"handle": "42", "restarts": 1}
    assert words(attempt=2, activation_id="42", requeued=requeued) == "requeued by Slurm, attempt 2"
    # retried (a new Slurm job) after a requeue of the first: the requeue was another job's
    assert words(attempt=3, activation_id="43", requeued=requeued) == "retried, attempt 3"
    # retried, then the new job requeued: its run 2, the shard's attempt 3
    assert words(attempt=3, activation_id="43", requeued={"handle": "43", "restarts": 1}) == \
        "requeued by Slurm, attempt 3 (run 2 of this job)"
    assert words(attempt=2, activation_id="3f2a") == "retried, attempt 2"


def test_a_running_shard_s_phase_is_said_in_words():
    def words(**shard):
        (out,) = public({"id": "j1", "state": "running", "shards": [{"id": "s000", **shard}]})["shards"]
        return out["phase_plain"]

    assert words(state="running", n_inputs=5) == "fetching 5 inputs"
    assert words(state="running", n_inputs=1) == "fetching 1 input"
    assert words(state="running", n_inputs=0) == "starting"  # a plugin that reads no files
    assert words(state="running") == "fetching inputs"  # recorded before n_inputs was (an older runner)
    assert words(state="running", n_inputs=5, plugin_started_at=1.0) == "running the plugin"
    assert words(state="invoked", n_inputs=5) == "" and words(state="succeeded", plugin_started_at=1.0) == ""


def test_the_cli_and_pfcon_say_a_shard_s_wait_and_attempt_in_the_same_words():
    """One helper (radcloud.work.jobview.wait_and_attempt_words) serves the CLI's notes, from the public
    shape, and pfcon's status message, from the stored shard."""
    from radcloud.ops.cli.jobs import shard_notes
    from radcloud.pfcon.service import _message

    stored = {"id": "s000", "state": "invoked", "executor": "slurm", "activation_id": "42", "attempt": 2,
              "requeued": {"handle": "42", "restarts": 1}, "queue_reason": "queued: waiting for resources"}
    job = {"id": "j1", "state": "running", "shards": [stored]}
    words = "queued: waiting for resources, requeued by Slurm, attempt 2"
    assert shard_notes(public(job)) == [f"s000: slurm job 42, {words}"]
    assert _message(job) == ("radcloud job j1 running; on Slurm job 42; queued: waiting for resources; "
                             "requeued by Slurm, attempt 2")
    ended = {"id": "j1", "state": "cancelled", "shards": [{**stored, "state": "cancelled"}]}  # no wait once ended
    assert shard_notes(public(ended), open_only=False) == ["s000: slurm job 42, requeued by Slurm, attempt 2"]
    assert "waiting for resources" not in _message(ended)
