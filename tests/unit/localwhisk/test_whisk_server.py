"""The ASGI shell (driven with plain scope/receive/send, no socket), image mapping and .wskprops."""

from __future__ import annotations

import asyncio
import json
import stat

import pytest
from lw_fakes import AUTH, ECHO, make_controller, put_action

from localwhisk.server import App, ServeConfig, build, parse_images, write_wskprops


def asgi(app, method, path, query=b"", headers=(), chunks=(b"",)):
    sent = []
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": query,
             "headers": [(k.encode(), v.encode()) for k, v in headers]}
    asyncio.run(app(scope, receive, send))
    start, body = sent[0], sent[1]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body["body"]


@pytest.fixture
def app():
    ctrl = make_controller()
    put_action(ctrl, "echo", ECHO)
    yield App(ctrl, workers=4)
    ctrl.close()


def test_app_passes_requests_to_the_core(app):
    status, headers, body = asgi(app, "POST", "/api/v1/namespaces/_/actions/echo", b"blocking=true&result=true",
                                 headers=[("authorization", AUTH["authorization"])], chunks=(b'{"a"', b": 1}"))
    assert status == 200 and json.loads(body) == {"a": 1}
    assert headers["content-length"] == str(len(body)) and len(headers["x-openwhisk-activation-id"]) == 32


def test_app_answers_413_without_buffering_everything(app):
    chunk = b"x" * (512 * 1024)
    status, _, body = asgi(app, "POST", "/api/v1/namespaces/_/actions/echo", b"blocking=true",
                           headers=[("authorization", AUTH["authorization"])], chunks=(chunk,) * 4)
    assert status == 413 and "larger than allowed" in json.loads(body)["error"]


def test_parse_images(tmp_path):
    f = tmp_path / "images.yaml"
    f.write_text("user/ocr:1.0:\n  pythonpath: [/opt/ocr]\n  env: {OCR_LANG: en}\n")
    images = parse_images(["radcloud/runtime=/src:/lib"], [f])
    assert images == {"user/ocr:1.0": {"pythonpath": ["/opt/ocr"], "env": {"OCR_LANG": "en"}},
                      "radcloud/runtime": {"pythonpath": ["/src", "/lib"]}}
    with pytest.raises(ValueError, match="IMAGE=DIR"):
        parse_images(["no-equals-sign"], [])


def test_wskprops_format_and_mode(tmp_path):
    path = write_wskprops(tmp_path, "http://127.0.0.1:1234", "u:k")
    assert path.read_text() == "APIHOST=http://127.0.0.1:1234\nAUTH=u:k\nNAMESPACE=guest\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_images_file_preload_and_unknown_keys(tmp_path):
    f = tmp_path / "images.json"
    f.write_text(json.dumps({"radcloud/runtime": {"pythonpath": ["/src"], "preload": ["numpy", "pydicom"],
                                                  "prewarm": False}}))
    assert parse_images([], [f])["radcloud/runtime"]["preload"] == ["numpy", "pydicom"]
    f.write_text(json.dumps({"radcloud/runtime": {"preloads": ["numpy"]}}))
    with pytest.raises(ValueError, match=r"unknown keys \['preloads'\]"):
        parse_images([], [f])
    f.write_text(json.dumps({"radcloud/runtime": {"preload": "numpy"}}))
    with pytest.raises(ValueError, match="preload must be a list"):
        parse_images([], [f])


def test_build_passes_preload_and_image_specs_to_the_runtime(tmp_path):
    config = ServeConfig(state_dir=tmp_path / "state", prewarm=0, preload=("json",),
                         images={"radcloud/runtime": {"pythonpath": ["/src"], "env": {"N": 1},
                                                      "preload": ["numpy"], "prewarm": False}})
    controller = build(config, "http://127.0.0.1:1")
    try:
        runtime = controller.runtime
        assert runtime.preload == ("json",)
        spec = runtime.images["radcloud/runtime"]
        assert (spec.pythonpath, spec.env, spec.preload, spec.prewarm) == (("/src",), {"N": "1"}, ("numpy",), False)
        assert "openwhisk/action-python-v3.11" in runtime.images  # the defaults stay mapped
    finally:
        controller.close()
        runtime.shutdown()
        controller.store.close()


def test_log_records_never_carry_the_namespace_key(tmp_path):
    import io
    import logging

    from localwhisk.server import redact_logs

    key = "2c5e0d1a-7f3b-4c1e-9a2d-5b6c7d8e9f01:" + "s" * 64
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("lw-redact-test")
    logger.addHandler(handler)
    logging.getLogger().addHandler(handler)
    try:
        redact_logs([key, key.partition(":")[2]])
        logger.warning("calling with %s", key)
        logger.warning("secret part %s only", key.partition(":")[2])
        try:
            raise RuntimeError(f"bad header {key}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logging.getLogger().removeHandler(handler)
    text = stream.getvalue()
    assert "s" * 64 not in text and key not in text
    assert "calling with ***" in text and "secret part *** only" in text and "bad header ***" in text
