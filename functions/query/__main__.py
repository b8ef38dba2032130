"""Action ``query``: search the PACS (local Orthanc, a remote modality through it, or QIDO-RS).

GET or POST the search (DICOM keywords as field names, see radcloud/pacs/query.py):
``{"level": "study", "PatientID": ["MRN1", "MRN2"], "StudyDate": "20240101-",
"ModalitiesInStudy": "CT", "limit": 50, "offset": 0}``, plus ``modality`` to
C-FIND a remote PACS through Orthanc. Answers
``{level, source, total, truncated, offset, limit, items}``; every input is
validated before Orthanc is called. A ``run`` object is passed through
unchanged, so the ``pull-and-run`` sequence can carry its plugin request;
it is checked first (the plugin, its parameters, options, where it would
run), so a run dispatch would refuse pulls nothing.

GET ``query/previews?StudyInstanceUID=`` answers a small thumbnail of each
series of one study Orthanc holds (radcloud.pacs.preview), for the search
page; audited as ``query:previews``.
"""

from radcloud.pacs import preview, search
from radcloud.api import parse
from radcloud.api.models import PreviewRequest, PullAndRun, QueryRequest
from radcloud.api.action import run
from radcloud.pacs.orthanc import Orthanc

PASS_THROUGH = "run"


def handle(request, settings, principal, orthanc=None, checker=None):
    if getattr(request, "web", False) and request.path.strip("/") == "previews":
        return preview.study_previews(orthanc or Orthanc.from_settings(settings),
                                      parse(PreviewRequest, request.params).StudyInstanceUID)
    params = {k: v for k, v in request.params.items() if k != PASS_THROUGH}
    if PASS_THROUGH in request.params:  # pull-and-run: refuse what dispatch would refuse, before any pull
        check_run(parse(PullAndRun, {PASS_THROUGH: request.params[PASS_THROUGH]}).run, settings, checker)
    parsed = parse(QueryRequest, params).to_query(max_limit=settings.query_limit_max)
    answer = search.run(parsed, orthanc or Orthanc.from_settings(settings))
    if PASS_THROUGH in request.params:
        answer[PASS_THROUGH] = request.params[PASS_THROUGH]
    return answer


def check_run(run_request, settings, checker=None):
    from radcloud.work.dispatch import RunChecker

    (checker or RunChecker.from_settings(settings)).check(run_request.model_dump(exclude_none=True))


def main(args):
    return run(args, handle)
