"""The shapes of the main answers, as docs/openapi.yaml promises them to callers.

Actions build their answers with the domain's own code; these models are the
contract those answers keep: tests/unit/test_api_models.py checks them against
docs/openapi.yaml field by field, and the e2e schema test checks the live
answers against the document. Extra fields are allowed (an answer may grow).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from radcloud.access.users import ROLES

JobState = Literal["queued", "running", "finishing", "succeeded", "failed", "partial", "cancelled"]


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class User(Answer):
    name: str
    role: Literal[ROLES]  # type: ignore[valid-type]


class LoginAnswer(Answer):
    token: str
    expires_in: int = Field(description="seconds")
    user: User


class QueryAnswer(Answer):
    level: str
    source: str
    total: int
    truncated: bool
    offset: int
    limit: int
    items: list[dict[str, Any]]


class RetrieveStarted(Answer):
    retrieve_id: str
    state: str
    series: int
    instances: int | None = None
    skipped_derived: int | None = None


class SeriesProgress(Answer):
    SeriesInstanceUID: str
    series_key: str | None = None
    StudyInstanceUID: str | None = None
    state: str
    done: int
    total: int
    bytes: int | None = None
    errors: list[Any] | None = None
    reason: str | None = None


class RetrieveStatus(Answer):
    retrieve_id: str
    state: Literal["queued", "running", "succeeded", "failed", "partial"]
    series_total: int | None = None
    series_done: int | None = None
    instances_done: int | None = None
    instances_total: int | None = None
    bytes: int | None = None
    series: list[SeriesProgress]


class DispatchAnswer(Answer):
    job_id: str
    state: str
    cached: bool
    results_of: str | None = None
    shards: int | None = None


class StagedSeries(Answer):
    SeriesInstanceUID: str | None = None
    manifest: str | None = None
    SeriesNumber: str | None = None
    SeriesDescription: str | None = None
    Modality: str | None = None
    derived: bool | None = None
    instances: int | None = None
    bytes: int | None = None
    complete: bool | None = None


class StagedStudy(Answer):
    """One study of ``GET retrieve/staged`` (radcloud.store.staged.list_studies)."""

    StudyInstanceUID: str
    PatientName: str | None = None
    PatientID: str | None = None
    PatientBirthDate: str | None = None
    StudyDate: str | None = None
    StudyDescription: str | None = None
    AccessionNumber: str | None = None
    instances: int
    bytes: int
    staged_at: float | None = None
    age_s: int | None = None
    series: list[StagedSeries]


class StagedList(Answer):
    studies: list[StagedStudy]
    truncated: bool


class SubjectPatient(Answer):
    PatientName: str | None = None
    PatientID: str | None = None
    PatientBirthDate: str | None = None
    PatientSex: str | None = None


class SubjectStudy(Answer):
    StudyInstanceUID: str | None = None
    StudyDate: str | None = None
    StudyDescription: str | None = None
    AccessionNumber: str | None = None


class SubjectSeries(Answer):
    SeriesInstanceUID: str | None = None
    SeriesNumber: str | None = None
    SeriesDescription: str | None = None
    Modality: str | None = None


class Subject(Answer):
    """Whose images a job ran on (radcloud/work/subject.py): PHI, the owner's answers only."""

    patients: list[SubjectPatient] = []
    studies: list[SubjectStudy] = []
    series: list[SubjectSeries] = []
    series_total: int | None = None


class Job(Answer):
    id: str
    state: JobState
    plugin: str | None = None
    owner: str | None = None
    version: int | None = None
    poll_after_ms: int | None = None
    reason: str | None = None
    reason_plain: str | None = None   # radcloud.work.reasons.plain(reason): what the web UI shows
    created_at: float | None = None
    finished_at: float | None = None
    shard_timeout_s: int | None = None  # how long a shard, first run or retried, may stay open
    subject: Subject | None = None
    progress: dict[str, Any] | None = None
    shards: list[dict[str, Any]] | None = None
    kind: str | None = None       # "pipeline": a pipeline: its units are steps (radcloud.work.pipelines)
    results_of: str | None = None
    steps: list[dict[str, Any]] | None = None


class Output(Answer):
    name: str
    key: str
    size: int
    content_type: str | None = None
    md5: str | None = None
    shard: str | None = None
    url: str | None = None


class ResultManifest(Answer):
    job_id: str
    bytes: int | None = None
    outputs: list[Output]
    subject: Subject | None = None


class ViewerSource(Answer):
    SeriesInstanceUID: str | None = None
    StudyInstanceUID: str | None = None


class ViewerSegmentation(Answer):
    SeriesInstanceUID: str | None = None
    name: str | None = None
    url: str | None = None
    urls: list[str] | None = None   # every instance of the SEG series (url: the first)
    count: int | None = None


class ViewerMeasurement(Answer):
    segment: str | None = None
    name: str | None = None
    value: float | None = None
    unit: str | None = None


class ViewerOverlay(Answer):
    """The viewer's job and seg answers: a SEG's URL over its source series, and the SR's rows."""

    sources: list[str] = []
    source: ViewerSource | None
    segmentation: ViewerSegmentation | None
    measurements: list[ViewerMeasurement]
    url_ttl_s: int | None = None
