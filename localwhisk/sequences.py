"""Sequences (CTRL/actions/SequenceActions.scala): create-time checks and execution.

A sequence is ``exec: {kind: "sequence", components: ["/ns/pkg/a", ...]}``.
At create time every component must exist, nested sequences are inlined to
count atomic actions (at most 50) and a sequence may not reach itself. At run
time components run one after the other in the sequence's worker thread: the
first gets the invoke payload, each next one the previous result merged over
its own defaults; a result with a top-level ``error`` stops the chain.
"""

from __future__ import annotations

from typing import Any, Callable

from localwhisk.activations import Invoker, Target, new_id, response_of
from localwhisk.errors import SEQ_COMPONENT_MISSING, SEQ_CYCLIC, SEQ_TOO_LONG, bad_request

MAX_LENGTH = 50

Lookup = Callable[[str, str | None, str], "Target | None"]


def parse_name(name: str, caller_ns: str) -> tuple[str, str | None, str]:
    """Resolve ``/ns/[pkg/]a``, ``ns/pkg/a``, ``pkg/a`` or ``a``; ``_`` is the caller's namespace."""
    parts = [p for p in name.strip().split("/") if p != ""]
    if name.startswith("/"):
        if len(parts) not in (2, 3):
            raise bad_request(f"The name '{name}' is not a valid fully qualified action name.")
        ns, rest = parts[0], parts[1:]
    elif len(parts) == 3:
        ns, rest = parts[0], parts[1:]
    elif len(parts) in (1, 2):
        ns, rest = caller_ns, parts
    else:
        raise bad_request(f"The name '{name}' is not a valid action name.")
    ns = caller_ns if ns == "_" else ns
    return (ns, rest[0], rest[1]) if len(rest) == 2 else (ns, None, rest[0])


def fqn(ns: str, pkg: str | None, name: str) -> str:
    return f"/{ns}/{pkg}/{name}" if pkg else f"/{ns}/{name}"


def check_components(components: list[str], caller_ns: str, self_fqn: str, lookup: Lookup) -> list[str]:
    """Validate a new sequence; return its components fully qualified.

    Raises WhiskError 400 for a missing component, a cycle, or more than 50 atomic actions.
    """
    resolved = [fqn(*parse_name(c, caller_ns)) for c in components]
    count = _count(resolved, caller_ns, self_fqn, lookup, depth=0)
    if count > MAX_LENGTH:
        raise bad_request(SEQ_TOO_LONG)
    return resolved


def _count(components: list[str], caller_ns: str, self_fqn: str, lookup: Lookup, depth: int) -> int:
    total = 0
    for c in components:
        if c == self_fqn:
            raise bad_request(SEQ_CYCLIC)
        target = lookup(*parse_name(c, caller_ns))
        if target is None:
            raise bad_request(SEQ_COMPONENT_MISSING)
        exec_ = target.action["exec"]
        if exec_["kind"] == "sequence":
            if depth > MAX_LENGTH:  # only a cycle not through self can get this deep
                raise bad_request(SEQ_CYCLIC)
            total += _count(exec_["components"], caller_ns, self_fqn, lookup, depth + 1)
        else:
            total += 1
        if total > MAX_LENGTH:
            raise bad_request(SEQ_TOO_LONG)
    return total


class SequenceRunner:
    """Plugs into :class:`Invoker` as its ``sequence_runner``; ``lookup`` finds components."""

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup

    def __call__(self, invoker: Invoker, caller_ns: str, target: Target, args: Any, aid: str, tid: str,
                 *, submitted: int, cause: str | None, topmost: bool, blocking: bool = True) -> dict[str, Any]:
        clock = invoker._clock
        start = clock()
        action = target.action
        annotations = []
        if topmost:
            annotations.append({"key": "topmost", "value": True})
        annotations += [
            {"key": "path", "value": target.path},
            {"key": "kind", "value": "sequence"},
            {"key": "limits", "value": dict(sorted(action["limits"].items()))},
            {"key": "waitTime", "value": max(0, start - submitted)},
        ]
        record: dict[str, Any] = {
            "namespace": caller_ns, "name": action["name"], "subject": caller_ns, "activationId": aid,
            "version": action["version"], "publish": False, "start": start, "end": 0, "duration": 0,
            "logs": [], "annotations": annotations,
        }
        if cause:
            record["cause"] = cause
            if not topmost:  # a nested sequence; a trigger's rule gives a cause without causedBy
                record["annotations"].append({"key": "causedBy", "value": "sequence"})
        record["response"] = response_of("whisk internal error", {"error": "The sequence did not complete."})
        invoker.store.put_activation(record, done=False)

        response, duration, value, steps = None, 0, args, 0
        for comp in action["exec"]["components"]:
            steps += 1
            if steps > MAX_LENGTH:
                response = response_of("application error", {"error": SEQ_TOO_LONG})
                break
            comp_target = self._lookup(*parse_name(comp, caller_ns))
            if comp_target is None:
                response = response_of("application error", {"error": SEQ_COMPONENT_MISSING})
                break
            comp_id = new_id()
            # OpenWhisk invokes each component blocking (SequenceActions waits for it).
            child = invoker.run(caller_ns, comp_target, value, comp_id, tid, submitted=clock(),
                                cause=aid, topmost=False, blocking=True)
            record["logs"].append(comp_id)
            duration += child["duration"]
            response = child["response"]
            result = response["result"]
            if response["status"] != "success" or (isinstance(result, dict) and "error" in result):
                break
            value = result
        end = clock()
        record.update(end=end, duration=duration, response=response)
        invoker.finish(record, blocking=blocking)
        return record
