"""What a shard uploads of a plugin's output dir (radcloud.run.shard.collect_outputs), on real files.

In-process: the plugin's leftovers are made here, as a plugin would leave them.
"""

from __future__ import annotations

import os

from radcloud.run.shard import collect_outputs


def test_chris_links_and_escaping_symlinks_are_never_uploaded(tmp_path):
    # pfcon drops symlinks and .chrislink files from outputs (a link in a
    # plugin's output would let ChRIS hand a user another user's files).
    (tmp_path / "result.txt").write_text("ok\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "other-user.chrislink").write_text("home/alice/feeds/feed_1\n")
    (tmp_path / "escalate.chrislink").write_text("home\n")
    os.symlink("/etc/passwd", tmp_path / "passwd")
    os.symlink("result.txt", tmp_path / "linked.chrislink")  # a link named like one: refused too
    files, rejected = collect_outputs(tmp_path)
    assert [rel for rel, _ in files] == ["result.txt"]
    assert {r["path"]: r["why"] for r in rejected} == {
        "escalate.chrislink": "a ChRIS link file (.chrislink) is never an output",
        "linked.chrislink": "a ChRIS link file (.chrislink) is never an output",
        "sub/other-user.chrislink": "a ChRIS link file (.chrislink) is never an output",
        "passwd": "symlink outside the output dir",
    }


def test_a_symlink_inside_the_output_dir_uploads_its_target_under_its_name(tmp_path):
    (tmp_path / "a.txt").write_text("a\n")
    os.symlink("a.txt", tmp_path / "b.txt")
    files, rejected = collect_outputs(tmp_path)
    assert [rel for rel, _ in files] == ["a.txt", "b.txt"] and rejected == []
