"""Why a job or one of its parts ended, in the words a clinician reads.

The reasons radcloud records (:func:`radcloud.work.lifecycle.job_outcome`,
the sandbox's verdict in :mod:`radcloud.run.sandbox`, the executors'
statuses, reconcile's "lost" reasons, dispatch's "invoke failed") are for
the people who run radcloud: they speak of shards, exit codes, activations,
Slurm jobs. The job answer carries both: ``reason`` unchanged (the web UI
shows it under "Technical details") and ``reason_plain`` from :func:`plain`
— the one place that maps one to the other.

:func:`plain` never invents a cause: a reason it does not recognise that
still holds engineering words becomes "The tool could not finish" plus what
to do; a reason that is plain already (e.g. a routing refusal naming the
study) is kept. ``tests/unit/test_reasons.py`` scans the modules that write
reasons and checks that every one comes out without jargon.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Words a clinician should not have to read. A plain reason contains none of them.
JARGON = re.compile(r"\b(shards?|exit(?:ed)?|code \d|activations?|units?|executors?|slurm|oom|sig[a-z]+|"
                    r"stderr|traceback|cgroup|kernel|invoke[d]?|stage [a-z0-9-]+)\b", re.I)

RETRY = "Use “Retry the failed parts”; if it fails again, tell your administrator."
ADMIN = "Tell your administrator (the technical details below say why)."

# (pattern, words) in order: the first that matches a reason decides. Words may use the groups.
_RULES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"\bcancell?ed\b", re.I), "Cancelled."),
    # A refusal by OpenWhisk or a service (the router's waiting arrivals, a route run given up on):
    # before "refused" below, which is a plugin's outputs refused, and before "timed out".
    (re.compile(r"OpenWhisk refused|refused to invoke|connection refused|not reachable|too many requests", re.I),
     "radcloud was busy, or a service it needs (the PACS, storage) did not answer."),
    (re.compile(r"succeeded with warnings: (\d+) input file\(s\)", re.I),
     lambda m: f"Finished, but {m[1]} image file(s) could not be used; the parts below say which."),
    (re.compile(r"none of its (\d+) input file\(s\) could be processed", re.I),
     lambda m: f"None of the {m[1]} image file(s) could be used by this tool (for example a kind of scan it "
               "does not handle)."),
    (re.compile(r"out of memory|oom|could not allocate memory|memory limit", re.I),
     "The tool ran out of memory. Run it on fewer images, or ask your administrator to give it more memory."),
    (re.compile(r"time limit|timed? ?out|timeout|deadline|took longer", re.I),
     "The tool took too long and was stopped. " + RETRY),
    (re.compile(r"output file exceeded|outputs? .*too (large|big)|refused", re.I),
     "The tool's results were larger than allowed. " + ADMIN),
    (re.compile(r"produced no DICOM for", re.I),
     "The preparation step (de-identification) produced no images for the tool to run on."),
    (re.compile(r"de-?identification secret", re.I),
     "De-identification is not set up on this installation. " + ADMIN),
    (re.compile(r"no longer knows|without an outcome|lost|stopped answering|never started", re.I),
     "The computer running this part stopped answering before it finished. " + RETRY),
    (re.compile(r"invoke failed|not available|could not be started|did not start|busy|rate", re.I),
     "This part could not be started. " + RETRY),
    (re.compile(r"exited with code|\bexit \d+|killed by|crash|raised|failed with exit|failed: killed|internal error",
                re.I),
     "The tool stopped with an error. " + RETRY),
    (re.compile(r"\bfailed", re.I), "The tool stopped with an error. " + RETRY),
    # A unit that ended, as its executor saw it: recorded as a reason only when no outcome came with it.
    (re.compile(r"\bended\b|\bcompleted\b|\breturned\b", re.I),
     "This part ended without reporting its result. " + RETRY),
    (re.compile(r"not staged|not completely staged|retrieve", re.I),
     "Some images were not fully copied from the PACS. Pull the study again, then run."),
    (re.compile(r"finalising failed|push to PACS failed", re.I),
     "The results could not be saved completely. " + ADMIN),
]
_PARTS = re.compile(r"^(\d+)/(\d+) shard\(s\) failed:?\s*(.*)$", re.I | re.S)
_SOME = re.compile(r"^(\d+) shard\(s\) failed$", re.I)
_STEP = re.compile(r"^(?:stopped at )?step (\d+) \(([^)]*)\):?\s*(.*)$", re.I | re.S)
_FALLBACK = "The tool could not finish. " + ADMIN


def plain(reason: str | None) -> str:
    """``reason`` in plain words ('' for none). See the module docstring."""
    text = str(reason or "").strip()
    if not text:
        return ""
    if text.lower().startswith("partial: "):   # a pipeline step whose job ended partial
        return plain(text[len("partial: "):])
    m = _PARTS.match(text)
    if m:
        first = plain(m[3].split("; ")[0]) if m[3] else ""
        return f"{m[1]} of {m[2]} parts failed." + (f" {first}" if first else "")
    m = _SOME.match(text)
    if m:
        return f"{m[1]} part(s) failed. " + RETRY
    m = _STEP.match(text)
    if m:
        rest = plain(m[3]) if m[3] else ""
        return f"Stopped at step {m[1]} ({m[2]})." + (f" {rest}" if rest else "")
    for pattern, words in _RULES:
        found = pattern.search(text)
        if found:
            return words(found) if callable(words) else words
    return _FALLBACK if JARGON.search(text) else text
