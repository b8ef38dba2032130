"""``radcloud login | query | pull``: find studies in the PACS and stage them, over HTTP.

Every command calls the same web actions the UI calls (``login``, ``query``,
``retrieve``) with the same request bodies; see docs/api.md.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from radcloud.ops.cli import common
from radcloud.ops.cli.client import ApiError, Client, resolve_api, save_token, token_file
from radcloud.ops.cli.common import API_OPTION, JSON_OPTION, STATE_OPTION, err, out
from radcloud.work.lifecycle import RETRIEVE_FINAL, SUCCEEDED

POLL_S = 0.3


def login(
    username: str = typer.Option(..., "--user", "-u", help="login name"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from stdin"),
    api: Optional[str] = API_OPTION, state: Optional[Path] = STATE_OPTION, as_json: bool = JSON_OPTION,
) -> None:
    """Log in; the token is cached (mode 0600) for the other commands."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else \
        os.environ.get("RADCLOUD_PASSWORD") or typer.prompt("password", hide_input=True)
    root = common.state_dir(state)
    try:
        base = resolve_api(api, dict(os.environ), root)
        answer = do_login(Client(base), username, password)
    except ApiError as exc:
        common.fail(exc)
    path = token_file(dict(os.environ), root)
    save_token(path, base, answer["token"], int(answer.get("expires_in", 3600)), answer.get("user") or {})
    if as_json:
        common.emit_json({"user": answer.get("user"), "expires_in": answer.get("expires_in"), "token_file": str(path)})
    else:
        user = answer.get("user") or {}
        out.print(f"logged in as {user.get('name')} ({user.get('role')}); token in {path}")


def do_login(client: Client, username: str, password: str) -> dict[str, Any]:
    return client.call("login", method="POST", body={"username": username, "password": password})


def query(
    patient_id: list[str] = typer.Option([], "--patient-id", "-p", help="MRN (repeatable: OR)"),
    patient_name: Optional[str] = typer.Option(None, "--patient-name", help="e.g. 'DOE^J*'"),
    study_date: Optional[str] = typer.Option(None, "--study-date", help="YYYYMMDD, or a range 20240101-20241231"),
    modality: list[str] = typer.Option([], "--modality", "-m", help="modality in the study (CT, MR...)"),
    accession: Optional[str] = typer.Option(None, "--accession"),
    description: Optional[str] = typer.Option(None, "--description", help="study description (wildcards)"),
    study_uid: list[str] = typer.Option([], "--study-uid", help="StudyInstanceUID (repeatable)"),
    level: str = typer.Option("study", "--level", help="patient, study, series or instance"),
    limit: int = typer.Option(50, "--limit", min=1, max=1000),
    remote: Optional[str] = typer.Option(None, "--remote", help="C-FIND this PACS (an Orthanc modality) instead"),
    api: Optional[str] = API_OPTION, state: Optional[Path] = STATE_OPTION, as_json: bool = JSON_OPTION,
) -> None:
    """Search the PACS; prints a table (--json for the full answer)."""
    body: dict[str, Any] = {"level": level, "limit": limit}
    fields = {"PatientID": patient_id, "PatientName": patient_name, "StudyDate": study_date,
              "ModalitiesInStudy": modality if level in ("patient", "study") else None,
              "Modality": modality if level in ("series", "instance") else None,
              "AccessionNumber": accession, "StudyDescription": description, "StudyInstanceUID": study_uid,
              "modality": remote}
    body.update({k: v for k, v in fields.items() if v})
    answer = common.guarded(lambda: common.client(api, state).call("query", method="POST", body=body))
    if as_json:
        common.emit_json(answer)
        return
    items = answer.get("items") or []
    columns = {
        "patient": (("PatientID", "patient id"), ("PatientName", "name"), ("PatientBirthDate", "born"),
                    ("PatientSex", "sex")),
        "study": (("PatientID", "patient id"), ("StudyDate", "date"), ("ModalitiesInStudy", "mod"),
                  ("StudyDescription", "description"), ("NumberOfStudyRelatedInstances", "images"),
                  ("StudyInstanceUID", "StudyInstanceUID")),
        "series": (("PatientID", "patient id"), ("Modality", "mod"), ("SeriesNumber", "#"),
                   ("SeriesDescription", "description"), ("NumberOfSeriesRelatedInstances", "images"),
                   ("SeriesInstanceUID", "SeriesInstanceUID")),
        "instance": (("InstanceNumber", "#"), ("SOPInstanceUID", "SOPInstanceUID")),
    }.get(level, ())
    table = Table(header_style="bold")
    for key, header in columns:
        # UIDs are what the next command takes: never cut, folded if they must wrap.
        table.add_column(header, overflow="fold", min_width=20 if key.endswith("UID") else None)
    for item in items:
        table.add_row(*(_cell(item.get(key)) for key, _ in columns))
    out.print(table)
    more = " (truncated: narrow the search or raise --limit)" if answer.get("truncated") else ""
    err.print(f"{len(items)} of {answer.get('total', len(items))} {level} match(es){more}")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def pull(
    study_uid: list[str] = typer.Argument(None, help="StudyInstanceUID(s) to stage"),
    series_uid: list[str] = typer.Option([], "--series", help="SeriesInstanceUID (repeatable)"),
    remote: Optional[str] = typer.Option(None, "--remote", help="C-MOVE from this PACS first"),
    include_derived: bool = typer.Option(False, "--include-derived",
                                         help="also pull radcloud's own result series of the studies"),
    timeout: float = typer.Option(600.0, "--timeout", help="seconds to wait for the staging"),
    no_wait: bool = typer.Option(False, "--no-wait", help="print the retrieve id and return"),
    api: Optional[str] = API_OPTION, state: Optional[Path] = STATE_OPTION, as_json: bool = JSON_OPTION,
) -> None:
    """Stage studies/series into object storage, with a progress bar per series."""
    if not study_uid and not series_uid:
        common.fail("which study? pass StudyInstanceUID(s) or --series UID", common.USAGE)
    body: dict[str, Any] = {}
    if study_uid:
        body["StudyInstanceUID"] = list(study_uid)
    if series_uid:
        body["SeriesInstanceUID"] = list(series_uid)
    if remote:
        body["modality"] = remote
    if include_derived:
        body["include_derived"] = True
    client = common.client(api, state)
    started = common.guarded(lambda: client.call("retrieve", method="POST", body=body))
    rid = started["retrieve_id"]
    if no_wait:
        common.emit_json(started) if as_json else out.print(rid)
        return
    status = common.guarded(lambda: watch_retrieve(client, rid, timeout, show=not as_json))
    if as_json:
        common.emit_json(status)
    else:
        out.print(f"retrieve {rid}: {status['state']}, {status['instances_done']}/{status['instances_total']} "
                  f"instances, {status['bytes'] / 1e6:.1f} MB staged")
    if status["state"] == "running":
        raise typer.Exit(common.TIMEOUT)
    if status["state"] != SUCCEEDED:
        for s in status["series"]:
            if s["state"] != SUCCEEDED:
                name = s.get("series_key") or s["SeriesInstanceUID"]  # the key tells UID-sharing series apart
                err.print(f"  series {name}: {s['state']} {s.get('reason', '')}")
        raise typer.Exit(common.NOT_SUCCEEDED)


def watch_retrieve(client: Client, rid: str, timeout_s: float, *, show: bool = True) -> dict[str, Any]:
    """Poll the retrieve until every series is final (or the timeout); one bar per series."""
    deadline = time.monotonic() + timeout_s
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, disable=not show, transient=False) as bars:
        tasks: dict[str, Any] = {}
        while True:
            status = client.call("retrieve", params={"retrieve_id": rid})
            for s in status["series"]:
                uid = s["SeriesInstanceUID"]
                if uid not in tasks:
                    tasks[uid] = bars.add_task(f"series …{uid[-12:]}", total=max(1, s["total"]))
                bars.update(tasks[uid], completed=s["done"], total=max(1, s["total"]),
                            description=f"series …{uid[-12:]} {s['state']}")
            if status["state"] in RETRIEVE_FINAL:
                return status
            if time.monotonic() > deadline:
                return {**status, "state": "running"}
            time.sleep(POLL_S)
