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


class Demo:
    """One run of the demo: each step is a method, run in order by :func:`demo` (see :data:`PLAN`).

    What a step finds is kept for the later ones (the endpoints, the account,
    the API client, the study, the retrieve, the job). ``client`` makes an
    API client for ``(base, token)``; the CLI's Client unless a test passes one.
    """

    def __init__(self, root: Path, stack: Any, *, timeout: float,
                 client: Callable[..., Any] = Client) -> None:
        self.root, self.stack, self.timeout, self.client = root, stack, timeout, client
        self.endpoints: Any = None
        self.account: dict[str, str] = {}
        self.api: Any = None
        self.study = ""
        self.staged: dict[str, Any] = {}
        self.job: dict[str, Any] = {}
        self.manifest: dict[str, Any] = {}

    @property
    def base(self) -> str:
        return self.endpoints.whisk_url + WEB_PATH

    def names(self) -> dict[str, str]:
        """What the steps' titles name."""
        return {"user": self.account.get("user", DEMO_USER), "patient": DEMO_PATIENT, "plugin": PLUGIN}

    def start_stack(self) -> Any:
        from radcloud.ops.stack import DEFAULT_SERVICES

        self.endpoints = self.stack.up((*DEFAULT_SERVICES, "whisk"),
                                       progress=lambda s, e: err.print(f"      {s:<8} {e}"))
        return self.endpoints

    def seed(self) -> dict[str, Any]:
        from radcloud.ops.samples.seed import seed_orthanc

        with Progress("      {task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=err) as bar:
            task = bar.add_task("instances", total=None)
            return seed_orthanc(self.endpoints.settings(),
                                progress=lambda d, t: bar.update(task, completed=d, total=t))

    def deploy(self) -> str:
        return _deploy_if_changed(self.stack)

    def start_arrivals(self) -> Any:
        # After the deploy (its trigger radcloud-study-stable exists): studies sent to Orthanc from now on
        # are routed by the Automations page's rules, without a click (docs/triggers.md).
        return self.stack.up(("arrivals",))

    def make_account(self) -> dict[str, str]:
        self.account = _demo_user(self.stack)
        return self.account

    def login(self, reuse: bool = True) -> Any:
        """An API client with the demo's token: the one saved by the last run, else a fresh login."""
        from radcloud.ops.cli import data

        tokens = token_file({}, self.root)
        cached = load_token(tokens, self.base) if reuse else None
        if cached:  # the demo's own token from the last run (checked by the query below)
            self.api = self.client(self.base, cached)
            return self.api
        answer = data.do_login(self.client(self.base), self.account["user"], self.account["password"])
        save_token(tokens, self.base, answer["token"], int(answer["expires_in"]), answer["user"])
        self.api = self.client(self.base, answer["token"])
        return self.api

    def query(self) -> dict[str, Any]:
        """The demo patient's studies; a token refused (401) is replaced by a fresh login once."""
        body = {"level": "study", "PatientID": DEMO_PATIENT}
        try:
            found = self.api.call("query", method="POST", body=body)
        except ApiError as exc:
            if exc.status != 401:
                raise
            self.login(reuse=False)  # the cached token was revoked or signed by an old secret
            found = self.api.call("query", method="POST", body=body)
        if not found.get("items"):
            common.fail(f"patient {DEMO_PATIENT} not found in Orthanc; was the seed step skipped?")
        self.study = found["items"][0]["StudyInstanceUID"]
        return found

    def pull(self) -> dict[str, Any]:
        """The study staged in S3: the last run's retrieve while its record lives, else a new one."""
        from radcloud.ops.cli import data

        record = self.root / "demo.json"
        previous = self.stack.state.load_json(record) or {}
        if previous.get("study") == self.study:
            # Staged by an earlier run: reuse it while its record lives (retrieves expire).
            try:
                status = self.api.call("retrieve", params={"retrieve_id": previous["retrieve_id"]})
                if status["state"] == SUCCEEDED:
                    self.staged = {**status, "reused": True}
                    return self.staged
            except ApiError as exc:
                if exc.status != 404:
                    raise
        rid = self.api.call("retrieve", method="POST", body={"StudyInstanceUID": [self.study]})["retrieve_id"]
        status = data.watch_retrieve(self.api, rid, self.timeout)
        if status["state"] != SUCCEEDED:
            raise ApiError(0, "retrieve", f"retrieve {rid} ended {status['state']}")
        record.write_text(json.dumps({"study": self.study, "retrieve_id": rid}))
        self.staged = status
        return status

    def dispatch(self) -> dict[str, Any]:
        self.job = self.api.call("dispatch", method="POST",
                                 body={"plugin": PLUGIN, "inputs": {"retrieve": self.staged["retrieve_id"]}})
        return self.job

    def watch(self) -> dict[str, Any]:
        from radcloud.ops.cli import jobs

        final = jobs.watch_job(self.api, self.job["job_id"], self.timeout)
        if final.get("state") != SUCCEEDED:
            raise ApiError(0, "job", f"job {self.job['job_id']} ended {final.get('state')}: "
                                     f"{final.get('reason', '')}")
        return final

    def results(self) -> dict[str, Any]:
        self.manifest = self.api.call("results", path=self.job["job_id"])
        return self.manifest

    def ready(self, seconds: float) -> list[str]:
        """The closing lines: where the UI is, who to log in as, what to try next."""
        ui = f"{self.base}ui/"
        job_id = self.job["job_id"]
        return [f"\n[bold green]radcloud demo ready[/] in {seconds:.1f} s",
                f"  web UI:    {ui}",
                f"  user:      {self.account['user']} (role admin); password: the \"demo\" entry of "
                f"{self.stack.state.credentials} (mode 0600)",
                f"  the job:   radcloud status {job_id}; radcloud results {job_id} --download out/",
                f"  arrivals:  studies sent to Orthanc run the pipelines of the rules on {ui}automations "
                "(radcloud routes save RULE.json; docs/triggers.md)",
                f"  outputs:   {len(self.manifest.get('outputs') or [])}; stop everything: radcloud stack down"]


# The steps in order: (title, step, what its "done" line says of its result).
PLAN: tuple[tuple[str, Callable[[Demo], Any], Callable[[Demo, Any], str]], ...] = (
    ("start Orthanc, Redis, S3 and localwhisk", Demo.start_stack,
     lambda d, _e: ", ".join(f"{k} {v}" for k, v in d.stack.last_up.items())),
    ("seed sample studies into Orthanc", Demo.seed,
     lambda _d, r: f"{r['patients']} patients, {r['series']} series, {r['instances']} instances "
                   f"({r['uploaded']} uploaded, {r['already_stored']} already there)"),
    ("deploy deploy/manifest.yaml to localwhisk", Demo.deploy, lambda _d, r: str(r)),
    ("start the arrivals watcher", Demo.start_arrivals, lambda d, _e: d.stack.last_up.get("arrivals", "running")),
    ("demo admin account", Demo.make_account, lambda _d, a: a["user"]),
    ("log in as {user}", Demo.login, lambda _d, _r: ""),
    ("query patient {patient}", Demo.query, lambda _d, r: f"{r['total']} study(ies)"),
    ("pull the study into S3", Demo.pull,
     lambda _d, s: f"retrieve {s['retrieve_id']}: {s['series_total']} series, "
                   f"{s['instances_done']} instances, {s['bytes'] / 1e6:.1f} MB"
                   + (" (staged by an earlier run)" if s.get("reused") else "")),
    ("run {plugin}", Demo.dispatch,
     lambda _d, j: f"job {j['job_id']}" + (" (cached result)" if j.get("cached") else "")),
    ("watch the job until it ends", Demo.watch, lambda _d, j: f"{j['state']}"),
    ("list the results", Demo.results,
     lambda _d, m: f"{len(m.get('outputs') or [])} outputs, {m.get('bytes', 0) / 1e6:.1f} MB"),
)
STEPS = len(PLAN)


def run_plan(run: Demo, steps: Steps) -> None:
    """Every step of :data:`PLAN` in order, each with its progress line; a failed step ends the demo.

    A step is looked up on ``run`` by name, so a test's Demo can stand in for any of them.
    """
    for title, step, summary in PLAN:
        steps.run(title.format(**run.names()), getattr(run, step.__name__),
                  lambda result, summary=summary: summary(run, result))


def demo(state: Optional[Path] = STATE_OPTION,
         port_offset: Optional[int] = typer.Option(None, "--port-offset", help="as for `stack up` "
                                                   "(default: the ports recorded in the state dir, else 10000)"),
         timeout: float = typer.Option(300.0, "--timeout", help="seconds to wait for the pull and the job")) -> None:
    """Bring everything up on this machine and run one job end to end."""
    from radcloud.ops.stack import Ports, Stack

    root = common.state_dir(state)
    try:
        stack = Stack(root, Ports.standard(port_offset)) if port_offset is not None else Stack(root)
    except (RadcloudError, ValueError) as exc:
        common.fail(str(exc), common.USAGE)
    run, steps = Demo(root, stack, timeout=timeout), Steps()
    run_plan(run, steps)
    for line in run.ready(time.perf_counter() - steps.started):
        out.print(line, soft_wrap=True)
