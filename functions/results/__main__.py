"""Action ``results``: what a finished job produced, and links to download it.

* ``GET /{job}``                     the result manifest (``urls=true``
  adds a presigned URL to every output; ``names=a,b`` to some)
* ``GET /{job}/url?name=N``          one output's presigned URL
  (``redirect=true`` answers 302 to it, for links and ``<img src>``)
* ``GET /{job}/thumbnail?name=N``    a thumbnail of an image output (made
  on first request), same ``redirect`` option

URLs expire after ``presign_ttl_s`` (short by default). A cached job
answers with the outputs of the job that computed them.
"""

from radcloud.work import jobview
from radcloud.api import parse
from radcloud.api.models import ResultsRequest
from radcloud.api.action import run
from radcloud.core.errors import BadRequest
from radcloud.work.jobservices import JobServices, store_errors


def _redirect(url):
    return {"statusCode": 302, "headers": {"Location": url, "Cache-Control": "no-store"}, "body": ""}


def handle(request, settings, principal, services=None):
    with store_errors():
        return _handle(request, settings, principal, services)


def _handle(request, settings, principal, services):
    services = services or JobServices.from_settings(settings)
    parts = [p for p in request.path.strip("/").split("/") if p]
    routed = {"job_id": parts[0] if parts else None, "op": parts[1] if len(parts) > 1 else "manifest"}
    req = parse(ResultsRequest, routed | {k: v for k, v in request.params.items() if v not in (None, "")})
    job_id, op, name = req.job_id, req.op, req.name
    if not job_id:
        raise BadRequest("which job? GET /results/{job_id}", field="job_id")
    jobview.check(services.jobs.get(job_id), principal)
    manifest = services.results.manifest(job_id)
    ttl = services.presign_ttl_s
    redirect = req.redirect
    if op == "manifest":
        if req.urls or req.names:
            wanted = [n for n in req.names.split(",") if n] if req.names else None
            return services.results.with_urls(manifest, ttl, wanted)
        return manifest
    if not name:
        raise BadRequest(f"{op} needs ?name= (an output name from the manifest)", field="name")
    if op == "url":
        out = services.results.output(manifest, name)
        url = services.store.presign_get(out["key"], ttl)
        return _redirect(url) if redirect and request.web else {**out, "url": url, "url_ttl_s": ttl}
    thumb = services.results.thumbnail(manifest, name, ttl)
    return _redirect(thumb["url"]) if redirect and request.web else thumb


def main(args):
    return run(args, handle)
