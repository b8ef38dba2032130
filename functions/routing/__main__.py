"""Web action ``routing``: admins list, save, enable, disable and delete routing rules.

GET → ``{"rules": [...], "runs": [...], "pending": [...]}``: the latest runs the router started,
each with its pipeline's state and per-step status now (``step_states``), and the
arrivals not routed yet (refused as busy, or fired and not taken yet), with why and when next.
POST ``{"rule": {name, match, pipeline, enabled}}`` saves one (validated:
unknown plugin, bad parameter or match key → 400 naming the field);
POST ``{"name", "enabled": bool}`` enables or disables one at once;
POST ``{"delete": name}`` removes one; POST ``{"run": name, "inputs":
{retrieve | series | prefixes | job}}`` starts the rule's pipeline by hand on
those inputs (``{"run": {...}}``, recorded with the router's runs). Admin
only: a rule runs plugins on every study that arrives. Every change and
every start is audited.
"""

import time

from radcloud.access import audit, auth
from radcloud.api.action import run
from radcloud.core.errors import BadRequest
from radcloud.run.registry import Registry
from radcloud.api import parse
from radcloud.api.models import DispatchInputs
from radcloud.arrivals.rules import RuleStore, pending_view, run_by_hand, with_pipeline_state
from radcloud.work.jobservices import JobServices, store_errors


def handle(request, settings, principal, store=None, jobs=None, services=None):
    settings.require("redis_url")
    with store_errors():  # Redis down is a 503 naming it, not an anonymous 500
        return _handle(request, settings, principal, store, jobs, services)


def _handle(request, settings, principal, store, jobs, services):
    redis = auth.redis_client(settings)
    store = store or RuleStore(redis, Registry())
    params = request.params
    if request.method != "get" and "run" in params:
        inputs = parse(DispatchInputs, params.get("inputs") or {}).model_dump(exclude_none=True)
        if len(inputs) != 1:
            raise BadRequest("inputs must name exactly one of retrieve, series, prefixes or job", field="inputs")
        services = services or JobServices.from_settings(settings, need_invoker=True)
        started = run_by_hand(store, services.pipelines(), str(params["run"]), inputs, principal.name)
        audit.record(redis, principal, "routing", request, rule=started["rule"], pipeline=started["pipeline"])
        return {"run": started}
    if request.method == "get" or not any(k in params for k in ("rule", "delete", "enabled")):
        from radcloud.work.jobs import JobStore
        from radcloud.work.jobservices import jobs_redis

        jobs = jobs or JobStore(jobs_redis(settings))
        return {"rules": store.list(), "runs": with_pipeline_state(store.runs(), jobs),
                "pending": pending_view(store.pending(), time.time())}
    if "rule" in params:
        result = {"saved": store.save(params["rule"])}
    elif "delete" in params:
        result = {"deleted": store.delete(str(params["delete"]))}
    else:
        if not isinstance(params.get("enabled"), bool) or not isinstance(params.get("name"), str):
            raise BadRequest("send {name, enabled: true|false}", field="enabled")
        result = {"saved": store.set_enabled(params["name"], params["enabled"])}
    changed = next(iter(result.values()))
    audit.record(redis, principal, "routing", request, rule=changed["name"])  # who changed what runs
    return result


def main(args):
    return run(args, handle, roles=("admin",))
