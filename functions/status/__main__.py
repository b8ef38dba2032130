"""Action ``status``: watch, list, cancel and retry jobs.

Web routes (``__ow_path`` after ``status``), or ``op`` + ``job_id`` params
for direct invocation:

* ``GET /``                      list (``mine``, ``state``, ``limit``)       op=list
* ``GET /{job}``                 the job; ``wait=N&since=V`` may long-poll  op=get
  until its version exceeds V, when one of the namespace's few watch leases
  is free (radcloud.work.jobwatch); the answer's ``poll_after_ms`` says when to
  ask again
* ``GET /{job}/events``          event history (``after`` = stream id)       op=events
* ``POST /{job}/cancel``, ``DELETE /{job}``                                  op=cancel
* ``POST /{job}/retry``          rerun failed shards only (a pipeline: from   op=retry
  the step that failed, the steps that succeeded kept)

Reads never write: GET answers the job as it is. Units their executor lost
are failed with the reason by reconciliation — on the write side (cancel and
retry reconcile their job first) and by the admin ``reconcile`` action
(radcloud.work.reconcile).
"""

from radcloud.work import jobview, jobwatch
from radcloud.api import parse
from radcloud.api.models import StatusEvents, StatusList, StatusWatch
from radcloud.api.action import run
from radcloud.core.errors import BadRequest
from radcloud.work.jobservices import JobServices, store_errors
from radcloud.work import pipelines, reconcile


def _route(request):
    parts = [p for p in request.path.strip("/").split("/") if p]
    params = request.params
    job_id = params.get("job_id") or (parts[0] if parts else None)
    op = params.get("op")
    if not op:
        tail = parts[1] if len(parts) > 1 else ""
        if request.method == "delete":
            op = "cancel"
        elif tail in ("events", "cancel", "retry"):
            op = tail
        else:
            op = "get" if job_id else "list"
    if op not in ("list", "get", "events", "cancel", "retry"):
        raise BadRequest(f"unknown op {op!r}; use list, get, events, cancel or retry", field="op")
    if op != "list" and not job_id:
        raise BadRequest(f"op {op} needs a job_id", field="job_id")
    return op, job_id


def handle(request, settings, principal, services=None):
    with store_errors():
        return _handle(request, settings, principal, services)


def _handle(request, settings, principal, services):
    services = services or JobServices.from_settings(settings)
    op, job_id = _route(request)
    params = request.params
    jobs = services.jobs
    if op == "list":
        listing = parse(StatusList, params)
        mine = listing.mine or principal.role not in jobview.PRIVILEGED
        found = jobs.list(owner=principal.name if mine else None, state=listing.state or None,
                          limit=listing.limit)
        return {"jobs": [jobview.summary(j) for j in found]}
    job = jobview.check(jobs.get(job_id), principal)
    if op == "events":
        events = parse(StatusEvents, params)
        return {"job_id": job_id, "events": jobs.events(job_id, after=str(events.after), count=events.limit)}
    if op in ("cancel", "retry"):  # the write side: settle what its executor lost first
        reconcile.reconcile_job(jobs, job_id, services.executor_named, finaliser=services.finaliser,
                                pipelines=services.pipelines())
    if op == "cancel":
        from radcloud.work.dispatch import cancel_job

        cancel_job(jobs, job_id, services.executor_named, services.finaliser)  # Slurm: scancel
        for child in pipelines.running_jobs(jobs.get(job_id)):  # a pipeline: cancel its running step's job
            cancel_job(jobs, child, services.executor_named, services.finaliser)
        return jobview.public(jobs.get(job_id))
    if op == "retry":
        if job.get("kind") == pipelines.KIND:  # from the step that failed; the steps that succeeded are kept
            steps = services.pipelines().retry(job_id)
            return jobview.public(jobs.get(job_id)) | {"retried": steps}
        from radcloud.work.dispatch import shard_deadline_s

        shard_ids = jobs.reopen_failed(job_id, shard_deadline_s(job, settings.shard_timeout_s))
        services.dispatcher().fan_out(job_id, shard_ids)
        return jobview.public(jobs.get(job_id)) | {"retried": shard_ids}
    watch = parse(StatusWatch, params)
    wait = watch.wait
    since = (job["version"] if watch.since is None else watch.since) if wait > 0 else None
    job = jobwatch.watch(services, services.watch_budget(), job_id, since=since, wait_s=wait)
    return jobview.public(job)  # with poll_after_ms: when to ask again


def main(args):
    return run(args, handle)
