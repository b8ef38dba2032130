"""Web action ``audit``: admins page through the audit trail, newest first.

GET/POST ``{"before"?, "limit"?, "who"?, "action"?}`` →
``{"entries": [...], "next": id|null, "total": n}``. Admin only: the trail
holds patient and study identifiers. Reading it is itself audited.

The trail lives in Redis (``redis_url``). Like every other action, one
deployed without its settings answers a config error naming the setting
(not ``internal``): an empty ``redis_url``, or the built-in default that no
Redis answers. A configured Redis that is down is 503.
"""

import redis as redis_lib

from radcloud.access import audit, auth
from radcloud.api.action import run
from radcloud.api import parse
from radcloud.api.models import AuditRequest
from radcloud.core.errors import ConfigError, Unavailable
from radcloud.core.settings import Settings

_SETTING = "redis_url (or RADCLOUD_REDIS_URL)"


def _unreachable(settings, exc):
    if settings.redis_url.reveal() == Settings.redis_url.reveal():  # the default: never configured
        return ConfigError(f"missing setting: {_SETTING}: the audit trail is kept in Redis and the "
                           f"default {Settings.redis_url.reveal()} does not answer; set it to the "
                           "Redis radcloud was deployed with", field="redis_url")
    return Unavailable(f"the audit trail's Redis (setting redis_url) cannot be reached "
                       f"({type(exc).__name__}); retry in a minute, or check that Redis is up",
                       field="redis_url")


def handle(request, settings, principal):
    settings.require("redis_url")
    req = parse(AuditRequest, request.params)
    redis = auth.redis_client(settings)
    try:
        result = audit.page(redis, before=req.before, limit=req.limit, who=req.who, action=req.action)
        audit.record(redis, principal, "read_audit", request)
    except (redis_lib.exceptions.ConnectionError, redis_lib.exceptions.TimeoutError) as exc:
        raise _unreachable(settings, exc) from None
    return result


def main(args):
    return run(args, handle, roles=("admin",))
