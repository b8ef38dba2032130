"""What each action accepts: one pydantic model per request, parsed by :func:`radcloud.api.parse`.

The models say the shape — field names, types, ranges, the choices of an
enumeration, which fields are required — and are what docs/openapi.yaml is
checked against (tests/unit/test_api_models.py). Rules that belong to the
domain stay there and run as the models' validators: the one UID rule
(:func:`radcloud.pacs.query.check_uid`), the DICOM matching grammar of a search
(:func:`radcloud.pacs.query.parse`), a plugin's own parameters (its descriptor).

Query-string requests (GET) arrive as strings, so numbers and booleans are
read leniently ("50", "true"); a JSON body's options are strict (``"yes"``
is not true).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr, \
    field_validator, model_validator

from radcloud.pacs import query as q

# A value or an OR-ed list of values (at most radcloud.pacs.query.MAX_LIST).
OneOrMany = str | Annotated[list[str], Field(max_length=q.MAX_LIST)]
# A query-string switch: absent or empty is off; true/false, 1/0, yes/no otherwise.
Flag = Annotated[bool, BeforeValidator(lambda v: False if v in ("", None) else v)]


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value
_ID = r"^[A-Za-z0-9_.\-]{1,64}$"  # a name used in keys and routes: modality, PACS, job and retrieve ids


class Model(BaseModel):
    """Unknown fields are refused by name (a typo is never silently ignored)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Open(BaseModel):
    """A request that arrives with fields other components added (sequences, the web layer)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


# ---- login -----------------------------------------------------------------------------------
class LoginRequest(Open):
    username: str = Field(min_length=1)
    password: str = Field(min_length=1, json_schema_extra={"format": "password"})


class LogoutRequest(Open):
    everywhere: Flag = False


# ---- query -----------------------------------------------------------------------------------
class Range(Model):
    """A date or time range, either end open: ``{"from": "20240101", "to": "20241231"}``."""

    from_: str | None = Field(default=None, alias="from")
    to: str | None = None


DateOrRange = str | Range


class PreviewRequest(Open):
    """``GET query/previews``: the study whose series thumbnails the search page shows."""

    StudyInstanceUID: StrictStr = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._+-]+$")


class QueryRequest(Model):
    """A search; the DICOM keyword fields are matched by :func:`radcloud.pacs.query.parse`."""

    model_config = ConfigDict(extra="forbid")
    level: Annotated[Literal["patient", "study", "series", "instance"], BeforeValidator(_lower)] = "study"
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=q.MAX_MATCHES)
    counts: bool = True
    recent: bool = Field(default=False, description="studies newest-received first: when Orthanc last received an "
                         "instance of each (its LastUpdate, answered as received_at), not their StudyDate; level "
                         "study, local Orthanc only")
    modality: str | None = Field(default=None, description="a remote PACS registered in Orthanc (C-FIND through it)")
    source: Literal["orthanc", "dicomweb"] = "orthanc"
    PatientID: OneOrMany | None = None
    PatientName: str | None = None
    PatientBirthDate: DateOrRange | None = None
    PatientSex: Annotated[Literal["F", "M", "O"] | None, BeforeValidator(_upper)] = None
    StudyInstanceUID: OneOrMany | None = None
    StudyDate: DateOrRange | None = None
    StudyTime: DateOrRange | None = None
    AccessionNumber: OneOrMany | None = None
    StudyDescription: str | None = None
    ModalitiesInStudy: OneOrMany | None = None
    SeriesInstanceUID: OneOrMany | None = None
    SeriesDate: DateOrRange | None = None
    SeriesDescription: str | None = None
    Modality: OneOrMany | None = None
    BodyPartExamined: str | None = None
    SOPInstanceUID: OneOrMany | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        # The message query users know, naming the DICOM keywords (not the controls).
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields and not str(key).startswith("_"):
                    from radcloud.core.errors import BadRequest

                    raise BadRequest(f"unknown query field {key!r}; known: {', '.join(sorted(q.FIELDS))}",
                                     field=key)
            return {k: v for k, v in data.items() if not str(k).startswith("_")}
        return data

    def to_query(self, max_limit: int) -> q.Query:
        """The validated search (the matching grammar and the deployment's limit applied)."""
        return q.parse(self.model_dump(exclude_unset=True, by_alias=True), max_limit=max_limit)


# ---- retrieve --------------------------------------------------------------------------------
class RetrieveRequest(Model):
    StudyInstanceUID: OneOrMany | None = None
    SeriesInstanceUID: OneOrMany | None = None
    orthanc_series: OneOrMany | None = None
    modality: str | None = None
    layout: Literal["uid", "chris"] = "uid"
    pacs_name: str | None = None
    include_derived: StrictBool = False

    @model_validator(mode="before")
    @classmethod
    def _private(cls, data: Any) -> Any:
        # ``_``-prefixed keys are the wrapper's (_principal, _client), not the caller's.
        return {k: v for k, v in data.items() if not str(k).startswith("_")} if isinstance(data, dict) else data


class QueryAnswerInput(Open):
    """A query's answer handed to retrieve (``query → retrieve``): its ``items`` name what to stage."""

    items: list[dict[str, Any]]
    level: str | None = None


class RetrieveStatusRequest(Open):
    retrieve_id: str = Field(pattern=r"^[A-Za-z0-9]{1,64}$")


class SeriesRef(Open):
    SeriesInstanceUID: str
    StudyInstanceUID: str | None = None
    orthanc_id: str | None = None
    total: int | None = None
    series_key: str | None = None

    @field_validator("SeriesInstanceUID")
    @classmethod
    def _uid(cls, value: str) -> str:
        q.check_uid("SeriesInstanceUID", value)  # the one UID rule (safe in object keys)
        return value


class RetrieveSeriesRequest(Open):
    """One ``retrieve-series`` hop (invoked by retrieve or by the previous hop)."""

    retrieve_id: str = Field(min_length=1, max_length=64)
    series: SeriesRef
    start: int = Field(default=0, ge=0)
    move_job: str | None = Field(default=None, max_length=64)
    move_started: float | None = None
    modality: str | None = None
    layout: str | None = None
    pacs_name: str | None = None

    @field_validator("move_job", "move_started", "layout", "pacs_name", "modality", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return value or None

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, value: Any) -> Any:
        return value or 0


# ---- dispatch --------------------------------------------------------------------------------
class PipelineLink(Model):
    """Which pipeline step a dispatch runs (the pipeline sets it; radcloud.work.pipelines)."""

    job: StrictStr = Field(pattern=_ID)
    step: StrictStr = Field(pattern=r"^s[0-9]{2}$")


class DispatchOptions(Model):
    """How a run is cut into shards and treated (a JSON body: strict types)."""

    shard_by: Literal["series", "instances"] = "series"
    shard_size: StrictInt = Field(default=100, ge=1, le=10000)
    priority: StrictInt = Field(default=0, ge=0, le=9, description="0 (normal) to 9 (most urgent)")
    deidentify: StrictBool = False
    push_to_pacs: StrictBool = False
    force: StrictBool = False
    include_derived: StrictBool = Field(
        default=False, description="run on series radcloud itself wrote into the PACS (results of earlier runs, "
        "recognised by radcloud's UID root); refused otherwise. A job's own outputs (inputs.job, how a pipeline "
        "step consumes the one before) are always allowed")
    wait_staged: StrictInt = Field(default=0, ge=0, le=55,
                                   description="seconds to wait for a running retrieve (pull-and-run sets it)")
    executor: Literal["action", "slurm"] | None = Field(
        default=None, description="where the plugin's shards run: an OpenWhisk action or a Slurm batch job "
        "(default: Slurm for plugins needing more than an action when a cluster is configured, else the "
        "deployment's executor)")

    pipeline: PipelineLink | None = Field(
        default=None, description="set by a pipeline (radcloud.work.pipelines) when it runs a step: the "
        "pipeline's job id and the step; the step takes this run's outcome")

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


class PipelineStepOptions(Model):
    """The dispatch options a pipeline step (a routing rule's) may set."""

    push_to_pacs: StrictBool = False
    deidentify: StrictBool = False
    priority: StrictInt = Field(default=0, ge=0, le=9, description="0 (normal) to 9 (most urgent)")
    executor: Literal["action", "slurm"] | None = None


class DispatchInputs(Model):
    """Exactly one kind of input: a retrieve id, series UIDs, object prefixes, or a finished job's
    DICOM outputs (how a pipeline's step feeds the next)."""

    retrieve: StrictStr | None = None
    series: list[StrictStr] | None = None
    prefixes: list[StrictStr] | None = None
    job: StrictStr | None = Field(default=None, pattern=_ID, description="a finished job whose DICOM outputs "
                                  "are the inputs (one series per shard of that job)")


class RunRequest(Open):
    """What to run, without its inputs: pull-and-run's ``run``, whose inputs its retrieve stages."""

    plugin: StrictStr = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: DispatchInputs | None = None
    options: DispatchOptions = Field(default_factory=DispatchOptions)

    @field_validator("params", "options", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value


class PullAndRun(Open):
    """pull-and-run's first step: its ``run`` is checked before anything is searched or pulled."""

    run: RunRequest


class DispatchRequest(RunRequest):
    """A run request; in pull-and-run it carries retrieve's answer beside it (ignored)."""

    inputs: DispatchInputs


# ---- status ----------------------------------------------------------------------------------
class StatusList(Open):
    mine: Flag = False
    state: Annotated[Literal["queued", "running", "finishing", "succeeded", "failed", "partial", "cancelled"] | None,
                     BeforeValidator(lambda v: v or None)] = None
    limit: int = Field(default=50, ge=1, le=500)


class StatusEvents(Open):
    after: str = "-"
    limit: int = Field(default=500, ge=1, le=2000)


class StatusWatch(Open):
    """``GET status/{job}``: ``wait`` seconds at most for a version newer than ``since``."""

    wait: float = Field(default=0, ge=0, le=3600)
    since: int | None = Field(default=None, ge=0)


# ---- results ---------------------------------------------------------------------------------
class ResultsRequest(Open):
    job_id: str | None = None
    op: Literal["manifest", "url", "thumbnail"] = "manifest"
    name: str | None = None
    names: str | None = None
    urls: Flag = False
    redirect: Flag = False


# ---- viewer ----------------------------------------------------------------------------------
class ViewerRequest(Open):
    kind: Literal["series", "study", "job", "seg"] | None = None
    uid: str | None = None
    series: str | None = None
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=1000, ge=1, le=1000)


# ---- audit -----------------------------------------------------------------------------------
class AuditRequest(Open):
    before: str | None = None
    limit: int = Field(default=50, ge=1, le=500)
    who: str | None = None
    action: str | None = None

    @field_validator("before", "who", "action", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return value or None


# ---- shard -----------------------------------------------------------------------------------
class ShardRequest(Open):
    """The part of a shard spec the action itself reads; :mod:`radcloud.run.shard` reads the rest."""

    job_id: StrictStr = Field(min_length=1)
