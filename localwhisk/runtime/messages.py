"""OpenWhisk's own wording for every way an activation can end, and the log line format.

The texts are OpenWhisk's (Messages in common/.../http/ErrorResponse.scala, the Go
actionloop proxy in openwhisk-runtime-go) so that a client or test written against
production sees the same strings locally.
"""

from __future__ import annotations

import json
import time

from localwhisk.runtime.model import APPLICATION_ERROR, DEVELOPER_ERROR, SUCCESS

SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"
MAX_RESULT_BYTES = 1024 * 1024

# Go proxy (initHandler.go / runHandler.go / executor.go).
INIT_TWICE = "Cannot initialize the action more than once."
NO_CODE = "Missing main/no code to execute."
NOT_DICT = "The action did not return a dictionary or array."
COMMAND_EXITED = "command exited"
INIT_EXITED = "Command exited abruptly during initialization."
# Invoker (Messages.scala).
MEMORY_EXHAUSTED = "The action exhausted its memory and was aborted."
RESOURCE_ERROR = "Failed to provision resources to run the action."
LOG_FAILURE = "There was an issue while collecting your logs. Data might be missing."

# OpenWhisk appends the first 1 MB of an oversized response to the error; keeping
# all of it would make the error itself too large to be useful, so keep a preview.
TRUNK_CHARS = 1024


def timed_out(timeout_ms: int, init: bool = False) -> str:
    tail = " during initialization." if init else "."
    return f"The action exceeded its time limits of {timeout_ms} milliseconds{tail}"


def truncated_response(length: int, trunk: str, max_length: int = MAX_RESULT_BYTES) -> str:
    return (
        f"The action produced a response that exceeded the allowed length: "
        f"{length} > {max_length} bytes. The truncated response was: {trunk}"
    )


def truncate_logs(limit_bytes: int) -> str:
    return f"Logs were truncated because the total bytes size exceeds the limit of {limit_bytes} bytes."


def image_unknown(image: str, known: list[str]) -> str:
    listed = ", ".join(sorted(known)) or "none"
    return (
        f"Failed to pull container image '{image}'. localwhisk runs docker actions without "
        f"Docker and has no local mapping for this image (mapped images: {listed})."
    )


def iso_ns(ts_ns: int) -> str:
    """ISO-8601 UTC with nanoseconds and 'Z', as Docker's json-file log driver writes."""
    secs, frac = divmod(ts_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def log_line(ts_ns: int, stream: str, text: str) -> str:
    return f"{iso_ns(ts_ns):<30} {stream}: {text}"


def classify_run(line: str) -> tuple[str, dict | list]:
    """What the proxy + invoker make of the launcher's fd-3 line (size already checked).

    The Go proxy answers 502 "did not return a dictionary or array" for anything that
    is not a JSON object/array; the invoker turns a top-level ``error`` into an
    application error whose result holds only that field (ActivationResult.scala).
    """
    try:
        value = json.loads(line)
    except ValueError:
        value = None
    if isinstance(value, list):
        return SUCCESS, value
    if not isinstance(value, dict):
        return DEVELOPER_ERROR, {"error": NOT_DICT}
    if "error" in value:
        return APPLICATION_ERROR, {"error": value["error"]}
    return SUCCESS, value
