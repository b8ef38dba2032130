"""``radcloud demo`` (``make demo``): the whole product on one machine, step by step.

stack up (+ localwhisk) → seed sample studies → deploy the manifest → a demo
admin account → log in → query a seeded patient → pull the study → run
dcm2png → watch it → list the results → print the web UI address.

Every step says what it does and how long it took; a second run is fast
because every step is idempotent (running services are left alone, seeded
instances are not re-sent, an unchanged deployment is skipped, staged series
are skipped and the dcm2png job is a cache hit). Errors are one line and a
non-zero exit (see radcloud/ops/cli/common.py for the codes).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from radcloud.ops.cli import common
from radcloud.ops.cli.client import WEB_PATH, ApiError, Client, load_token, save_token, token_file
from radcloud.ops.cli.common import STATE_OPTION, err, out
from radcloud.core.errors import RadcloudError
from radcloud.work.lifecycle import SUCCEEDED

DEMO_USER = "demo-admin"
DEMO_PATIENT = "RC100002"  # SMITH^JOHN: one MR brain study, 2 x 30 slices (quick to pull and convert)
PLUGIN = "dcm2png"
STEPS = 11


class Steps:
    """Numbered progress lines: ``[3/10] deploy ... done (0.8 s)``."""

    def __init__(self) -> None:
        self.n = 0
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}

    def run(self, title: str, fn: Callable[[], Any], summary: Callable[[Any], str] = lambda _r: "") -> Any:
        self.n += 1
        err.print(f"[bold][{self.n}/{STEPS}][/] {title} ...")
        t0 = time.perf_counter()
        try:
            result = fn()
        except (RadcloudError, ApiError) as exc:
            common.fail(f"step {self.n} ({title}) failed: {getattr(exc, 'message', exc)}", common.exit_code(exc))
        seconds = time.perf_counter() - t0
        self.timings[title] = round(seconds, 2)
        note = summary(result)
        err.print(f"      done in {seconds:.1f} s" + (f": {note}" if note else ""))
        return result


def _deployed_fingerprint(root: Path, images_file: Path) -> str:
    """What a deployment depends on: the manifest, every action's code, the image map."""
    digest = hashlib.sha256()
    for path in [root / "deploy" / "manifest.yaml", images_file,
                 *sorted(p for p in (root / "functions").rglob("*.py") if "__pycache__" not in p.parts)]:
        digest.update(str(path).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _deploy_if_changed(stack: Any) -> str:
    from radcloud.ops import deploy as deployer
    from radcloud.ops.cli.deploy import deploy_local

    record = stack.state.whisk_dir / "deployed.json"
    whisk_pid = stack._record("whisk").pid
    images = stack.state.whisk_dir / "images.json"
    fingerprint = _deployed_fingerprint(deployer.ROOT, images)
    previous = stack.state.load_json(record) or {}
    if previous.get("fingerprint") == fingerprint and previous.get("whisk_pid") == whisk_pid:
        return "unchanged, already deployed"
    report = deploy_local(stack.state.root)
    # localwhisk keeps its entities across restarts; the pid only guards against a wiped state dir.
    whisk_pid = stack._record("whisk").pid
    record.write_text(json.dumps({"fingerprint": _deployed_fingerprint(deployer.ROOT, images),
                                  "whisk_pid": whisk_pid}))
    return f"{len(report['actions'])} actions"


def _demo_user(stack: Any) -> dict[str, str]:
    """The demo admin in Redis, its generated password kept in credentials.json (0600)."""
    import redis

    from radcloud.access.users import UserStore

    entry = stack.state.credentials_data().get("demo")
    store = UserStore(redis.Redis.from_url(stack.endpoints().redis_url.reveal(), socket_connect_timeout=3))
    fresh = entry is None
    if fresh:
        entry = {"user": DEMO_USER, "password": secrets.token_urlsafe(15)}
        stack.state.remember_credential("demo", entry)
    if store.get(entry["user"]) is None:
        store.add(entry["user"], "admin", entry["password"])
    elif fresh:
        store.set_password(entry["user"], entry["password"])  # Redis kept a user whose password we lost
    return entry


def demo(state: Optional[Path] = STATE_OPTION,
         port_offset: Optional[int] = typer.Option(None, "--port-offset", help="as for `stack up` "
                                                   "(default: the ports recorded in the state dir, else 10000)"),
         timeout: float = typer.Option(300.0, "--timeout", help="seconds to wait for the pull and the job")) -> None:
    """Bring everything up on this machine and run one job end to end."""
    from radcloud.ops.cli import data, jobs
    from radcloud.ops.samples.seed import seed_orthanc
    from radcloud.ops.stack import DEFAULT_SERVICES, Ports, Stack

    root = common.state_dir(state)
    steps = Steps()
    try:
        stack = Stack(root, Ports.standard(port_offset)) if port_offset is not None else Stack(root)
    except (RadcloudError, ValueError) as exc:
        common.fail(str(exc), common.USAGE)

    def up() -> Any:
        return stack.up((*DEFAULT_SERVICES, "whisk"), progress=lambda s, e: err.print(f"      {s:<8} {e}"))

    endpoints = steps.run("start Orthanc, Redis, S3 and localwhisk", up,
                          lambda _e: ", ".join(f"{k} {v}" for k, v in stack.last_up.items()))

    def seed() -> dict:
        with Progress("      {task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=err) as bar:
            task = bar.add_task("instances", total=None)
            return seed_orthanc(endpoints.settings(), progress=lambda d, t: bar.update(task, completed=d, total=t))

    steps.run("seed sample studies into Orthanc", seed,
              lambda r: f"{r['patients']} patients, {r['series']} series, {r['instances']} instances "
                        f"({r['uploaded']} uploaded, {r['already_stored']} already there)")
    steps.run("deploy deploy/manifest.yaml to localwhisk", lambda: _deploy_if_changed(stack), str)
    # After the deploy (its trigger radcloud-study-stable exists): studies sent to Orthanc from now on
    # are routed by the Automations page's rules, without a click (docs/triggers.md).
    steps.run("start the arrivals watcher", lambda: stack.up(("arrivals",)),
              lambda _e: stack.last_up.get("arrivals", "running"))
    account = steps.run("demo admin account", lambda: _demo_user(stack), lambda a: a["user"])
    base = endpoints.whisk_url + WEB_PATH
    client = Client(base)

    tokens = token_file({}, root)

    def login(reuse: bool = True) -> Client:
        cached = load_token(tokens, base) if reuse else None
        if cached:  # the demo's own token from the last run (checked by the query below)
            return Client(base, cached)
        answer = data.do_login(client, account["user"], account["password"])
        save_token(tokens, base, answer["token"], int(answer["expires_in"]), answer["user"])
        return Client(base, answer["token"])

    api = steps.run(f"log in as {account['user']}", login)

    def query() -> dict:
        nonlocal api
        body = {"level": "study", "PatientID": DEMO_PATIENT}
        try:
            return api.call("query", method="POST", body=body)
        except ApiError as exc:
            if exc.status != 401:
                raise
            api = login(reuse=False)  # the cached token was revoked or signed by an old secret
            return api.call("query", method="POST", body=body)

    found = steps.run(f"query patient {DEMO_PATIENT}", query, lambda r: f"{r['total']} study(ies)")
    if not found.get("items"):
        common.fail(f"patient {DEMO_PATIENT} not found in Orthanc; was the seed step skipped?")
    study = found["items"][0]["StudyInstanceUID"]
    record = root / "demo.json"

    def pull() -> dict:
        previous = stack.state.load_json(record) or {}
        if previous.get("study") == study:
            # Staged by an earlier run: reuse it while its record lives (retrieves expire).
            try:
                status = api.call("retrieve", params={"retrieve_id": previous["retrieve_id"]})
                if status["state"] == SUCCEEDED:
                    return {**status, "reused": True}
            except ApiError as exc:
                if exc.status != 404:
                    raise
        rid = api.call("retrieve", method="POST", body={"StudyInstanceUID": [study]})["retrieve_id"]
        status = data.watch_retrieve(api, rid, timeout)
        if status["state"] != SUCCEEDED:
            raise ApiError(0, "retrieve", f"retrieve {rid} ended {status['state']}")
        record.write_text(json.dumps({"study": study, "retrieve_id": rid}))
        return status

    staged = steps.run("pull the study into S3", pull,
                       lambda s: f"retrieve {s['retrieve_id']}: {s['series_total']} series, "
                                 f"{s['instances_done']} instances, {s['bytes'] / 1e6:.1f} MB"
                                 + (" (staged by an earlier run)" if s.get("reused") else ""))
    job = steps.run(f"run {PLUGIN}",
                    lambda: api.call("dispatch", method="POST",
                                     body={"plugin": PLUGIN, "inputs": {"retrieve": staged["retrieve_id"]}}),
                    lambda j: f"job {j['job_id']}" + (" (cached result)" if j.get("cached") else ""))

    def watch() -> dict:
        final = jobs.watch_job(api, job["job_id"], timeout)
        if final.get("state") != SUCCEEDED:
            raise ApiError(0, "job", f"job {job['job_id']} ended {final.get('state')}: {final.get('reason', '')}")
        return final

    steps.run("watch the job until it ends", watch, lambda j: f"{j['state']}")
    manifest = steps.run("list the results", lambda: api.call("results", path=job["job_id"]),
                         lambda m: f"{len(m.get('outputs') or [])} outputs, {m.get('bytes', 0) / 1e6:.1f} MB")
    total = time.perf_counter() - steps.started
    ui = f"{endpoints.whisk_url}{WEB_PATH}ui/"
    for line in (f"\n[bold green]radcloud demo ready[/] in {total:.1f} s",
                 f"  web UI:    {ui}",
                 f"  user:      {account['user']} (role admin); password: the \"demo\" entry of "
                 f"{stack.state.credentials} (mode 0600)",
                 f"  the job:   radcloud status {job['job_id']}; radcloud results {job['job_id']} --download out/",
                 f"  arrivals:  studies sent to Orthanc run the pipelines of the rules on {ui}automations "
                 "(radcloud routes save RULE.json; docs/triggers.md)",
                 f"  outputs:   {len(manifest.get('outputs') or [])}; stop everything: radcloud stack down"):
        out.print(line, soft_wrap=True)
