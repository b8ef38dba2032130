"""Web action ``shard_report``: where a shard running off-site (a Slurm job) reports.

The job authenticates with its shard ticket (``Authorization: Bearer``; role
``shard``, accepted here only) and POSTs ``{"events": [...], "get": [its
input keys], "put": [its output keys], "activation_id": its Slurm job id,
"restarts": its SLURM_RESTART_COUNT}``;
the answer is ``{"cancelled": bool, "get": {key: url}, "put": {key: url}}``.
The events go into the job model as an action's do, and the URLs are
presigned for the ticket's own keys only (radcloud.work.shardchannel).
"""

from radcloud.access import auth
from radcloud.api.action import run
from radcloud.core.errors import Unauthorized
from radcloud.work.jobservices import JobServices, store_errors
from radcloud.work.shardchannel import apply


def handle(request, settings, principal):
    ticket = auth.shard_ticket_claims(auth.bearer(request.headers), auth.signing_secrets(settings))
    if ticket is None or principal.name != ticket["sub"]:
        raise Unauthorized("send the shard ticket the Slurm executor gave this job")
    with store_errors():
        return apply(JobServices.from_settings(settings), ticket, request.params, ttl_s=settings.presign_ttl_s)


def main(args):
    return run(args, handle, roles=(auth.SHARD_ROLE,))
