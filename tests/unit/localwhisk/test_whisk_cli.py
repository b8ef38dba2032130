"""``localwhisk`` command line: argument parsing and failures that happen before any request."""

from __future__ import annotations

from localwhisk.cli import _modules, _param_value, main, parser


def test_missing_manifest_exits_1_with_wskdeploy_message(tmp_path, capsys):
    rc = main(["deploy", "-m", str(tmp_path / "nope.yaml"), "--apihost", "http://127.0.0.1:9", "--auth", "u:k"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"Manifest file not found at path [{tmp_path / 'nope.yaml'}]." in err
    assert "Deployment did not complete sucessfully." in err


def test_missing_credentials_exit_1(tmp_path, capsys):
    (tmp_path / "m.yaml").write_text("packages: {}\n")
    assert main(["deploy", "-m", str(tmp_path / "m.yaml"), "--wskprops", str(tmp_path / "no-wskprops")]) == 1
    assert "The API host is not configured." in capsys.readouterr().err


def test_serve_defaults_bind_loopback():
    args = parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.port == 3233 and args.max_concurrent == 30


def test_param_values_parse_as_json_when_they_can():
    assert _param_value("5") == 5 and _param_value('{"a": 1}') == {"a": 1} and _param_value("text") == "text"


def test_preload_is_repeatable_and_comma_separated():
    args = parser().parse_args(["serve", "--preload", "numpy,pydicom", "--preload", "radcloud.api.action"])
    assert _modules(args.preload) == ("numpy", "pydicom", "radcloud.api.action")
    assert _modules(["a, b", "a"]) == ("a", "b")
    assert parser().parse_args(["serve"]).preload == []
