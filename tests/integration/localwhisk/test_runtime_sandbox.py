"""Docker (blackbox) actions: image mapping and the bubblewrap sandbox.

The network check needs a listener: one on 127.0.0.1 (ephemeral port, loopback
only) that the same probe reaches with ``network: true`` and cannot reach without.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from localwhisk.runtime import DEVELOPER_ERROR, SUCCESS, ActionCode, ImageSpec, Limits, Runtime
from localwhisk.runtime.sandbox import bwrap_argv, bwrap_available, resolve

FIXTURES = Path(__file__).parent / "fixtures"
IMAGE = "radcloud/plugin-probe:1.0"

needs_bwrap = pytest.mark.usefixtures("needs_bwrap")  # fails in CI without bubblewrap (tests/conftest.py)


def probe(network: bool, image: str = IMAGE) -> ActionCode:
    return ActionCode(fqn=f"/guest/bb/probe-{network}", version="1", kind="blackbox", image=image,
                      code=(FIXTURES / "sandbox_probe.py").read_text(), binary=False, network=network,
                      digest=str(network))


@pytest.fixture
def runtime(tmp_path):
    rt = Runtime(api_host="http://127.0.0.1:1", state_dir=tmp_path / "state", prewarm=0,
                 images={IMAGE.split(":")[0]: ImageSpec(env={"PROBE": "1"})}, sandbox="bwrap")
    yield rt
    rt.shutdown()


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    yield server.getsockname()[1]
    server.close()


def invoke(rt, act, value):
    return rt.run(act, Limits(timeout_ms=10000), value, activation_id="a1", transaction_id="t1",
                  namespace="guest", api_key=None, deadline_ms=0)


@needs_bwrap
def test_sandbox_unshares_network_makes_root_read_only_and_tmp_private(runtime, listener, tmp_path):
    host_file = Path("/tmp") / f"lw-host-{tmp_path.name}"
    host_file.write_text("host")
    marker = f"lw-inside-{tmp_path.name}"
    try:
        out = invoke(runtime, probe(network=False), {"port": listener, "marker": marker})
    finally:
        host_file.unlink()
    assert out.status == SUCCESS, out.result
    found = out.result
    assert found["connect"].startswith("ConnectionRefusedError")  # the host listener is unreachable
    assert found["usr"].startswith("OSError: [Errno 30] Read-only file system")
    assert found["uid"] == 65534
    assert host_file.name not in found["tmp"]  # a private /tmp...
    assert marker in found["tmp"]
    assert not (Path("/tmp") / marker).exists()  # ...that does not write through to the host


@needs_bwrap
def test_network_true_shares_the_host_network(runtime, listener):
    out = invoke(runtime, probe(network=True), {"port": listener, "marker": "m"})
    assert out.result["connect"] == "connected"
    assert out.result["usr"].startswith("OSError")  # still read-only


def test_unknown_image_is_a_developer_error_naming_it(runtime):
    out = invoke(runtime, probe(False, image="someone/unknown:latest"), {})
    assert out.status == DEVELOPER_ERROR
    assert out.result["error"].startswith("Failed to pull container image 'someone/unknown:latest'.")
    assert "radcloud/plugin-probe" in out.result["error"]


def test_image_resolution_accepts_tags_and_docker_io():
    images = {"user/img": ImageSpec(), "user/pinned:2": ImageSpec(pythonpath=("/x",))}
    assert resolve("user/img:latest", images) is images["user/img"]
    assert resolve("docker.io/user/img", images) is images["user/img"]
    assert resolve("user/pinned:2", images).pythonpath == ("/x",)
    assert resolve("user/pinned:3", images) is None
    assert resolve(None, images) is None


def test_bwrap_argv_shares_the_network_only_when_asked(tmp_path):
    closed = bwrap_argv(tmp_path, network=False)
    opened = bwrap_argv(tmp_path, network=True)
    assert "--unshare-all" in closed and "--share-net" not in closed
    assert "--share-net" in opened
    # /tmp is the container's own .tmp dir (on disk, as Docker's writable layer: a tmpfs
    # would count against the memory limit); the working directory is bound after it,
    # or a /tmp workdir would vanish
    tmp_bind = closed.index("/tmp")
    assert closed[tmp_bind - 2:tmp_bind + 1] == ["--bind", str(tmp_path / ".tmp"), "/tmp"]
    assert "--tmpfs" not in closed
    assert closed.index(str(tmp_path), tmp_bind) > tmp_bind
    assert closed[closed.index("--ro-bind"):closed.index("--ro-bind") + 3] == ["--ro-bind", "/", "/"]


def test_without_bubblewrap_docker_actions_run_plain_with_a_warning(tmp_path, listener, caplog):
    rt = Runtime(api_host="http://127.0.0.1:1", state_dir=tmp_path / "plain", prewarm=0,
                 images={IMAGE: ImageSpec()}, sandbox="none")
    try:
        with caplog.at_level("WARNING", logger="localwhisk.runtime.pool"):
            out = invoke(rt, probe(network=False), {"port": listener, "marker": f"lw-plain-{tmp_path.name}"})
    finally:
        rt.shutdown()
        (Path("/tmp") / f"lw-plain-{tmp_path.name}").unlink(missing_ok=True)
    assert rt.sandbox_kind() == "plain"
    assert out.status == SUCCESS
    assert out.result["connect"] == "connected"  # nothing isolates the network here
    assert out.result["uid"] != 65534
    assert any("runs unsandboxed" in r.getMessage() for r in caplog.records)


def test_a_missing_bwrap_binary_is_detected():
    assert bwrap_available("bwrap-that-does-not-exist") is False


STEM_PROBE = """import socket, sys
def main(args):
    sock = socket.socket()
    sock.settimeout(2)
    try:
        sock.connect(("127.0.0.1", args["port"]))
        connect = "connected"
    except OSError as ex:
        connect = type(ex).__name__
    finally:
        sock.close()
    return {"connect": connect, "stem": "xml.dom.minidom" in sys.modules}
"""


@needs_bwrap
def test_sandboxed_stem_cells_never_give_an_unshared_action_the_host_network(tmp_path, listener):
    """bwrap decides the network when the process starts: stem pools are per network choice."""
    rt = Runtime(api_host="http://127.0.0.1:1", state_dir=tmp_path / "stems", prewarm=1, sandbox="bwrap",
                 images={"radcloud/plugin-probe": ImageSpec(preload=("xml.dom.minidom",))})

    def act(name: str, network: bool) -> ActionCode:
        return ActionCode(fqn=f"/guest/bb/{name}", version="1", kind="blackbox", image=IMAGE, code=STEM_PROBE,
                          binary=False, network=network, digest="1")

    def wait_stems(expected: dict) -> bool:
        end = time.monotonic() + 10
        while time.monotonic() < end and rt.stats()["stems"] != expected:
            time.sleep(0.02)
        return rt.stats()["stems"] == expected

    try:
        assert wait_stems({"python": 1, "radcloud/plugin-probe": 1})
        shared = invoke(rt, act("shared", True), {"port": listener})
        assert shared.result == {"connect": "connected", "stem": True}
        closed = invoke(rt, act("closed", False), {"port": listener})
        assert closed.result == {"connect": "ConnectionRefusedError", "stem": False}  # not the shared stem
        assert wait_stems({"python": 1, "radcloud/plugin-probe": 1, f"{IMAGE} (no network)": 1})
        closed2 = invoke(rt, act("closed2", False), {"port": listener})
        assert closed2.result == {"connect": "ConnectionRefusedError", "stem": True}
    finally:
        rt.shutdown()


def test_paths_under_tmp_are_bound_back_over_the_private_tmp(tmp_path):
    # A CI clone or venv under /tmp must stay visible inside the sandbox.
    from localwhisk.runtime.sandbox import bwrap_argv

    code = tmp_path / "checkout"
    (code / "pkg").mkdir(parents=True)
    argv = bwrap_argv(tmp_path / "work", network=False, visible=[code, code / "pkg", "/usr/lib"])
    binds = [argv[i + 1] for i, a in enumerate(argv) if a == "--ro-bind"]
    assert str(code) in binds
    assert str(code / "pkg") not in binds  # its parent already shows it
    assert "/usr/lib" not in binds  # outside /tmp: the read-only root shows it
    assert argv.index(str(code)) > argv.index("/tmp")
