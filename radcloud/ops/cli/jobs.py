"""``radcloud run | status | results | plugins``: jobs over HTTP, as the web UI runs them.

``run`` posts to ``dispatch``; ``status --watch`` long-polls ``status/{job}``
(``wait=`` + ``since=``, the action wakes within milliseconds of a change);
``results --download`` fetches presigned URLs and checks every file's MD5
against the result manifest.
"""

from __future__ import annotations

import random
import time
from pathlib import Path, PurePosixPath
from typing import Any, Optional

import typer
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TransferSpeedColumn)
from rich.table import Table

from radcloud.ops.cli import common
from radcloud.ops.cli.client import ApiError, Client
from radcloud.ops.cli.common import API_OPTION, JSON_OPTION, STATE_OPTION, err, out
from radcloud.work.lifecycle import JOB_FINAL, SHARD_FINAL, SUCCEEDED

WAIT_S = 20  # per long-poll, when the server has a watch lease free (radcloud.work.jobwatch)

plugins_app = typer.Typer(no_args_is_help=True, help="The plugins radcloud can run.")


def run(
    plugin: str = typer.Argument(..., help="plugin name (see `radcloud plugins list`)"),
    param: list[str] = typer.Option([], "--param", "-P", help="plugin parameter NAME=VALUE (repeatable)"),
    retrieve: Optional[str] = typer.Option(None, "--retrieve", help="inputs: a retrieve id from `pull`"),
    series: list[str] = typer.Option([], "--series", help="inputs: staged SeriesInstanceUID (repeatable)"),
    shard_by: Optional[str] = typer.Option(None, "--shard-by", help="series (default) or instances"),
    shard_size: Optional[int] = typer.Option(None, "--shard-size", help="instances per shard"),
    push_to_pacs: bool = typer.Option(False, "--push-to-pacs", help="store DICOM outputs as a derived series"),
    force: bool = typer.Option(False, "--force", help="recompute even if the result is cached"),
    executor: Optional[str] = typer.Option(None, "--executor", help="action or slurm (default: slurm for "
                                           "plugins bigger than an action when a cluster is configured)"),
    watch: bool = typer.Option(False, "--watch", help="wait for the job to end (exit 3 unless it succeeds)"),
    timeout: float = typer.Option(600.0, "--timeout", help="with --watch: seconds to wait"),
    api: Optional[str] = API_OPTION, state: Optional[Path] = STATE_OPTION, as_json: bool = JSON_OPTION,
) -> None:
    """Run a plugin over staged inputs; prints the job id (cached results answer at once)."""
    if bool(retrieve) == bool(series):
        common.fail("inputs: pass exactly one of --retrieve RID or --series UID...", common.USAGE)
    options: dict[str, Any] = {"push_to_pacs": push_to_pacs, "force": force}
    if shard_by:
        options["shard_by"] = shard_by
    if shard_size:
        options["shard_size"] = shard_size
    if executor:
        options["executor"] = executor
    body = {"plugin": plugin, "params": common.parse_params(param),
            "inputs": {"retrieve": retrieve} if retrieve else {"series": list(series)}, "options": options}
    client = common.client(api, state)
    answer = common.guarded(lambda: client.call("dispatch", method="POST", body=body))
    if not watch:
        if as_json:
            common.emit_json(answer)
        else:
            cached = f" (cached: results of {answer.get('results_of')})" if answer.get("cached") else ""
            out.print(f"{answer['job_id']}{cached}")
        return
    job = common.guarded(lambda: watch_job(client, answer["job_id"], timeout, show=not as_json))
    _finish_watch(job, as_json)


def watch_job(client: Client, job_id: str, timeout_s: float, *, show: bool = True,
              sleep: Any = time.sleep) -> dict[str, Any]:
    """Follow the job until it is final or ``timeout_s`` passes; a bar of shards done.

    Each call offers to long-poll; between calls the CLI waits what the
    answer's ``poll_after_ms`` says (jittered), so many watchers stay cheap.
    """
    deadline = time.monotonic() + timeout_s
    job = client.call("status", path=job_id)
    said: set[str] = set()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, disable=not show) as bars:
        task = bars.add_task(f"job {job_id}", total=None)
        while True:
            p = job.get("progress") or {}
            bars.update(task, completed=p.get("shards_done", 0), total=p.get("shards_total") or None,
                        description=f"job {job_id} {job.get('state')}")
            for note in shard_notes(job):  # once each: where a shard runs, why it waits, a requeue
                if show and note not in said:
                    said.add(note)
                    bars.console.print(note, markup=False, soft_wrap=True)
            left = deadline - time.monotonic()
            if job.get("state") in JOB_FINAL or left <= 0:
                return job
            pause = min(left, pause_s(job))
            if pause > 0:
                sleep(pause)
            wait = max(1, min(WAIT_S, int(deadline - time.monotonic())))
            job = client.call("status", path=job_id, params={"wait": wait, "since": job.get("version", 0)})


def pause_s(answer: dict[str, Any]) -> float:
    """The server's ``poll_after_ms`` in seconds, jittered ±20% so watchers do not move in step."""
    return max(0.0, float(answer.get("poll_after_ms") or 0) / 1000 * random.uniform(0.8, 1.2))


def _finish_watch(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        common.emit_json(job)
    else:
        p = job.get("progress") or {}
        reason = f": {job['reason']}" if job.get("reason") else ""
        out.print(f"job {job.get('id') or job.get('job_id')} {job.get('state')}{reason} "
                  f"({p.get('shards_done', 0)}/{p.get('shards_total', 0)} shards)")
        for note in shard_notes(job, open_only=False):
            out.print(note, markup=False, soft_wrap=True)
    if job.get("state") not in JOB_FINAL:
        raise typer.Exit(common.TIMEOUT)
    if job.get("state") != SUCCEEDED:
        raise typer.Exit(common.NOT_SUCCEEDED)


def status(
    job_id: Optional[str] = typer.Argument(None, help="a job id; without it, list recent jobs"),
    watch: bool = typer.Option(False, "--watch", "-w", help="follow until final (exit 3 unless succeeded)"),
    timeout: float = typer.Option(600.0, "--timeout", help="with --watch: seconds to wait"),
    state_filter: Optional[str] = typer.Option(None, "--state", help="list: only jobs in this state"),
    limit: int = typer.Option(20, "--limit", min=1, max=500),
    api: Optional[str] = API_OPTION, state: Optional[Path] = STATE_OPTION, as_json: bool = JSON_OPTION,
) -> None:
    """A job's state and shards, or the recent jobs; --watch follows it to the end."""
    client = common.client(api, state)
    if job_id is None:
        jobs = common.guarded(lambda: client.call("status", params={"state": state_filter, "limit": limit}))
        if as_json:
            common.emit_json(jobs)
            return
        table = Table("job", "plugin", "state", "shards", "owner", "created", header_style="bold")
        for j in jobs.get("jobs") or []:
            p = j.get("progress") or {}
            table.add_row(str(j.get("id")), str(j.get("plugin")), str(j.get("state")),
                          f"{p.get('shards_done', 0)}/{p.get('shards_total', 0)}", str(j.get("owner", "")),
                          time.strftime("%Y-%m-%d %H:%M", time.localtime(float(j.get("created_at") or 0))))
        out.print(table)
        return
    if watch:
        job = common.guarded(lambda: watch_job(client, job_id, timeout, show=not as_json))
        _finish_watch(job, as_json)
        return
    job = common.guarded(lambda: client.call("status", path=job_id))
    if as_json:
        common.emit_json(job)
        return
    p = job.get("progress") or {}
    out.print(f"job {job_id}: {job.get('state')}  plugin {job.get('plugin')}  "
              f"shards {p.get('shards_done', 0)}/{p.get('shards_total', 0)}  "
              f"instances {p.get('instances_done', 0)}/{p.get('instances_total', 0)}")
    if job.get("reason"):
        out.print(f"reason: {job['reason']}")
    routed = (job.get("options") or {}).get("routed")
    if routed:
        out.print(f"executor: {(job.get('options') or {}).get('executor')} ({routed})")
    if job.get("steps") is not None:  # a pipeline: its steps, each run by a job of its own
        table = Table("step", "plugin", "state", "job", "reason", header_style="bold")
        for s in job["steps"]:
            table.add_row(str(s["step"]), s["plugin"], s["state"] + (" (cached)" if s.get("cached") else ""),
                          s.get("job") or "", s.get("reason") or "")
        out.print(table)
        return
    table = Table("shard", "state", "executor", "exit", "reason", header_style="bold")
    for s in job.get("shards") or []:
        shard_state = str(s.get("state"))
        if s.get("warnings"):  # succeeded with warnings: some input files were not processed
            shard_state += f" ({s['warnings']} file warning(s))"
        if s.get("phase_plain"):  # running: "fetching 5 inputs", then "running the plugin"
            shard_state += f": {s['phase_plain']}"
        reason = str(s.get("reason") or s.get("queue_reason") or "")
        table.add_row(str(s.get("id")), shard_state, executor_label(s), str(s.get("exit_code", "")), reason)
    out.print(table)
    for note in shard_notes(job, open_only=False):
        out.print(note, markup=False, soft_wrap=True)


def retry(job_id: str = typer.Argument(..., help="a failed or partial job, or a failed pipeline"),
          api: Optional[str] = API_OPTION, state: Optional[Path] = STATE_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Run a job's failed shards again; a pipeline restarts from the step that failed (the steps that
    succeeded are kept). Refused (409) for a job that is not failed, naming its state."""
    job = _post_job_op(job_id, "retry", api, state, as_json)
    if job is None:
        return
    what = "step(s)" if job.get("steps") is not None else "shard(s)"
    out.print(f"job {job_id}: {job.get('state')}; {what} started again: {', '.join(job.get('retried') or [])}; "
              f"radcloud status {job_id} --watch follows it")


def cancel(job_id: str = typer.Argument(..., help="a job that has not ended (a pipeline cancels its running step)"),
           api: Optional[str] = API_OPTION, state: Optional[Path] = STATE_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Cancel a job wherever its shards run: those not started end at once, running ones stop at their
    next check of the cancel flag, and a shard's Slurm job is scancelled. Refused (409) for a job that
    has ended, naming its state."""
    job = _post_job_op(job_id, "cancel", api, state, as_json)
    if job is None:
        return
    follow = "" if job.get("state") in JOB_FINAL else f"; radcloud status {job_id} --watch follows it to its end"
    out.print(f"job {job_id}: {job.get('state')}, cancel requested{follow}")
    for note in shard_notes(job, open_only=False):
        out.print(note, markup=False, soft_wrap=True)


def _post_job_op(job_id: str, op: str, api: str | None, state: Path | None, as_json: bool) -> dict[str, Any] | None:
    """POST the status action's ``{job}/{op}`` (retry, cancel); with --json its answer is printed and
    None returned, else the job it answers."""
    client = common.client(api, state)
    job = common.guarded(lambda: client.call("status", method="POST", path=f"{job_id}/{op}", body={}))
    if as_json:
        common.emit_json(job)
        return None
    return job


def shard_notes(job: dict[str, Any], *, open_only: bool = True) -> list[str]:
    """One line per shard that waits on Slurm or is not on its first attempt, as the job page says it:
    "s000: slurm job 42, requeued by Slurm, attempt 2" or "s000: slurm job 42, queued: waiting for
    resources". ``open_only``: only shards not ended (what --watch follows)."""
    from radcloud.work.jobview import wait_and_attempt_words  # late: it pulls in the whole job model

    notes = []
    for s in job.get("shards") or []:
        if open_only and s.get("state") in SHARD_FINAL:
            continue
        words = wait_and_attempt_words(s)
        if words:
            notes.append(f"{s.get('id')}: " + ", ".join(w for w in (executor_label(s), *words) if w))
    return notes


def executor_label(shard: dict[str, Any]) -> str:
    """Which executor ran a shard and its id there: "slurm job 42", "action 3f2a…"."""
    name, handle = shard.get("executor") or "", str(shard.get("activation_id") or "")
    if not name:
        return ""
    if name == "slurm":
        return f"slurm job {handle}" if handle else "slurm"
    return f"{name} {handle[:12]}" if handle else name


def results(
    job_id: str = typer.Argument(..., help="a job id"),
    download: Optional[Path] = typer.Option(None, "--download", "-d", help="download every output into DIR"),
    api: Optional[str] = API_OPTION, state: Optional[Path] = STATE_OPTION, as_json: bool = JSON_OPTION,
) -> None:
    """List a job's outputs; --download DIR fetches them and verifies each MD5."""
    client = common.client(api, state)
    manifest = common.guarded(lambda: client.call("results", path=job_id, params={"urls": bool(download)}))
    outputs = manifest.get("outputs") or []
    if download is None:
        if as_json:
            common.emit_json(manifest)
            return
        table = Table("name", "type", "bytes", "shard", header_style="bold")
        for o in outputs:
            table.add_row(o["name"], o.get("content_type", ""), str(o.get("size", "")), o.get("shard", ""))
        out.print(table)
        err.print(f"{len(outputs)} output(s), {manifest.get('bytes', 0) / 1e6:.1f} MB")
        return
    report = common.guarded(lambda: download_all(client, outputs, download, show=not as_json))
    if as_json:
        common.emit_json(report)
    else:
        out.print(f"downloaded {report['files']} file(s), {report['bytes'] / 1e6:.1f} MB into {download}, "
                  "every MD5 verified")


def download_all(client: Client, outputs: list[dict[str, Any]], dest: Path, *, show: bool = True) -> dict[str, Any]:
    """Download every output under ``dest/<name>``; raises ApiError on an MD5 mismatch."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    total = sum(int(o.get("size") or 0) for o in outputs)
    done_bytes = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=err, disable=not show) as bars:
        task = bars.add_task(f"{len(outputs)} files", total=total or None)
        for o in outputs:
            target = (root / PurePosixPath(o["name"])).resolve()
            if root not in target.parents:  # a name like ../x must not escape DIR
                raise ApiError(0, "download", f"refusing output name {o['name']!r} outside {dest}")
            target.parent.mkdir(parents=True, exist_ok=True)
            size, md5 = client.download(o["url"], target, on_bytes=lambda n: bars.advance(task, n))
            if o.get("md5") and md5 != o["md5"]:
                raise ApiError(0, "md5", f"{o['name']}: MD5 {md5} differs from the manifest's {o['md5']}; "
                               "download again")
            done_bytes += size
    return {"files": len(outputs), "bytes": done_bytes, "dir": str(dest), "md5_verified": True}


@plugins_app.command("list")
def plugins_list(api: Optional[str] = API_OPTION, state: Optional[Path] = STATE_OPTION,
                 as_json: bool = JSON_OPTION) -> None:
    """The deployed plugins (name, version, title)."""
    plugins = common.guarded(lambda: common.client(api, state).call("ui", path="plugins.json"))["plugins"]
    if as_json:
        common.emit_json(plugins)
        return
    table = Table("name", "version", "type", "title", header_style="bold")
    for p in plugins:
        table.add_row(p.get("name", ""), p.get("version", ""), p.get("type", ""), p.get("title", ""))
    out.print(table)


@plugins_app.command("show")
def plugins_show(name: str, api: Optional[str] = API_OPTION, state: Optional[Path] = STATE_OPTION,
                 as_json: bool = JSON_OPTION) -> None:
    """One plugin's description and parameters (the names `run --param` takes)."""
    plugins = common.guarded(lambda: common.client(api, state).call("ui", path="plugins.json"))["plugins"]
    found = next((p for p in plugins if p.get("name") == name), None)
    if found is None:
        common.fail(f"no plugin {name!r}; known: {', '.join(p['name'] for p in plugins)}", common.USAGE)
    if as_json:
        common.emit_json(found)
        return
    out.print(f"[bold]{found['name']}[/] {found.get('version', '')} — {found.get('title', '')}")
    if found.get("description"):
        out.print(found["description"])
    table = Table("parameter", "type", "default", "help", header_style="bold")
    for p in found.get("parameters") or []:
        table.add_row(p["name"], str(p.get("type")), str(p.get("default")), str(p.get("help") or ""))
    out.print(table)
