"""Action ``route`` (not web-exported): the rule of trigger ``radcloud-study-stable``.

Gets one arrival from the arrivals watcher (routing attributes and UIDs, see
radcloud/arrivals/watch.py), ignores an ``arrival_id`` it has seen, and starts the
pipeline of every enabled routing rule that matches: ``retrieve`` stages the
matched series, then the rule's pipeline runs on them as one tracked job whose
steps are plugin jobs (radcloud.work.pipelines). Answers ``{arrival_id,
duplicate, runs: [{rule, state, retrieve_id, pipeline | reason}], pending,
redriven}``; the runs are also kept for ``radcloud routes runs`` and the
Automations page. An arrival refused as busy stays pending (``pending`` says
why) and is routed again by a later route run (``redriven``: up to
REDRIVE due ones after each arrival it routed) or by reconcile.
"""

from radcloud.access import auth
from radcloud.api.action import run
from radcloud.work.jobservices import JobServices, store_errors
from radcloud.run.registry import Registry
from radcloud.arrivals.rules import RuleStore, redrive, route_arrival

REDRIVE = 2


def handle(request, settings, principal, store=None, services=None):
    settings.require("redis_url")
    with store_errors():
        store = store or RuleStore(auth.redis_client(settings), Registry())
        services = services or JobServices.from_settings(settings, need_invoker=True)
        pipelines = services.pipelines()
        answer = route_arrival(request.params, store, services.invoker, pipelines, owner=principal.name,
                               package=settings.ow_package)
        if not answer["duplicate"] and not answer.get("pending"):  # the namespace had room: catch up
            answer["redriven"] = redrive(store, services.invoker, pipelines, owner=principal.name,
                                         package=settings.ow_package, limit=REDRIVE)
        return answer


def main(args):
    return run(args, handle, roles=("admin", "service"))
