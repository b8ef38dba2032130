"""Docker (blackbox) actions: ``serve --image`` maps an image to local PYTHONPATH dirs.

``--sandbox none``: under bubblewrap the action gets a private /tmp, so an image
directory inside pytest's tmp_path would be invisible; the sandbox itself is the
runtime's tests' business, the mapping from the CLI flag is this test's, and so is
the ``sandbox-network`` annotation reaching the sandbox.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from localwhisk.testing import Server

pytestmark = pytest.mark.integration


def test_mapped_image_runs_and_unmapped_fails_like_a_pull(tmp_path):
    lib = tmp_path / "imagelib"
    lib.mkdir()
    (lib / "ocrlib.py").write_text("def read():\n    return 'text from the image'\n")
    with Server(tmp_path / "state", extra_args=["--sandbox", "none"], images={"tester/ocr": [lib]}) as whisk:
        code = "import ocrlib\ndef main(a):\n    return {'text': ocrlib.read()}\n"
        for name, image in (("mapped", "tester/ocr:1.0"), ("unmapped", "nobody/missing:2")):
            body = {"exec": {"kind": "blackbox", "image": image, "code": code}}
            status, resp = whisk.client.request("PUT", f"/api/v1/namespaces/_/actions/{name}", body)
            assert status == 200, resp
        status, result = whisk.invoke("mapped")
        assert status == 200 and result == {"text": "text from the image"}
        status, rec = whisk.invoke("unmapped", result=False)
        assert status == 502 and rec["response"]["status"] == "action developer error"
        assert "Failed to pull container image 'nobody/missing:2'" in rec["response"]["result"]["error"]


PROBE = """import socket
def main(args):
    sock = socket.socket()
    sock.settimeout(2)
    try:
        sock.connect(("127.0.0.1", args["port"]))
        return {"connect": "connected"}
    except OSError as ex:
        return {"connect": type(ex).__name__}
    finally:
        sock.close()
"""


@pytest.mark.usefixtures("needs_bwrap")  # fails in CI without bubblewrap (tests/conftest.py)
def test_sandbox_network_false_annotation_unshares_the_network(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    try:
        with Server(tmp_path / "state", extra_args=["--sandbox", "bwrap"]) as whisk:
            image = "openwhisk/action-python-v3.11"  # mapped to localwhisk's interpreter by default
            for name, annotations in (("open", []), ("closed", [{"key": "sandbox-network", "value": False}])):
                body = {"exec": {"kind": "blackbox", "image": image, "code": PROBE}, "annotations": annotations}
                status, resp = whisk.client.request("PUT", f"/api/v1/namespaces/_/actions/{name}", body)
                assert status == 200, resp
            assert whisk.invoke("open", {"port": port}) == (200, {"connect": "connected"})
            assert whisk.invoke("closed", {"port": port}) == (200, {"connect": "ConnectionRefusedError"})
    finally:
        listener.close()


def test_images_file_preload_reaches_the_images_stem_cells(tmp_path):
    """serve --images-file {preload} + --preload: a docker action's cold start takes a stem cell
    of its image that imported both (the action only looks at sys.modules)."""
    images = tmp_path / "images.json"
    images.write_text(json.dumps({"tester/heavy": {"preload": ["xml.dom.minidom"]}}))
    code = ("import sys\ndef main(a):\n"
            "    return {m: m in sys.modules for m in ('xml.dom.minidom', 'json.tool')}\n")
    with Server(tmp_path / "state", extra_args=["--sandbox", "none", "--images-file", str(images)],
                preload=["json.tool"]) as whisk:
        result = None
        for attempt in range(20):  # the stem cell may still be starting: retry with a new version
            body = {"exec": {"kind": "blackbox", "image": "tester/heavy:2", "code": code + f"# {attempt}\n"}}
            status, resp = whisk.client.request("PUT", "/api/v1/namespaces/_/actions/heavy?overwrite=true", body)
            assert status == 200, resp
            status, result = whisk.invoke("heavy")
            assert status == 200, result
            if any(result.values()):
                break
            time.sleep(0.5)
        assert result == {"xml.dom.minidom": True, "json.tool": True}
