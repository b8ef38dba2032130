"""What the Automations page reads about a routed run: reasons in plain words, the raw ones kept."""

from radcloud.arrivals.rules import with_pipeline_state
from radcloud.work.reasons import JARGON


class Jobs:
    def __init__(self, job):
        self.job = job

    def get(self, job_id):
        return self.job


def test_pipeline_and_step_reasons_come_in_plain_words_with_the_raw_ones_kept():
    raw = "stopped at step 2 (pl-seg): 1/1 shard(s) failed: shard s0 exited with code 137"
    job = {"state": "failed", "reason": raw, "options": {"steps": [{"plugin": "pl-a"}, {"plugin": "pl-seg"}]},
           "shards": [{"id": "s0", "state": "succeeded"},
                      {"id": "s1", "state": "failed", "reason": "1/1 shard(s) failed: exited with code 137"}]}
    runs = with_pipeline_state([{"pipeline": "p1", "rule": "r"}, {"rule": "r2", "reason": "gave up after 5 attempts: "
                                                                   "retrieve activation a1 outlasted the blocking wait"}],
                               Jobs(job))
    assert runs[0]["pipeline_reason"] == raw
    assert runs[0]["pipeline_reason_plain"].startswith("Stopped at step 2 (pl-seg).")
    failed = runs[0]["step_states"][1]
    assert failed["reason_plain"] and not JARGON.search(failed["reason_plain"])
    assert not JARGON.search(runs[0]["pipeline_reason_plain"])
    assert runs[1]["reason_plain"] and not JARGON.search(runs[1]["reason_plain"])
    assert "activation" in runs[1]["reason"]  # the technical details are kept, not lost
