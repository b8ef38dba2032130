"""pfcon's job requests as CUBE sends them, as models of the one validation layer.

CUBE posts form fields in which list fields repeat (``entrypoint=python3&
entrypoint=/usr/local/bin/app``), read by pfcon's ``parser_plugin`` and
``parser_copy`` (``pfcon/resources.py``). :func:`form_values` turns such a
form into what a model reads (the last value of a single field, every
non-empty value of a list field; an empty value is no value), and
:func:`radcloud.api.validation.parse_all` names every missing or malformed
field in one 400, as pfcon does. Unknown fields are kept out.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

TYPES = ("ds", "fs", "ts")
_JID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def storage_path(path: str) -> str:
    """A ChRIS storage path as an object prefix without slashes at the ends ('' = invalid)."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or any(ord(c) < 32 for c in path):
        return ""
    return "/".join(parts)


def valid_jid(jid: str) -> bool:
    return bool(_JID_RE.match(jid))


def _jid(value: str) -> str:
    if not _JID_RE.match(value):
        raise ValueError("use letters, digits, '.', '_' or '-' (at most 128)")
    return value


def _a_storage_path(value: str) -> str:
    if not storage_path(value):
        raise ValueError(f"{value!r} is not a storage path (no '..', not empty)")
    return value


# pfcon strips a leading slash from the jid.
Jid = Annotated[str, BeforeValidator(lambda v: v.lstrip("/") if isinstance(v, str) else v), AfterValidator(_jid)]
StoragePath = Annotated[str, AfterValidator(_a_storage_path)]


class Form(BaseModel):
    model_config = ConfigDict(extra="ignore")


def form_values(model: type[BaseModel], fields: Mapping[str, list[str]]) -> dict[str, Any]:
    """``{name: [values]}`` of a form → the values ``model`` reads."""
    values: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        given = [v for v in fields.get(name) or []]
        if typing.get_origin(info.annotation) is list:
            values[name] = [v for v in given if v != ""]
        elif given and given[-1] != "":
            values[name] = given[-1]
    return values


class PluginJobForm(Form):
    """``POST pluginjobs/``. ``input_dirs`` is optional, as in pfcon: CUBE sends none for
    an fs plugin (an empty list puts no field on the wire)."""

    jid: Jid
    entrypoint: list[str] = Field(min_length=1)
    args: list[str] = []
    args_path_flags: list[str] = []
    auid: str
    number_of_workers: int = Field(ge=1)
    cpu_limit: int = Field(ge=1, description="millicores")
    memory_limit: int = Field(ge=1, description="MiB")
    gpu_limit: int = Field(ge=0)
    image: str
    type: str
    env: list[str] = []
    input_dirs: list[str] = []
    output_dir: str

    @field_validator("args_path_flags")
    @classmethod
    def _split_flags(cls, values: list[str]) -> list[str]:
        # CUBE sends one field per flag; a comma-joined list is accepted too.
        return [f.strip() for v in values for f in v.split(",") if f.strip()]

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        if value not in TYPES:
            raise ValueError(f"{value!r} is not one of {', '.join(TYPES)}")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, values: list[str]) -> list[str]:
        for item in values:
            if "=" not in item:
                raise ValueError(f"{item!r} is not KEY=VALUE")
        return values


class CopyJobForm(Form):
    """``POST copyjobs/``: ``input_dirs`` defaults to none, as pfcon's parser_copy
    (``default=[]``): an fs plugin's copy job stages nothing."""

    jid: Jid
    input_dirs: list[StoragePath] = []
    output_dir: str = ""
    cpu_limit: int = Field(default=1000, ge=1)
    memory_limit: int = Field(default=200, ge=1)


class UploadJobForm(Form):
    jid: Jid
    job_output_path: StoragePath


class DeleteJobForm(Form):
    jid: Jid
