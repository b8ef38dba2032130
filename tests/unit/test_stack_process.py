"""radcloud.ops.stack.process: PID records that cannot be confused with a recycled PID."""

from __future__ import annotations

import os

from radcloud.ops.stack import process
from radcloud.ops.stack.process import ProcessRecord


def _me(start_time=None):
    stat = process._stat(os.getpid())
    return ProcessRecord("self", os.getpid(), stat[1] if start_time is None else start_time, ("python",))


def test_record_round_trips_through_a_private_file(tmp_path):
    rec = _me()
    rec.save(tmp_path / "r.json")
    assert ProcessRecord.load(tmp_path / "r.json") == rec
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o600


def test_unreadable_record_is_none(tmp_path):
    assert ProcessRecord.load(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert ProcessRecord.load(tmp_path / "bad.json") is None


def test_alive_only_when_pid_and_start_time_match():
    assert process.is_alive(_me())
    # Same PID, other start time: a recycled PID is somebody else's process.
    assert not process.is_alive(_me(start_time=_me().start_time + 1))


def test_stop_ignores_processes_that_are_not_ours():
    stranger = _me(start_time=_me().start_time + 1)
    assert process.stop([stranger], grace_s=0.1) == []
    assert process.is_alive(_me())  # we were not signalled


def test_tail_returns_last_lines(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert process.tail(log, 3) == "line 97\nline 98\nline 99"
    assert process.tail(tmp_path / "none.log") == ""
