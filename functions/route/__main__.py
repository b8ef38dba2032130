"""Action ``route`` (not web-exported): the rule of trigger ``radcloud-study-stable``.

Gets one arrival from the arrivals watcher (routing attributes and UIDs, see
radcloud/arrivals/watch.py), ignores an ``arrival_id`` it has seen, and starts the
pipeline of every enabled routing rule that matches: ``retrieve`` stages the
matched series, ``dispatch`` runs the rule's plugin step on them as a tracked
job. Answers ``{arrival_id, duplicate, runs: [{rule, state, retrieve_id,
dispatch_activation | reason}]}``; the runs are also kept for ``radcloud routes runs``.
"""

from radcloud.access import auth
from radcloud.api.action import run
from radcloud.core.openwhisk import OpenWhisk
from radcloud.run.registry import Registry
from radcloud.arrivals.rules import RuleStore, route_arrival


def handle(request, settings, principal, store=None, invoker=None):
    settings.require("redis_url")
    store = store or RuleStore(auth.redis_client(settings), Registry())
    invoker = invoker or OpenWhisk.from_settings(settings)
    return route_arrival(request.params, store, invoker, package=settings.ow_package)


def main(args):
    return run(args, handle, roles=("admin", "service"))
