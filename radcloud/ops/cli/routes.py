"""``radcloud routes list|save|enable|disable|delete|runs``: routing rules (admins; the ``routing`` web action).

A rule sends every arriving study that matches it to a pipeline of plugin
steps (docs/triggers.md)::

    radcloud routes save ct-chest.json     # {"name", "match": {...}, "pipeline": [{"plugin", "params", "options"}]}
    radcloud routes disable ct-chest       # at once: the next arrival is not routed by it
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from radcloud.ops.cli import common
from radcloud.ops.cli.common import API_OPTION, JSON_OPTION, STATE_OPTION, out

app = typer.Typer(no_args_is_help=True, help="Routing rules: which arriving studies run which pipeline (admins).")


def _show(answer: dict, as_json: bool) -> None:
    if as_json:
        common.emit_json(answer)
    else:
        out.print(json.dumps(answer, indent=2))


@app.command("list")
def list_(api: Optional[str] = API_OPTION, state: Optional[Path] = STATE_OPTION,
          as_json: bool = JSON_OPTION) -> None:
    """The rules, in the order the router applies them."""
    answer = common.guarded(lambda: common.client(api, state).call("routing"))
    if as_json:
        common.emit_json(answer)
        return
    table = Table("rule", "enabled", "match", "pipeline", header_style="bold")
    for r in answer.get("rules") or []:
        table.add_row(r["name"], "yes" if r.get("enabled", True) else "no",
                      " ".join(f"{k}={v}" for k, v in (r.get("match") or {}).items()) or "(every series)",
                      " -> ".join(s["plugin"] for s in r.get("pipeline") or []))
    out.print(table)


@app.command()
def save(rule_file: Path = typer.Argument(..., help="a JSON file with one rule"),
         api: Optional[str] = API_OPTION, state: Optional[Path] = STATE_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Create or replace a rule (refused, naming the field, when a plugin or parameter is wrong)."""
    try:
        rule = json.loads(rule_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        common.fail(f"{rule_file}: cannot read a JSON rule ({exc})", 2)
    _show(common.guarded(lambda: common.client(api, state).call("routing", method="POST", body={"rule": rule})),
          as_json)


def _set(name: str, enabled: bool, api: Optional[str], state: Optional[Path], as_json: bool) -> None:
    body = {"name": name, "enabled": enabled}
    _show(common.guarded(lambda: common.client(api, state).call("routing", method="POST", body=body)), as_json)


@app.command()
def enable(name: str, api: Optional[str] = API_OPTION, state: Optional[Path] = STATE_OPTION,
           as_json: bool = JSON_OPTION) -> None:
    """Route by this rule again."""
    _set(name, True, api, state, as_json)


@app.command()
def disable(name: str, api: Optional[str] = API_OPTION, state: Optional[Path] = STATE_OPTION,
            as_json: bool = JSON_OPTION) -> None:
    """Stop routing by this rule (takes effect for the next arrival)."""
    _set(name, False, api, state, as_json)


@app.command()
def delete(name: str, api: Optional[str] = API_OPTION, state: Optional[Path] = STATE_OPTION,
           as_json: bool = JSON_OPTION) -> None:
    """Remove a rule."""
    _show(common.guarded(lambda: common.client(api, state).call("routing", method="POST", body={"delete": name})),
          as_json)


@app.command("run")
def run_(name: str, retrieve: Optional[str] = typer.Option(None, "--retrieve", help="a retrieve id (staged series)"),
         job: Optional[str] = typer.Option(None, "--job", help="a finished job whose DICOM outputs are the inputs"),
         api: Optional[str] = API_OPTION, state: Optional[Path] = STATE_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Start a rule's pipeline by hand (enabled or not) on a retrieve's series or a job's outputs."""
    if (retrieve is None) == (job is None):
        common.fail("name the inputs: --retrieve RETRIEVE_ID or --job JOB_ID (one of them)", common.USAGE)
    body = {"run": name, "inputs": {"retrieve": retrieve} if retrieve else {"job": job}}
    answer = common.guarded(lambda: common.client(api, state).call("routing", method="POST", body=body))
    if as_json:
        common.emit_json(answer)
        return
    out.print(f"pipeline {answer['run']['pipeline']} started ({' -> '.join(answer['run']['steps'])}); "
              f"radcloud status {answer['run']['pipeline']} shows each step")


@app.command()
def runs(api: Optional[str] = API_OPTION, state: Optional[Path] = STATE_OPTION, as_json: bool = JSON_OPTION) -> None:
    """What the router started lately: rule, study, its pipeline and each step's state now (or why not);
    then the arrivals not routed yet, with their attempts, next try and last reason."""
    answer = common.guarded(lambda: common.client(api, state).call("routing"))
    if as_json:
        common.emit_json({"runs": answer.get("runs") or [], "pending": answer.get("pending") or []})
        return
    table = Table("at", "rule", "study", "pipeline", "state", "steps / reason", header_style="bold")
    for r in answer.get("runs") or []:
        steps = " -> ".join(f"{s['plugin']} {s['state']}" for s in r.get("step_states") or [])
        table.add_row(str(r.get("at")), r.get("rule", ""), r.get("study_uid", ""), r.get("pipeline", ""),
                      r.get("pipeline_state") or r.get("state", ""),
                      "; ".join(x for x in (steps, r.get("pipeline_reason") or r.get("reason") or "") if x))
    out.print(table)
    pending = answer.get("pending") or []
    if not pending:
        out.print("no arrival is waiting to be routed")
        return
    waiting = Table("arrival", "study", "attempts", "next try", "waiting because", header_style="bold",
                    title=f"{len(pending)} arrival(s) not routed yet")
    for p in pending:
        due = float(p.get("due_in_s") or 0)
        waiting.add_row(p["arrival_id"][:12], p.get("study_uid", ""), str(p.get("attempts", 0)),
                        f"in {due:.0f} s" if due > 0.5 else "now", p.get("summary") or p.get("reason", ""))
        if p.get("reason"):
            waiting.add_row("", "", "", "", f"last reason: {p['reason']}")
    out.print(waiting)
