"""Per-file reasons: how a plugin says which input files it could not process.

One bad or unusual file must never crash a shard nor hide among the good
ones. A plugin processes each input file on its own; a file it cannot
process gets one reason, in the plugin's log (one ``skipped <file>: <reason>``
line) and in ``file-reasons.json`` in its output dir::

    {"plugin": "dcm2png", "inputs": 42, "processed": 40,
     "not_processed": [{"file": "a/b.dcm", "reason": "JPEG 2000 codestream ends early ..."}]}

The shard runner (:mod:`radcloud.run.shard`) reads that file back, so the shard's
outcome carries ``warnings`` (the count) and the first reasons, and the job
says "succeeded with warnings" rather than a bare "succeeded"; the file is
uploaded with the other outputs so the full list stays with the results.

Reasons are the real ones (:func:`explain`): the decoder's or reader's own
message and what to do, never a bare exception class name. Plugins import
this module (stdlib-only but for :meth:`FileReasons.dcmread`, which imports
pydicom when called); the runner never runs plugin code.
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

FILE_NAME = "file-reasons.json"
# A message about a patient attribute may quote its value: reasons go to logs and job
# records, which must carry no patient data, so such quotes are dropped.
_ABOUT_PATIENT = re.compile(r"\(0010,|\(0008,0090\)|Patient|Physician|\bPN\b|Birth", re.I)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
MAX_REASON = 300        # characters of one reason
MAX_IN_OUTCOME = 20     # reasons copied into a shard's outcome (the file keeps them all)


def explain(exc: BaseException) -> str:
    """A reason a person can act on, from an exception: its message, not its class alone."""
    # The message alone: some libraries embed a whole traceback in it.
    text = " ".join(str(exc).split("Traceback (most recent call last)")[0].split())
    if _ABOUT_PATIENT.search(text):
        text = _QUOTED.sub("'<value withheld>'", text)
    if isinstance(exc, MemoryError):
        return ("not enough memory to decode it" + (f" ({text})" if text else "")
                + "; raise the plugin's memory limit (descriptor max_memory_limit)")[:MAX_REASON]
    if isinstance(exc, KeyError) and text:
        return f"required DICOM attribute or key missing: {text}"[:MAX_REASON]
    if not text:
        frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        where = f" in {Path(frame[0].filename).name}:{frame[0].lineno} ({frame[0].name})" if frame else ""
        return f"{type(exc).__name__} raised without a message{where}"[:MAX_REASON]
    return f"{text} ({type(exc).__name__})"[:MAX_REASON]


class FileReasons:
    """What a plugin collects while it runs; :meth:`write` puts it in the output dir."""

    def __init__(self, plugin: str, inputs: int = 0) -> None:
        self.plugin, self.inputs, self.processed = plugin, inputs, 0
        self.not_processed: list[dict[str, str]] = []

    def ok(self, n: int = 1) -> None:
        self.processed += n

    def skip(self, file: str, reason: str) -> None:
        """Record (and log, to stderr) one file that was not processed."""
        reason = " ".join(reason.split())[:MAX_REASON]
        self.not_processed.append({"file": file, "reason": reason})
        print(f"skipped {file}: {reason}", file=sys.stderr, flush=True)

    def dcmread(self, path: Path, rel: str, *, what: str = "file", **kwargs: Any) -> Any:
        """``pydicom.dcmread(path, **kwargs)``, or None after recording why the file cannot be read.

        pydicom is imported here, not at the top: the runner imports this
        module too, and it never needs a DICOM reader.
        """
        import pydicom
        from pydicom.errors import InvalidDicomError

        try:
            return pydicom.dcmread(path, **kwargs)
        except InvalidDicomError:
            self.skip(rel, "not DICOM (no DICM preamble or file meta)")
        except Exception as exc:
            self.skip(rel, f"cannot read the DICOM {what}: {explain(exc)}")
        return None

    def write(self, outputdir: Path) -> Path:
        path = Path(outputdir) / FILE_NAME
        path.write_text(json.dumps({"plugin": self.plugin, "inputs": self.inputs, "processed": self.processed,
                                    "not_processed": self.not_processed}, indent=1))
        return path


def read(outputdir: Path) -> dict[str, Any] | None:
    """The runner's side: the reasons a plugin wrote, or None. Never raises on a bad file:
    a plugin's output is untrusted, and a malformed list is itself reported."""
    path = Path(outputdir) / FILE_NAME
    if not path.is_file() or path.is_symlink():
        return None
    try:
        doc = json.loads(path.read_text()[:5_000_000])
        items = [{"file": str(i.get("file", ""))[:500], "reason": str(i.get("reason", ""))[:MAX_REASON]}
                 for i in doc.get("not_processed") or [] if isinstance(i, dict)]
        return {"inputs": int(doc.get("inputs") or 0), "processed": int(doc.get("processed") or 0),
                "not_processed": items}
    except (ValueError, TypeError, AttributeError, OSError) as exc:
        return {"inputs": 0, "processed": 0,
                "not_processed": [{"file": FILE_NAME, "reason": f"the plugin wrote an unreadable list: {explain(exc)}"}]}


def into_outcome(outputdir: Path, outcome: dict[str, Any], log: Callable[[str], None]) -> None:
    """The runner's side: the plugin's reasons into a shard outcome (count, processed, the first few)."""
    found = read(outputdir)
    if not found:
        return
    items = found["not_processed"]
    outcome["warnings"], outcome["processed"] = len(items), found["processed"]
    outcome["file_reasons"] = items[:MAX_IN_OUTCOME]
    if items:
        log(f"{len(items)} of {found['inputs'] or '?'} input file(s) not processed; the list is in {FILE_NAME}")


def first(outcome: dict[str, Any]) -> str:
    """The first file's reason, short, for a shard's message."""
    item = outcome["file_reasons"][0]
    return f"{item['file']}: {item['reason']}"[:200]
