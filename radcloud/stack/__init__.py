"""The local stack radcloud runs against: Orthanc, Redis, SeaweedFS S3 and, optionally, localwhisk.

Started and stopped by the project itself (``radcloud stack up|down``) from
a state directory; see :class:`radcloud.stack.local.Stack`.
"""

from radcloud.stack.endpoints import Endpoints, OrthancEndpoint
from radcloud.stack.errors import StackError
from radcloud.stack.local import ALL_SERVICES, DEFAULT_SERVICES, Stack
from radcloud.stack.ports import Ports

__all__ = ["ALL_SERVICES", "DEFAULT_SERVICES", "Endpoints", "OrthancEndpoint", "Ports", "Stack",
           "StackError"]
