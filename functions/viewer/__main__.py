"""Action ``viewer``: what the web viewer opens, as presigned URLs (never pixels).

* ``GET /series/{SeriesInstanceUID}``  a staged series: UIDs, series tags
  and a page of presigned instance URLs (``offset``, ``limit`` ≤ 1000)
* ``GET /study/{StudyInstanceUID}``    the study's staged series, each with
  a presigned URL of its middle instance for the thumbnail strip
* ``GET /job/{job_id}[?series=UID]``   a job's DICOM SEG (a presigned URL)
  and its SR's measurements (rows), with the source series they belong to;
  a job without SEG: a page of its DICOM images (``offset``, ``limit``)
* ``GET /seg/{SeriesInstanceUID}``     a staged SEG series (e.g. pulled back
  from the PACS) the same way: its source series from its references, the
  measurements of the study's staged SRs that cite it

Every answer is written to the audit trail (who viewed which study and
series: :data:`radcloud.access.audit.AUDITED`). URLs expire after
``presign_ttl_s``. See :mod:`radcloud.results.viewer` for why URLs and not a proxy.
"""

from radcloud.work import jobview, subject
from radcloud.api.action import run
from radcloud.api import parse
from radcloud.api.models import ViewerRequest
from radcloud.core.errors import BadRequest
from radcloud.work.jobservices import JobServices, store_errors
from radcloud.store.staged import InputAccess
from radcloud.results.viewer import Viewer

_PRIVILEGED = ("admin", "service", "system")


def handle(request, settings, principal, services=None):
    with store_errors():
        services = services or JobServices.from_settings(settings)
        parts = [p for p in request.path.strip("/").split("/") if p]
        routed = {"kind": parts[0] if parts else None, "uid": parts[1] if len(parts) > 1 else None}
        req = parse(ViewerRequest, routed | {k: v for k, v in request.params.items() if v not in (None, "")})
        if not req.kind or not req.uid:
            raise BadRequest("what to open? GET /viewer/series/{SeriesInstanceUID}, /viewer/study/{StudyInstanceUID}, "
                             "/viewer/job/{job_id} or /viewer/seg/{SeriesInstanceUID}", field="kind")
        access = InputAccess(principal.name, privileged=principal.role in _PRIVILEGED,
                             job_owner=services.jobs.owner)
        viewer = Viewer(services.store, services.staging, services.presign_ttl_s, subject_of=subject.from_series)
        if req.kind == "series":
            return viewer.series(req.uid, access, offset=req.offset, limit=req.limit)
        if req.kind == "job":
            jobview.check(services.jobs.get(req.uid), principal)  # another user's job: 404, as results answers
            return viewer.job(services.results.manifest(req.uid), req.series, offset=req.offset, limit=req.limit)
        if req.kind == "seg":
            return viewer.seg(req.uid, access)
        return viewer.study(req.uid, access)


def main(args):
    return run(args, handle, roles=("clinician", "researcher", "admin"))
