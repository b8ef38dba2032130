"""The clinician's path through the web UI in real headless Chromium.

One browser session runs every step in order (ui.e2e.mjs); each test below
checks one step's outcome, so a failure names the step that broke. The
screenshots land in artifacts/screenshots/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

# The journey is one browser session of ~20 steps, set up by the first test: ~270 s at load ~20
# (the default 300 s cut it at the last page of the width sweep).
pytestmark = pytest.mark.timeout(600)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def journey(site, stack, run_browser):
    return run_browser("ui.e2e.mjs", {
        "RC_UI": site.ui, "RC_USER": site.user, "RC_PASSWORD": site.password,
        "RC_ORTHANC": stack.orthanc_url, "RC_ORTHANC_AUTH": ":".join(stack.orthanc_auth),
        "RC_ADMIN": site.admin, "RC_ADMIN_PASSWORD": site.admin_password}, record="journey.json", timeout=900)


def test_no_external_requests(journey):
    assert journey["summary"]["external_requests"] == []


def test_no_token_redirects_to_login(journey):
    assert "/login?next=jobs" in journey.ok("no-token-redirects-to-login")["url"]


def test_login_refuses_wrong_password_then_logs_in(journey):
    record = journey.ok("login")
    assert "Wrong user name or password" in record["refused"]
    # The page-load time is recorded (artifacts/screenshots/journey.json) but not asserted:
    # a timed assert fails on a loaded shared box; bench/ui_bench.py holds the ≤ 1 s target.
    assert record["page_load_ms"] > 0


def test_token_lives_in_session_storage_not_local_storage(journey):
    """A shared workstation: closing the browser ends the session."""
    storage = journey.ok("login")["storage"]
    assert storage["local"] == [] and storage["session_token"]


def test_focus_is_in_the_first_search_field_after_login(journey):
    assert journey.ok("login")["focused"] == "mrn"
    assert journey.ok("admin-audit-trail")["focused_after_login"] == "mrn"


def test_log_out_forgets_the_token(journey):
    assert journey.ok("admin-audit-trail")["token_after_logout"] is None


def test_idle_session_logs_itself_out(journey):
    record = journey.ok("idle-logout")
    assert "why=idle" in record["url"] and "without activity" in record["note"]
    assert record["token_left"] is None


def test_search_by_mrn(journey):
    record = journey.ok("search-by-mrn")
    assert record["studies"] >= 1 and record["series"] >= 1
    assert record["sorted"] == "ascending" and record["csv_lines"] == record["studies"] + 1


def test_log_out_everywhere_ends_the_session_on_another_workstation(journey):
    record = journey.ok("log-out-everywhere")
    assert record["status"] == 200 and record["body"] == {"everywhere": True}
    assert record["here"].startswith("/login")
    assert record["other"].startswith("/login?next=jobs") and record["other_token_status"] in ("gone", 401)


def test_every_series_row_shows_a_thumbnail_of_its_images(journey):
    """#21 item 4: thumbnails from Orthanc's preview, one per series row, small."""
    record = journey.ok("search-by-mrn")
    assert len(record["thumbs"]) == record["series"] >= 1
    assert all(0 < max(w, h) <= 96 for w, h in record["thumbs"]), record["thumbs"]
    assert "query:previews" in journey.ok("admin-audit-trail")["actions"]   # pictures of a patient: audited


def test_series_rows_leave_the_accession_column_empty(journey):
    record = journey.ok("search-by-mrn")
    assert record["series_accession"] and set(record["series_accession"]) == {""}


def test_name_search_forgives_case_and_is_a_prefix(journey):
    by_name = journey.ok("search-forgiving")["by_name"]
    assert by_name["smith"]["sent"] == "smith*"
    assert by_name["Smith, Jo"]["sent"] == "Smith^Jo*"
    assert by_name["?MITH^JOHN"]["sent"] == "?MITH^JOHN"   # DICOM wildcards pass as typed
    for typed, answer in by_name.items():
        assert answer["fields"] == ["PatientName"], answer   # typed into the name field, nowhere else
        assert answer["rows"], f"{typed!r} found nothing"
        assert all(name.upper().startswith("SMITH, J") for name, _mrn in answer["rows"]), (typed, answer)
        assert ["SMITH, JOHN", "RC100002"] in answer["rows"], (typed, answer)


def test_enter_in_the_mrn_box_searches_and_shift_enter_adds_a_line(journey):
    record = journey.ok("search-forgiving")
    assert record["mrn_box"] == "RC100002\nRC100003"
    assert record["by_mrn"]["sent"] == ["RC100002", "RC100003"]
    assert {mrn for _name, mrn in record["by_mrn"]["rows"]} == {"RC100002", "RC100003"}


def test_search_by_date_range(journey):
    assert journey.ok("search-by-date-range")["studies"] >= 1


def test_pull_bars_reach_100_percent(journey):
    assert journey.ok("pull-reaches-100")["series"]


def test_run_dcm2png(journey):
    assert journey.ok("run-plugin")["job"]


def test_job_finishes(journey):
    record = journey.ok("job-finishes")
    assert record["state"] == "succeeded" and record["shown"] == "Finished"   # #21 item 5: plain words
    assert not re.search(r"\bshards?\b|\bexit\b|Log tail|succeeded", record["page_text"]), record["page_text"]


def test_every_parameter_of_every_plugin_has_a_human_label_and_help(journey):
    """#21 item 5: labels and help in plain words; the flag and the author's text behind "details"."""
    labels = journey.ok("run-plugin")["labels"]
    assert len(labels) >= 7 and "dcm2png" in labels
    for plugin, shown in labels.items():
        assert "PyPI" not in shown["about"].split("Technical details")[0], plugin
        for p in shown["params"]:
            assert p["label"] and p["label"] != p["name"] and len(p["help"]) > 10, (plugin, p)
            assert p["details"].startswith("--"), (plugin, p)
    wc = next(p for p in labels["dcm2png"]["params"] if p["name"] == "wc")
    assert wc["label"] == "Window centre (HU)" and "Brightness" in wc["help"]
    # A plugin whose descriptor has no plain words (the e2e fixture chris-fs, as a ChRIS plugin from
    # elsewhere): its parameter's name as words and its author's help, not the bare variable name.
    assert labels["chris-fs"]["params"] == [{"name": "name", "label": "Name", "help": "name of the file it makes",
                                             "details": "--name name of the file it makes"}]


def test_result_image_has_real_pixels(journey):
    from PIL import Image, ImageStat

    record = journey.ok("view-result-image")
    image = Image.open(record["canvas_png"]).convert("L")
    stat = ImageStat.Stat(image)
    low, high = image.getextrema()
    assert image.width >= 64 and high - low > 50 and stat.stddev[0] > 10, (low, high, stat.stddev)


def test_cancel_button_cancels_a_running_job(journey):
    record = journey.ok("job-cancel")
    assert record["state_before"] not in ("succeeded", "failed", "partial", "cancelled")
    assert record["cancel_status"] == 200 and "Cancel requested" in record["toast"]
    assert record["state"] == "cancelled" and record["cancel_button_left"] == 0
    # The summary names the cancelled parts instead of counting them as done.
    assert re.search(r"parts done \(.*\d+ cancelled\)", record["shards_line"]), record["shards_line"]


def test_retry_button_reruns_the_failed_shards(journey):
    record = journey.ok("job-retry")
    assert record["first_state"] == "failed" and "--wc and --ww go together" in record["first_log"]
    assert record["retry_status"] == 200 and record["retried"]
    assert record["state_after_retry"] not in ("failed", "partial")  # reopened, then failed again
    assert record["attempts"] and all(a >= 2 for a in record["attempts"])
    assert record["state"] == "failed"


def test_a_failed_job_says_why_in_plain_words_with_the_technical_reason_behind_details(journey):
    """#21 item 5: no "shard" nor "exit N" where a clinician reads; the recorded reason kept under details."""
    words = journey.ok("job-retry")["words"]
    assert words["reason"].startswith("The tool stopped with an error") or "parts failed" in words["reason"], words
    for text in [words["reason"], *words["why"]]:
        assert not re.search(r"shard|exit|code \d", text, re.I), words
    assert words["why"] and all(w.startswith("The tool stopped with an error") for w in words["why"]), words
    assert "Technical details" in words["technical"] and "exited with code 2" in words["technical"], words
    assert not words["technical_open"]


def test_pull_of_a_series_the_pacs_lost_shows_the_error_then_retry_succeeds(journey):
    record = journey.ok("pull-errors-then-retry")
    assert record["error"].startswith("The PACS no longer has these images")   # plain words first
    assert "has no SeriesInstanceUID" in record["error"]                          # then the server's detail
    assert record["restored"] and record["instances"] > 0 and record["error_hidden_after_retry"]
    assert record["series"] == [f"{record['instances']}/{record['instances']}"]


def test_a_failed_series_retry_button_starts_a_new_retrieve(journey):
    record = journey.ok("pull-errors-then-retry")
    assert "could not be reached" in record["series_error"]
    body = record["rerun_body"]
    assert "retrieve_id" not in body and body.get("SeriesInstanceUID")   # a rerun, not a status read


def test_audit_trail_is_admin_only_and_records_the_search(journey):
    record = journey.ok("admin-audit-trail")
    assert "not allowed" in record["clinician_refused"] or "may not" in record["clinician_refused"]
    assert {"query", "retrieve", "dispatch", "results:get", "login"} <= set(record["actions"])
    assert "retrieve:get" not in record["actions"]  # progress polls are not audited


def test_audit_shows_loading_then_local_times(journey):
    record = journey.ok("admin-audit-trail")
    assert "Loading" in record["loading_text"]
    when = record["when"]
    assert record["zone"] in ("Asia/Kolkata", "Asia/Calcutta")   # ICU still calls it Calcutta
    assert when["shown"] == when["expected_local"], when
    assert when["shown"] != when["utc"].replace("T", " ")[:19]   # not UTC (Kolkata is 5:30 ahead)


def test_home_is_the_first_screen_with_my_jobs_my_staged_studies_and_a_patient_finder(journey):
    """#21 item 4: after a login, Home: find a patient, recent jobs, staged studies, what the PACS received last."""
    assert journey.ok("admin-audit-trail")["focused_after_login"] == "mrn"   # Home's finder has the focus
    finder = journey.ok("every-page-at-1366-and-390")["home"]
    assert finder["focused"] == "mrn"
    assert finder["found"]["url"].startswith("/search?name=smith") and finder["found"]["rows"], finder["found"]
    assert all("SMITH" in r.upper() for r in finder["found"]["rows"]), finder["found"]
    home = journey.ok("staged-after-relogin")["home"]   # the clinician's, after a run
    assert "SMITH, JOHN" in home["jobs"] and "dcm2png" in home["jobs"], home["jobs"]
    assert re.search(r"Finished|Running|Waiting to start|Saving the results", home["jobs"]), home["jobs"]   # plain words
    assert "RC100002" in home["staged"] and "series" in home["staged"], home["staged"]
    # #21: the demo's studies are dated 2025: recent is what the PACS received last, so they are listed, newest first
    assert "RC100002" in home["recent"] and "received 20" in home["recent"], home["recent"]
    received = re.findall(r"received (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", home["recent"])
    assert received and received == sorted(received, reverse=True), home["recent"]


def test_jobs_list_shows_local_start_times(journey):
    times = journey.ok("every-page-at-1366-and-390")["jobs_time"]
    assert times["shown"] and times["shown"] == times["expected_local"], times


def test_jobs_list_takes_the_width_when_no_job_is_chosen(journey):
    """At 1366 px with no job open, every column (Started, Elapsed, Job) is in view, not cut off."""
    fit = journey.ok("every-page-at-1366-and-390")["jobs_fit"]
    assert fit["table"] <= fit["box"] and fit["box"] >= 0.9 * fit["main"], fit


def test_every_page_fits_a_390px_phone_without_sideways_scrolling(journey):
    """Neither the page nor any box on it (a table, a form) scrolls sideways, at 390 and 1366 px,
    and no field's hint is cut off (ui.e2e.mjs, sidewaysBoxes)."""
    record = journey.ok("every-page-at-1366-and-390")
    phone = {k: w for k, w in record["widths"].items() if k.endswith("@390")}
    assert len(phone) == 11 and all(w <= 390 for w in phone.values()), phone
    assert len(record["boxes"]) == 22 and not any(record["boxes"].values()), record["boxes"]
    assert record["mrn_lines"] and set(record["mrn_lines"]) == {1}   # MRNs never break mid-number
    for name in ("home", "search", "pull", "run", "jobs", "job", "view", "viewer", "audit", "automations", "login"):
        for width in (1366, 390):
            assert (SHOTS / f"page-{name}-{width}.png").is_file()


def test_static_build_works_from_another_origin(site, tmp_path, run_browser):
    """The folder `python -m radcloud.ui.pages` writes, served by a plain static
    server on its own port, logs in and searches through the web actions."""
    import functools
    import http.server
    import threading

    from radcloud.ui.pages import WebUI

    out = tmp_path / "site"
    WebUI().build(out, api_base=f"{site.base}/api/v1/web/guest/radcloud/", plugins=[])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run = run_browser("static.e2e.mjs", {"RC_STATIC": f"http://127.0.0.1:{server.server_address[1]}",
                                             "RC_USER": site.user, "RC_PASSWORD": site.password},
                          timeout=300, require_summary=False)
    finally:
        server.shutdown()
    record = run.ok("static-site")
    assert "login.html" in record["redirected"] and record["studies"] >= 1 and record["errors"] == []


def test_results_and_job_pages_show_whose_images_in_a_fixed_header(journey):
    """#21 item 1: patient name, MRN, birth date, study date/description and series."""
    record = journey.ok("identity-header")
    for text in (record["results"]["text"], record["job"]):
        assert "SMITH, JOHN" in text and "RC100002" in text and "Born" in text, text
        assert re.search(r"Study \d{4}-\d\d-\d\d", text) and "Series:" in text, text
    assert "SMITH, JOHN" in record["results"]["title"]
    assert 0 <= record["results"]["top_after_scroll"] < 60   # sticky: still on screen after scrolling


def test_jobs_list_has_patient_and_study_columns_and_a_find_box(journey):
    record = journey.ok("identity-header")
    patient, study, plugin = record["row"]
    assert patient.startswith("SMITH, JOHN") and "RC100002" in patient and plugin == "dcm2png"
    assert re.search(r"\d{4}-\d\d-\d\d", study)
    assert record["found"] >= 1 and record["found"] <= record["all"]
    assert record["none"] == 0 and "No job matches" in record["no_match"]


def test_a_job_without_a_recorded_subject_says_so(journey):
    assert "Patient not recorded" in journey.ok("identity-header")["old"]


def test_results_sent_to_the_pacs_are_numbered_after_their_source_badged_and_not_pulled_again(journey):
    """#21 item 2: derived series numbered source × 100 + 1, described, badged; a whole-study pull skips them."""
    rows = journey.ok("derived-series")["rows"]
    source = {int(r["number"]) for r in rows if not r["badge"]}
    results = [r for r in rows if r["badge"]]
    assert source and results, rows
    for r in results:
        assert r["badge"] == "Result" and int(r["number"]) // 100 in source and int(r["number"]) % 100 == 1, r
        assert r["description"].startswith(f"radcloud dcm2png pictures of #{int(r['number']) // 100}"), r
        assert not r["checked"] and not r["disabled"], r   # the chosen study does not bring them along
    assert all(r["checked"] and r["disabled"] for r in rows if not r["badge"]), rows
    note = journey.ok("staged-after-relogin")["derived_left_out"]
    assert note.startswith(f"{len(results)} result series that radcloud made earlier") and "left out" in note, note
    assert journey["summary"]["derived_dropped"] == len(results)


def test_a_new_login_finds_the_staged_studies_and_runs_on_them(journey):
    """#21 item 3: staged studies listed by patient/study with size and age, usable at once."""
    record = journey.ok("staged-after-relogin")
    mine = [i for i in record["items"] if "RC100002" in i]
    assert mine and "SMITH, JOHN" in mine[0] and re.search(r"\d+ series, \d+ images, [\d.]+ [KM]?B · staged ", mine[0]), mine
    assert record["inputs"]["prefixes"] and all(k.endswith("manifest.json") for k in record["inputs"]["prefixes"])
    assert "SMITH, JOHN" in record["job_identity"]


def test_pulling_a_staged_study_again_says_already_staged(journey):
    record = journey.ok("staged-after-relogin")
    assert record["already"].startswith("Already staged")
    assert record["series_states"] and set(record["series_states"]) == {"Already staged"}
