"""localwhisk.runtime.sandbox.ImageView: an image's filesystem laid out as links, what it leaves out absent."""

from __future__ import annotations

import json
import os

import pytest

from localwhisk.runtime.sandbox import ImageSpec, ImageView, with_view
from localwhisk.server import image_spec, parse_images


@pytest.fixture
def src(tmp_path):
    """A build context: lib/ with a package pkg/ (core/, tooling/), extras/, a file."""
    for rel in ("lib/pkg/core/__init__.py", "lib/pkg/tooling/__init__.py", "lib/pkg/__init__.py",
                "extras/a/x.py", "extras/b/y.py", "setup.cfg"):
        (tmp_path / "ctx" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ctx" / rel).write_text(f"# {rel}\n")
    return tmp_path / "ctx"


def test_copies_are_links_and_what_is_left_out_is_absent(src, tmp_path):
    view = ImageView(files=((str(src / "lib/pkg"), "/opt/app/pkg"), (str(src / "extras/a"), "/opt/app/extras/a"),
                            (str(src / "setup.cfg"), "/opt/app/setup.cfg")),
                     leave_out=("/opt/app/pkg/tooling",))
    root = view.build(tmp_path / "view")
    pkg = root / "opt/app/pkg"
    assert not pkg.is_symlink() and sorted(os.listdir(pkg)) == ["__init__.py", "core"]  # tooling absent
    assert (pkg / "core").is_symlink() and (pkg / "core").resolve() == (src / "lib/pkg/core").resolve()
    assert (root / "opt/app/extras/a").is_symlink() and not (root / "opt/app/extras/b").exists()
    assert (root / "opt/app/setup.cfg").read_text() == "# setup.cfg\n"
    # a new module in a linked folder is seen without a rebuild; a rebuild never touches the sources
    (src / "lib/pkg/core/new.py").write_text("")
    assert (pkg / "core/new.py").exists()
    view.build(root)
    assert (src / "lib/pkg/tooling/__init__.py").exists() and (pkg / "core/new.py").exists()


def test_a_path_copied_twice_or_a_missing_source_is_an_error_naming_it(src, tmp_path):
    twice = ImageView(files=((str(src / "extras"), "/opt/e"), (str(src / "setup.cfg"), "/opt/e")))
    with pytest.raises(ValueError, match="/opt/e is copied twice"):
        twice.build(tmp_path / "v1")
    with pytest.raises(ValueError, match="nowhere does not exist"):
        ImageView(files=((str(src / "nowhere"), "/opt/n"),)).build(tmp_path / "v2")
    with pytest.raises(ValueError, match="image's root"):
        ImageView(files=((str(src / "extras"), "/"),)).build(tmp_path / "v3")


def test_root_in_pythonpath_and_env_names_the_built_view(src, tmp_path):
    spec = ImageSpec(pythonpath=("{root}/opt/app", "/site"), env={"APP_DIR": "{root}/opt/app", "N": "1"},
                     isolated=True)
    built = with_view(spec, ImageView(files=((str(src / "lib/pkg"), "/opt/app/pkg"),)), tmp_path / "v")
    assert built.pythonpath == (f"{tmp_path}/v/opt/app", "/site")
    assert built.env == {"APP_DIR": f"{tmp_path}/v/opt/app", "N": "1"}
    assert built.sources == (str(src / "lib/pkg"),)  # bound back by bubblewrap when under /tmp
    assert spec.stem_key(True) != ImageSpec(pythonpath=spec.pythonpath, env=spec.env).stem_key(True)


def test_images_file_entries_with_files_get_a_view_under_the_state_dir(src, tmp_path):
    f = tmp_path / "images.json"
    f.write_text(json.dumps({"acme/app:1": {"files": [[str(src / "lib/pkg"), "/opt/app/pkg"]],
                                            "leave_out": ["/opt/app/pkg/tooling"], "isolated": True,
                                            "pythonpath": ["{root}/opt/app"]}}))
    entry = parse_images([], [f])["acme/app:1"]
    spec = image_spec("acme/app:1", entry, tmp_path / "state/images")
    assert spec.isolated and spec.pythonpath == (f"{tmp_path}/state/images/acme_app_1/opt/app",)
    assert (tmp_path / "state/images/acme_app_1/opt/app/pkg/core").is_symlink()
    f.write_text(json.dumps({"acme/app:1": {"files": "lib"}}))
    with pytest.raises(ValueError, match="files must be a list"):
        parse_images([], [f])


def test_host_paths_follow_links_inside_copied_folders(src, tmp_path):
    # A folder of links (a test's plugins folder pointing into the checkout): the sandbox must
    # bind back where the links point, not only the folder, when it lives under /tmp.
    (src / "links").mkdir()
    (src / "links" / "a").symlink_to("../extras/a", target_is_directory=True)
    (src / "links" / "gone").symlink_to("../nowhere")
    view = ImageView(files=((str(src / "links"), "/opt/app/plugins"), (str(src / "setup.cfg"), "/opt/app/setup.cfg")))
    paths = view.host_paths()
    assert str((src / "extras/a").resolve()) in paths
    assert str((src / "links").resolve()) in paths and str((src / "setup.cfg").resolve()) in paths
    assert not any("nowhere" in p for p in paths)  # a dangling link binds nothing
    spec = with_view(ImageSpec(), view, tmp_path / "view")
    assert set(paths) <= set(spec.sources)
