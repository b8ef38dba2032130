"""Action ``dispatch``: run a plugin over staged inputs; returns the job id at once.

POST ``{"plugin", "params", "inputs": {"retrieve"|"series"|"prefixes"}, "options":
{"shard_by", "shard_size", "priority", "deidentify", "push_to_pacs", "force"}}``
→ ``{"job_id", "state", "cached"}``. As the last step of the ``pull-and-run``
sequence it reads what retrieve answered (``retrieve_id``) and the run
request carried along as ``run`` (see sequences/pull-and-run.yaml).
"""

from radcloud.work import jobview
from radcloud.api import parse
from radcloud.api.models import DispatchRequest
from radcloud.api.action import run
from radcloud.work.dispatch import request_from_params
from radcloud.core.errors import BadRequest
from radcloud.work.jobservices import JobServices, store_errors


def handle(request, settings, principal, services=None):
    with store_errors():
        return _handle(request, settings, principal, services)


def _handle(request, settings, principal, services):
    if request.web and request.method != "post":
        raise BadRequest("send POST with {plugin, params, inputs, options}", field="method")
    services = services or JobServices.from_settings(settings, need_invoker=True)
    run_request = parse(DispatchRequest, request_from_params(request.params)).model_dump(exclude_none=True)
    return services.dispatcher().dispatch(run_request, owner=principal.name,
                                          privileged=principal.role in jobview.PRIVILEGED)


def main(args):
    return run(args, handle, roles=("clinician", "researcher", "admin", "service"))
