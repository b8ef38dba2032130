"""Action ``dispatch``: run a plugin over staged inputs; returns the job id at once.

POST ``{"plugin", "params", "inputs": {"retrieve"|"series"|"prefixes"|"job"}, "options":
{"shard_by", "shard_size", "priority", "deidentify", "push_to_pacs", "force"}}``
→ ``{"job_id", "state", "cached"}``. With ``options.pipeline = {job, step}`` it
runs a pipeline's step and tells the pipeline which job runs it, or why none does. As the last step of the ``pull-and-run``
sequence it reads what retrieve answered (``retrieve_id``) and the run
request carried along as ``run`` (see sequences/pull-and-run.yaml).
"""

import contextlib

from radcloud.work import jobview
from radcloud.api import parse
from radcloud.api.models import DispatchRequest
from radcloud.api.action import run
from radcloud.work.dispatch import request_from_params
from radcloud.core.errors import BadRequest, Conflict, RadcloudError
from radcloud.work.jobservices import JobServices, store_errors
from radcloud.work import pipelines


def handle(request, settings, principal, services=None):
    with store_errors():
        return _handle(request, settings, principal, services)


def _handle(request, settings, principal, services):
    if request.web and request.method != "post":
        raise BadRequest("send POST with {plugin, params, inputs, options}", field="method")
    services = services or JobServices.from_settings(settings, need_invoker=True)
    run_request = parse(DispatchRequest, request_from_params(request.params)).model_dump(exclude_none=True)
    privileged = principal.role in jobview.PRIVILEGED
    link = pipelines.link_of(run_request)
    if link is None:
        return services.dispatcher().dispatch(run_request, owner=principal.name, privileged=privileged)
    # A pipeline's step: its outcome, whatever it is, goes to the pipeline (radcloud.work.pipelines).
    steps = services.pipelines()
    jobview.check(services.jobs.get(link[0]), principal)  # only a pipeline the caller may see
    try:
        answer = services.dispatcher().dispatch(run_request, owner=principal.name, privileged=privileged)
    except RadcloudError as exc:
        if isinstance(exc, Conflict) and exc.details.get("running"):  # its retrieve is still staging
            steps.waiting(*link, exc.message)
        else:
            steps.refused(*link, exc.message)
        raise
    if not steps.dispatched(*link, answer):  # the pipeline was cancelled meanwhile: stop its job too
        with contextlib.suppress(Conflict):
            if services.jobs.cancel(answer["job_id"]):
                services.finaliser(answer["job_id"])
    return answer


def main(args):
    return run(args, handle, roles=("clinician", "researcher", "admin", "service"))
