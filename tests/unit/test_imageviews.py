"""radcloud.ops.imageviews: each image laid out from its Dockerfile, radcloud/ops and other plugins left out."""

from __future__ import annotations

import re

from radcloud.ops import deploy, imageviews

ROOT = deploy.ROOT


def test_copy_and_env_lines_are_read_as_docker_reads_them():
    copies, env = imageviews.read_dockerfile(
        "FROM base\n# COPY not/this /x\nCOPY a.toml b.txt /opt/r/\nCOPY --chown=1:1 src /opt/r/src\n"
        "COPY --from=build /out /opt/out\nRUN pip install \\\n  /opt/r\nENV A=/opt/r/a B=2\nENV C 3\n")
    assert copies == [("a.toml", "/opt/r/a.toml"), ("b.txt", "/opt/r/b.txt"), ("src", "/opt/r/src")]
    assert env == {"A": "/opt/r/a", "B": "2", "C": "3"}


def test_every_plugin_dockerfile_lays_out_its_image_like_the_fallback_and_installs_the_install_root():
    dockerfiles = sorted((ROOT / "plugins").glob("*/Dockerfile"))
    assert dockerfiles, "no plugin Dockerfiles found"
    for path in [*dockerfiles, ROOT / imageviews.RUNTIME_DOCKERFILE]:
        text = path.read_text()
        assert re.search(rf"pip install .*'?{imageviews.INSTALL_ROOT}(\[[\w-]+\])?'?( |$)", text, re.M), path
    for path in dockerfiles:
        copies, env = imageviews.read_dockerfile(path.read_text())
        fallback = imageviews.read_dockerfile(imageviews.plugin_dockerfile(path.parent.name))
        code = [c for c in copies if not c[0].endswith((".toml", ".txt"))]  # pip's inputs, not code
        assert (code, env) == fallback, path


def test_the_runtime_image_holds_radcloud_without_ops_and_every_plugin():
    spec = imageviews.view((ROOT / imageviews.RUNTIME_DOCKERFILE).read_text(), root=ROOT,
                           plugins_dir=ROOT / "plugins", site=["/site"])
    assert [str(ROOT / "radcloud"), "/opt/radcloud/radcloud"] in spec["files"]
    assert [str(ROOT / "plugins"), "/opt/radcloud/plugins"] in spec["files"]
    assert spec["leave_out"] == ["/opt/radcloud/radcloud/ops"]  # from .dockerignore
    assert spec["pythonpath"] == ["{root}/opt/radcloud", "/site"] and spec["isolated"] is True
    assert spec["env"]["RADCLOUD_WEBUI_DIR"] == "{root}/opt/radcloud/webui"
    assert not any(src in (str(ROOT), str(ROOT / "functions"), str(ROOT / "localwhisk")) for src, _ in spec["files"])


def test_a_plugin_image_holds_its_own_plugin_only():
    images = deploy.local_images({})
    spec = images["radcloud/pl-dcm2png:1.0.0"]
    plugin_copies = [dest for _src, dest in spec["files"] if dest.startswith("/opt/radcloud/plugins")]
    assert plugin_copies == ["/opt/radcloud/plugins/dcm2png"]
