"""The local stack's one error type.

Every failure of ``radcloud stack`` (a missing binary, a taken port, a crashed
service, a wrong password) is a :class:`StackError` whose message is one
actionable line: it names the service, what was found and what to do.
"""

from __future__ import annotations

from radcloud.core.errors import Unavailable


class StackError(Unavailable):
    """The local stack cannot be installed, started, reached or stopped."""

    code = "stack"

    def __init__(self, message: str, *, service: str | None = None, log: str | None = None,
                 tail: str = "") -> None:
        super().__init__(message)
        self.service = service
        self.log = log
        # Last lines of the service's log: shown under the one-line message.
        self.tail = tail
