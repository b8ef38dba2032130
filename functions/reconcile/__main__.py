"""Action ``reconcile`` (admin only; not web-exported): never "running" forever.

Looks at every open job and retrieve (Redis indexes, so it is cheap) and
gives each unit its executor lost a final state with the reason: shards
whose deadline passed or whose activation ended without an outcome, series
whose retrieve-series activation ended without one, finalisers that went
silent; shards the executor was too busy to take are submitted again;
pipeline steps whose job ended while the word was lost get its outcome
(radcloud.work.reconcile, radcloud.work.pipelines). Arrivals the route action
left pending (refused as busy) are routed again (radcloud.arrivals.rules.redrive).
Reads (status, retrieve GET) never do this.

Runs at most once a second per namespace however often it is invoked; meant
to be fired by an alarm trigger (deploy/manifest.yaml). Answers the counts
of what it did.
"""

import dataclasses

from radcloud.api.action import run
from radcloud.arrivals.rules import RuleStore, redrive
from radcloud.run.registry import Registry
from radcloud.work.jobservices import JobServices, store_errors
from radcloud.work import reconcile
from radcloud.work.retrieves import Progress


def handle(request, settings, principal, services=None, retrieves=None, rules=None):
    with store_errors():
        services = services or JobServices.from_settings(settings, need_invoker=True)
        retrieves = retrieves or Progress.from_settings(settings)
        report = reconcile.sweep(jobs=services.jobs, retrieves=retrieves, executors=services.executor_named,
                                 retrieve_executor=services.executor_named("action"),
                                 finaliser=services.finaliser,
                                 resubmit=lambda job_id, ids: services.dispatcher().fan_out(job_id, ids),
                                 pipelines=services.pipelines())
        answer = dataclasses.asdict(report)
        if not report.skipped:  # the routing rules live in the jobs' Redis
            rules = rules or RuleStore(services.jobs.r, Registry())
            answer["arrivals_redriven"] = redrive(rules, services.invoker, services.pipelines(),
                                                  owner=principal.name, package=settings.ow_package)
        return answer


def main(args):
    return run(args, handle, roles=("admin",))
