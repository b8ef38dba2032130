"""The arrivals watcher's decisions with an in-memory Orthanc change log and Redis (fakes by injection)."""

from __future__ import annotations

import time

import pytest

from redis_fakes import FakeRedis

from radcloud.arrivals.watch import CURSOR, PENDING, TRIGGER, Watcher, arrival, fingerprint, routed_key
from radcloud.core.errors import NotFound, UpstreamError


def stamp(t: float) -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(t))


class FakeOrthanc:
    def __init__(self) -> None:
        self.log: list[dict] = []
        self.studies: dict[str, dict] = {}
        self.series: dict[str, dict] = {}
        self.now_s = 1_800_000_000.0
        self.aet: dict[str, str] = {}

    def change(self, kind, rid):
        self.log.append({"ChangeType": kind, "ID": rid, "Seq": len(self.log) + 1})

    def store(self, study, series, instances, *, modality="CT", body_part="CHEST", aet="SCANNER1"):
        """Instances arrive: NewStudy/NewSeries as Orthanc logs them; LastUpdate moves."""
        if study not in self.studies:
            self.studies[study] = {"ID": study, "MainDicomTags": {"StudyInstanceUID": f"1.2.{study}",
                                                                  "StudyDescription": "CT THORAX",
                                                                  "AccessionNumber": "A1"},
                                   "PatientMainDicomTags": {"PatientName": "DOE^JANE"}, "Series": []}
            self.change("NewStudy", study)
        if series not in self.series:
            self.series[series] = {"ID": series, "ParentStudy": study, "Instances": [], "MainDicomTags": {
                "SeriesInstanceUID": f"1.2.{study}.{series}", "Modality": modality,
                "BodyPartExamined": body_part, "SeriesDescription": "Lung 1mm"}}
            self.studies[study]["Series"].append(series)
            self.change("NewSeries", series)
        self.series[series]["Instances"] += instances
        for i in instances:
            self.aet[i] = aet
        self.studies[study]["LastUpdate"] = stamp(self.now_s)

    # -- the client interface the watcher uses --
    def last_change(self):
        return len(self.log)

    def changes(self, since, limit=1000):
        page = [c for c in self.log if c["Seq"] > since][:limit]
        return {"Changes": page, "Last": page[-1]["Seq"] if page else len(self.log), "Done": True}

    def now(self):
        return stamp(self.now_s)

    def resource(self, level, rid):
        table = self.studies if level == "Study" else self.series
        if rid not in table:
            raise NotFound(f"no {rid}")
        return table[rid]

    def children(self, level, rid, child):
        return [self.series[s] for s in self.resource("Study", rid)["Series"]]

    def metadata(self, level, rid, name):
        if rid not in self.aet or not self.aet[rid]:
            raise NotFound("no metadata")
        return self.aet[rid]


@pytest.fixture
def world():
    orthanc, redis, fired = FakeOrthanc(), FakeRedis(), []
    clock = [1000.0]
    watcher = Watcher(orthanc, redis, fired.append, stable_age_s=5, from_start=True, clock=lambda: clock[0])

    def advance(s):
        clock[0] += s
        orthanc.now_s += s
    return orthanc, redis, fired, watcher, advance


def test_stable_study_fires_once_with_routing_attributes_only(world):
    orthanc, redis, fired, watcher, advance = world
    orthanc.store("s1", "se1", ["i1", "i2"])
    assert watcher.poll() == 0  # pending, not yet stable
    orthanc.change("StableStudy", "s1")
    assert watcher.poll() == 1
    [payload] = fired
    assert payload["study_uid"] == "1.2.s1" and payload["calling_aet"] == "SCANNER1"
    assert payload["modalities"] == ["CT"] and payload["study_description"] == "CT THORAX"
    assert payload["series"][0] | {"fingerprint": None} == {
        "series_uid": "1.2.s1.se1", "orthanc_series": "se1", "modality": "CT", "body_part": "CHEST",
        "series_description": "Lung 1mm", "instances": 2, "fingerprint": None}
    text = repr(payload)
    assert "DOE" not in text and "A1" not in text  # no patient name, no accession number
    assert redis.get(CURSOR) == str(len(orthanc.log)) and redis.hgetall(PENDING) == {}
    orthanc.change("StableStudy", "s1")  # announced again, same instances: nothing to do
    advance(10)
    assert watcher.poll() == 0 and len(fired) == 1


def test_a_study_pending_at_an_orthanc_restart_waits_for_its_own_stability(world):
    """After a restart Orthanc says IsStable for everything and never sends StableStudy for
    what was pending: the sweep routes it only once LastUpdate is stable_age old."""
    orthanc, redis, fired, watcher, advance = world
    orthanc.store("s1", "se1", ["i1"])
    watcher.poll()
    advance(3)
    orthanc.store("s1", "se1", ["i2"])  # still arriving (no change-log entry for a new instance)
    advance(3)  # 6 s after the watcher saw it, 3 s after its last instance
    assert watcher.poll() == 0 and "s1" in redis.hgetall(PENDING)
    advance(2)
    assert watcher.poll() == 1
    assert fired[0]["series"][0]["instances"] == 2


def test_a_grown_study_fires_for_its_new_series_only_and_a_resend_for_none(world):
    orthanc, redis, fired, watcher, advance = world
    orthanc.store("s1", "se1", ["i1"])
    orthanc.change("StableStudy", "s1")
    watcher.poll()
    orthanc.store("s1", "se2", ["i9"], modality="SEG", aet="")
    orthanc.change("StableStudy", "s1")
    assert watcher.poll() == 1
    assert [s["orthanc_series"] for s in fired[1]["series"]] == ["se2"]
    assert fired[1]["calling_aet"] == "" and fired[1]["arrival_id"] != fired[0]["arrival_id"]
    assert redis.hgetall(routed_key("s1")) == {"se1": fingerprint(["i1"]), "se2": fingerprint(["i9"])}


def test_a_failed_fire_keeps_the_study_pending_until_a_fire_succeeds(world):
    orthanc, redis, fired, watcher, advance = world
    refusals = [UpstreamError("OpenWhisk at x unreachable")]

    def flaky(payload):
        if refusals:
            raise refusals.pop()
        fired.append(payload)
    watcher.fire = flaky
    orthanc.store("s1", "se1", ["i1"])
    orthanc.change("StableStudy", "s1")
    assert watcher.poll() == 0 and "s1" in redis.hgetall(PENDING)
    advance(6)
    assert watcher.poll() == 1 and len(fired) == 1


def test_a_restarted_watcher_resumes_from_its_cursor_and_repeats_nothing(world):
    orthanc, redis, fired, watcher, advance = world
    orthanc.store("s1", "se1", ["i1"])
    orthanc.change("StableStudy", "s1")
    watcher.poll()
    redis.set(CURSOR, 0)  # as if it died before moving the cursor: the log is handled again
    again = Watcher(orthanc, redis, fired.append, stable_age_s=5)
    assert again.poll() == 0 and len(fired) == 1


def test_without_a_cursor_the_watcher_starts_at_orthancs_present(world):
    orthanc, redis, fired, _watcher, advance = world
    orthanc.store("old", "se0", ["i0"])
    orthanc.change("StableStudy", "old")
    fresh = Watcher(orthanc, redis, fired.append, stable_age_s=5)
    assert fresh.poll() == 0 and fired == []
    orthanc.store("s2", "se2", ["i2"])
    orthanc.change("StableStudy", "s2")
    assert fresh.poll() == 1 and fired[0]["study_uid"] == "1.2.s2"


def test_a_reset_change_log_is_read_again_from_zero(world):
    orthanc, redis, fired, watcher, advance = world
    redis.set(CURSOR, 50)
    orthanc.store("s1", "se1", ["i1"])
    orthanc.change("StableStudy", "s1")
    assert watcher.poll() == 1


def test_arrival_id_is_stable_for_the_same_instances():
    study = {"ID": "s", "MainDicomTags": {"StudyInstanceUID": "1.2"}}
    series = [{"ID": "a", "Instances": ["x", "y"], "MainDicomTags": {}}]
    one = arrival(study, series, {"a": fingerprint(["y", "x"])}, "")
    two = arrival(study, series, {"a": fingerprint(["x", "y"])}, "")
    assert one["arrival_id"] == two["arrival_id"]


def test_a_fire_refused_as_too_many_holds_every_fire_then_the_study_is_routed(world):
    """OpenWhisk's fires per minute used up (429, refusals charged too): the watcher stops firing for
    HOLD_S instead of spending the next minute on refusals; nothing is lost."""
    from radcloud.arrivals.watch import HOLD_S
    from radcloud.core.errors import TooManyRequests

    orthanc, redis, fired, watcher, advance = world
    calls = []

    def limited(payload):
        calls.append(payload["study_uid"])
        if len(calls) == 1:
            raise TooManyRequests("Too many requests in the last minute (count: 61, allowed: 60).")
        fired.append(payload)
    watcher.fire = limited
    for sid in ("s1", "s2"):
        orthanc.store(sid, f"{sid}e", ["i1"])
        orthanc.change("StableStudy", sid)
    assert watcher.poll() == 0 and len(calls) == 1          # the second was not even tried
    advance(HOLD_S - 1)
    assert watcher.poll() == 0 and len(calls) == 1          # still held
    advance(2)
    assert watcher.poll() == 2 and sorted(p["study_uid"] for p in fired) == ["1.2.s1", "1.2.s2"]


def test_a_fire_accepted_but_its_rule_refused_as_busy_is_not_counted_as_fired(world):
    """OpenWhisk answers a fire 202 even when the namespace's concurrency limit refused the rule's
    action; only the trigger activation's log says 429. trigger_fire reads it back and raises, so the
    study stays pending and is fired again after the hold — the route action never saw it."""
    import json

    from radcloud.arrivals.watch import HOLD_S, trigger_fire

    orthanc, redis, fired, watcher, advance = world

    class Whisk:
        def __init__(self):
            self.fires, self.refuse = [], True

        def fire(self, trigger, payload):
            self.fires.append(payload["study_uid"])
            return f"{len(self.fires):032x}"

        def activation(self, aid):
            refused = {"rule": "_/radcloud-route-arrivals", "action": "_/radcloud/route", "statusCode": 429,
                       "success": False, "error": "Too many concurrent requests in flight (count: 30, allowed: 30)."}
            ok = {"rule": "_/radcloud-route-arrivals", "action": "_/radcloud/route", "statusCode": 0,
                  "success": True, "activationId": "b" * 32}
            return {"activationId": aid, "logs": [json.dumps(refused if self.refuse else ok), "not json"]}

    whisk = Whisk()
    watcher.fire = trigger_fire(whisk)
    orthanc.store("s1", "s1e", ["i1"])
    orthanc.change("StableStudy", "s1")
    assert watcher.poll() == 0 and redis.hget(PENDING, "s1") is not None and not redis.hgetall(routed_key("s1"))
    whisk.refuse = False
    advance(HOLD_S + 1)
    assert watcher.poll() == 1 and whisk.fires == ["1.2.s1", "1.2.s1"] and redis.hget(PENDING, "s1") is None


def test_localwhisks_record_of_a_rule_refused_at_the_concurrency_limit_is_read_as_a_refusal():
    """The real trigger code (localwhisk's controller) at a namespace with no free activation: the fire
    is answered 202 and the rule's action never runs; refused_rules finds the 429 in the record."""
    from lw_fakes import ECHO, call, make_controller, put_action

    from radcloud.arrivals.watch import refused_rules

    ns = "/api/v1/namespaces/_"
    for limit, refused in ((0, ["guest/route-arrivals"]), (30, [])):
        c = make_controller(max_concurrent=limit)
        try:
            put_action(c, "route", ECHO)
            call(c, "PUT", f"{ns}/triggers/{TRIGGER}", {})
            rule = {"trigger": f"/_/{TRIGGER}", "action": "/_/route"}
            assert call(c, "PUT", f"{ns}/rules/route-arrivals", rule).status == 200
            fired = call(c, "POST", f"{ns}/triggers/{TRIGGER}", {"arrival_id": "a" * 32})
            assert fired.status == 202, fired.body
            record = call(c, "GET", f"{ns}/activations/{fired.json()['activationId']}").json()
            assert refused_rules(record) == refused, record["logs"]
        finally:
            c.close()


def test_an_idle_system_routes_a_refused_arrival_at_its_due_time_not_at_the_next_alarm(world):
    """Issue 20: a route run refused as busy leaves the arrival pending, due after a backoff (2 s for
    the first refusal). Nothing else arrives and the reconcile alarm is minutes away: the watcher
    fires it again when it is due, the route run routes it, once. A re-fire no route run takes (lost)
    is not repeated before the route lease has passed."""
    from radcloud.arrivals import rules as R
    from radcloud.core.errors import TooManyRequests
    from radcloud.run.registry import Registry

    orthanc, redis, _, watcher, advance = world
    store = R.RuleStore(redis, Registry())
    store.save({"name": "ct", "match": {"modality": "CT"}, "pipeline": [{"plugin": "lung-seg"}]})
    retrieves, started, lost = [], [], [False]

    class Whisk:  # the namespace is busy for the first retrieve only
        def invoke(self, action, params, *, blocking=False, result=False):
            retrieves.append(params)
            if len(retrieves) == 1:
                raise TooManyRequests("OpenWhisk refused to invoke radcloud/retrieve (HTTP 429)")
            return {"retrieve_id": f"r{len(retrieves)}"}

    class Pipelines:
        def start(self, steps, inputs, owner, *, name="", job_id=None):
            started.append(job_id)
            return job_id

    def fire(payload):  # the trigger's rule: the route action on the same Redis
        if not lost[0]:
            R.route_arrival(payload, store, Whisk(), Pipelines(), clock=watcher.clock)
        return "activation"

    watcher.fire = fire
    orthanc.store("s1", "s1e", ["i1"])
    orthanc.change("StableStudy", "s1")
    assert watcher.poll() == 1 and started == [] and len(retrieves) == 1        # refused: pending
    [entry] = store.pending()
    assert entry["attempts"] == 1 and entry["next_at"] == watcher.clock() + 2
    advance(1.5)
    watcher.poll()
    assert len(retrieves) == 1                                                  # not due yet
    advance(0.5)
    assert watcher.poll() == 0 and watcher.redrive_due() == 0                    # routed in the first call
    assert len(retrieves) == 2 and len(started) == 1 and store.pending() == []
    assert [r["state"] for r in store.runs()] == ["started"]
    # A fire that no route run takes (lost on the way): fired once per due time, again after the lease.
    lost[0] = True
    orthanc.store("s2", "s2e", ["i2"])
    orthanc.change("StableStudy", "s2")
    watcher.poll()                                      # fired (expected: pending, due after the lease)
    advance(R.LEASE_S)
    assert watcher.redrive_due() == 1 and watcher.redrive_due() == 0
    advance(R.LEASE_S - 1)
    assert watcher.redrive_due() == 0
    advance(1)
    lost[0] = False
    assert watcher.redrive_due() == 1 and store.pending() == [] and len(started) == 2
