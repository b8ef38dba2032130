"""pfcon's wire format, without I/O: form parsing, ``cmd``, statuses, answers.

A ChRIS backend (CUBE) sends pfcon form-encoded bodies in which list fields
repeat (``entrypoint=python3&entrypoint=/usr/local/bin/app&args=--prefix&args=le``),
exactly what pfcon's ``parser_plugin`` (``pfcon/resources.py``) reads. The
parsers here accept the same fields, name every missing or malformed one in
a single 400 (pfcon bundles its errors the same way) and keep unknown
fields out. ``cmd`` is built as pfcon builds it, so CUBE shows the command
line it expects; radcloud runs the plugin from its own descriptor.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, ClassVar
from urllib.parse import parse_qs

from radcloud.api import validation as api
from radcloud.api.pfcon import (TYPES, CopyJobForm, DeleteJobForm, PluginJobForm, UploadJobForm,  # noqa: F401
                                form_values, storage_path, valid_jid)
from radcloud.core.errors import BadRequest
from radcloud.work.lifecycle import JOB_FINAL, SUCCEEDED

INCOMING = "/share/incoming"
OUTGOING = "/share/outgoing"
STATUSES = ("notStarted", "started", "finishedSuccessfully", "finishedWithError", "undefined")
ACTIVE = ("notStarted", "started")
FINISHED = ("finishedSuccessfully", "finishedWithError")
LOGS_TAIL_LINES = 1000  # pfcon's JOB_LOGS_TAIL default
LOGS_TAIL_CHARS = 16000
# radcloud job state -> pfcon status (pfcon/compute/abstractmgr.py JobStatus)
_STATE_TO_STATUS = {
    "created": "notStarted", "staging": "notStarted",
    "running": "started", "finishing": "started",
    # A final job: finishedSuccessfully only when it succeeded (radcloud.work.lifecycle).
    **{state: "finishedSuccessfully" if state == SUCCEEDED else "finishedWithError" for state in JOB_FINAL},
}


# -- bodies -------------------------------------------------------------------

def decode_body(body: str | None, content_type: str) -> dict[str, list[str]]:
    """The fields of a raw-http body as ``{name: [values...]}``.

    A raw web action gets a form body as text and a JSON body base64-encoded
    (openwhisk.md §2); both are accepted, as pfcon's reqparse accepts both
    for ``auth-token/``. A multipart body is pfcon's zip ("out-of-network")
    mode, which radcloud does not offer: 400 saying so.
    """
    media = (content_type or "").split(";")[0].strip().lower()
    if media.startswith("multipart/"):
        raise BadRequest("data_file uploads (pfcon's zipfile, out-of-network mode) are not supported: "
                         "radcloud runs in-network with storage_env s3 only; register the compute "
                         "resource with compute_innetwork=true", field="data_file")
    if not body:
        return {}
    text = body
    try:
        # Base64 when OpenWhisk encoded it (always for JSON). A real form body
        # is never valid base64 once it has '&' or an inner '='.
        decoded = base64.b64decode(body, validate=True).decode("utf-8")
        if "=" in decoded or decoded.lstrip().startswith("{"):
            text = decoded
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    if media == "application/json" or media.endswith("+json") or text.lstrip().startswith("{"):
        doc = api.json_object(text)
        return {str(k): [str(x) for x in v] if isinstance(v, list) else [str(v)]
                for k, v in doc.items() if v is not None}
    return parse_qs(text, keep_blank_values=True)


def query_fields(query: str | Mapping[str, Any] | None) -> dict[str, list[str]]:
    if not query:
        return {}
    if isinstance(query, Mapping):
        return {str(k): [str(v)] for k, v in query.items()}
    return parse_qs(query, keep_blank_values=True)


# -- requests -----------------------------------------------------------------

class _FromForm:
    """A job request read from CUBE's form by its model (radcloud.api.pfcon): every bad
    field named in one 400."""

    FORM: ClassVar[type]

    @classmethod
    def parse(cls, fields: Mapping[str, list[str]]) -> Any:
        return cls(**api.parse_all(cls.FORM, form_values(cls.FORM, fields)).model_dump())


@dataclasses.dataclass(frozen=True)
class PluginJob(_FromForm):
    """``POST pluginjobs/`` as pfcon's parser_plugin reads it.

    ``input_dirs`` is optional, as in pfcon: CUBE sends none for an fs plugin
    (an empty list puts no field on the wire), and in-network S3 mode never
    reads it here — the copy job staged the inputs under the jid.
    """

    jid: str
    entrypoint: list[str]
    args: list[str]
    args_path_flags: list[str]
    auid: str
    number_of_workers: int
    cpu_limit: int      # millicores
    memory_limit: int   # MiB
    gpu_limit: int
    image: str
    type: str
    env: list[str]
    input_dirs: list[str]
    output_dir: str
    FORM: ClassVar[type] = PluginJobForm

    @classmethod
    def parse(cls, fields: Mapping[str, list[str]]) -> "PluginJob":
        if "data_file" in fields:
            decode_body("x", "multipart/form-data")  # raises the zip-mode 400
        return super().parse(fields)

    def cmd(self) -> str:
        """pfcon's command line: entrypoint + args (path flags' values → /share/incoming)
        + [/share/incoming if ds] + /share/outgoing."""
        return " ".join(build_cmd(self.entrypoint, self.args, self.args_path_flags, self.type))

    def env_dict(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.env)


@dataclasses.dataclass(frozen=True)
class CopyJob(_FromForm):
    """``POST copyjobs/``: ``input_dirs`` defaults to none, as pfcon's parser_copy
    (``default=[]``): an fs plugin's copy job stages nothing."""

    jid: str
    input_dirs: list[str]
    output_dir: str
    cpu_limit: int = 1000
    memory_limit: int = 200
    FORM: ClassVar[type] = CopyJobForm


@dataclasses.dataclass(frozen=True)
class UploadJob(_FromForm):
    jid: str
    job_output_path: str
    FORM: ClassVar[type] = UploadJobForm


@dataclasses.dataclass(frozen=True)
class DeleteJob(_FromForm):
    jid: str
    FORM: ClassVar[type] = DeleteJobForm


def build_cmd(entrypoint: list[str], args: list[str], path_flags: list[str], plugin_type: str) -> list[str]:
    out = list(entrypoint)
    replace_next = False
    for arg in args:
        out.append(INCOMING if replace_next else arg)
        replace_next = arg in path_flags
    if plugin_type == "ds":
        out.append(INCOMING)
    out.append(OUTGOING)
    return out


def args_to_params(args: list[str], parameters: list[dict[str, Any]], plugin: str) -> dict[str, Any]:
    """Turn CUBE's serialised options back into radcloud params using the descriptor.

    ``store`` options take the next argument; ``store_true``/``store_false``
    flags stand alone. An unknown flag is a 400 naming it and the plugin.
    """
    by_flag: dict[str, dict[str, Any]] = {}
    for p in parameters:
        for flag in (p.get("flag"), p.get("short_flag")):
            if flag:
                by_flag.setdefault(flag, p)
    params: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        flag, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        spec = by_flag.get(flag)
        if spec is None:
            known = ", ".join(sorted(by_flag)) or "none"
            raise BadRequest(f"argument {arg!r} is not an option of plugin {plugin} (known: {known})",
                             field="args")
        action = spec.get("action", "store")
        if action == "store_true":
            params[spec["name"]] = True
        elif action == "store_false":
            params[spec["name"]] = False
        elif eq:
            params[spec["name"]] = inline
        else:
            if i + 1 >= len(args):
                raise BadRequest(f"option {flag} of plugin {plugin} needs a value", field="args")
            params[spec["name"]] = args[i + 1]
            i += 1
        i += 1
    return params


# -- answers ------------------------------------------------------------------

def status_of(state: str | None) -> str:
    """The pfcon status of a radcloud job state (``undefined`` when unknown or gone)."""
    return _STATE_TO_STATUS.get(state or "", "undefined")


def iso(ts: Any) -> str:
    """pfcon-style timestamp of an epoch (``''`` when there is none)."""
    try:
        value = float(ts)
    except (TypeError, ValueError):
        return ""
    if value <= 0:
        return ""
    return datetime.fromtimestamp(value, tz=timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")


def tail(text: str, lines: int = LOGS_TAIL_LINES, chars: int = LOGS_TAIL_CHARS) -> str:
    kept = "\n".join((text or "").splitlines()[-lines:])
    return kept[-chars:]


def compute(jid: str, *, image: str = "", cmd: str = "", status: str = "undefined", message: str = "",
            timestamp: str = "", logs: str = "") -> dict[str, Any]:
    """The ``compute`` object of every pfcon answer."""
    return {"jid": jid, "image": image, "cmd": cmd, "status": status, "message": message,
            "timestamp": timestamp, "logs": logs}
