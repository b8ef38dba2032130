"""Web action ``audit``: admins page through the audit trail, newest first.

GET/POST ``{"before"?, "limit"?, "who"?, "action"?}`` →
``{"entries": [...], "next": id|null, "total": n}``. Admin only: the trail
holds patient and study identifiers. Reading it is itself audited.
"""

from radcloud import audit, auth
from radcloud.action import run
from radcloud.errors import BadRequest


def _int(value, name):
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name}={value!r} is not an integer", field=name) from None


def handle(request, settings, principal):
    params = request.params
    redis = auth.redis_client(settings)
    result = audit.page(redis, before=params.get("before") or None,
                        limit=_int(params.get("limit", 50), "limit"),
                        who=params.get("who") or None, action=params.get("action") or None)
    audit.record(redis, principal, "read_audit", request)
    return result


def main(args):
    return run(args, handle, roles=("admin",))
