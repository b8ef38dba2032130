"""radcloud.run.registry: descriptors, parameter validation, ChRIS argv."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from radcloud.core.errors import BadRequest, ConfigError, NotFound
from radcloud.run import registry as plugins
from radcloud.run.registry import Plugin, Registry, check_descriptor, parse_cpu, parse_memory
from shard_fakes import FIXTURES

REPO_PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


@pytest.fixture
def registry() -> Registry:
    return Registry(FIXTURES)


@pytest.fixture
def copy(registry) -> Plugin:
    return registry.get("copy")


def test_registry_discovers_fixture_plugins(registry):
    assert {"copy", "crash", "hang", "memhog", "escape", "flood", "chris-hello"} <= set(registry.names())
    listed = {p["name"]: p for p in registry.list()}
    assert listed["copy"]["type"] == "ds" and listed["copy"]["version"] == "1.0.0"


def test_unknown_plugin_is_404_naming_what_exists(registry):
    with pytest.raises(NotFound) as err:
        registry.get("nope")
    assert "nope" in err.value.message and "copy" in err.value.message


def test_defaults_are_filled(copy):
    assert copy.validate({}) == {"prefix": "", "b_ignoreInputDir": False, "b_keep": True,
                                 "times": 1, "sleep": 0.0}


@pytest.mark.parametrize("params, field", [
    ({"bogus": 1}, "bogus"),
    ({"times": "three"}, "times"),
    ({"times": True}, "times"),
    ({"times": 1.5}, "times"),
    ({"sleep": "fast"}, "sleep"),
    ({"sleep": float("nan")}, "sleep"),
    ({"b_ignoreInputDir": "maybe"}, "b_ignoreInputDir"),
    ({"prefix": 3}, "prefix"),
    ({"prefix": "a\x00b"}, "prefix"),
])
def test_bad_params_are_400_naming_the_parameter(copy, params, field):
    with pytest.raises(BadRequest) as err:
        copy.validate(params)
    assert err.value.status == 400
    assert err.value.field == field
    assert field in err.value.message


def test_required_parameter_missing(registry):
    with pytest.raises(BadRequest) as err:
        registry.get("flood").validate({})
    assert err.value.field == "mode" and "--mode" in err.value.message


def test_string_forms_are_coerced_and_flag_names_accepted(copy):
    values = copy.validate({"times": "3", "sleep": "0.5", "ignoreInputDir": "true", "prefix": "x-"})
    assert values["times"] == 3 and values["sleep"] == 0.5 and values["b_ignoreInputDir"] is True


def test_argv_matches_chris_convention(copy):
    values = copy.validate({"prefix": "le", "b_ignoreInputDir": True, "b_keep": False, "times": 2})
    argv = copy.argv(values, "/share/incoming", "/share/outgoing")
    assert argv[0] == sys.executable and argv[1].endswith("copy/copy.py")
    assert argv[2:] == ["--prefix", "le", "--ignoreInputDir", "--nokeep", "--times", "2",
                        "--sleep", "0.0", "/share/incoming", "/share/outgoing"]


def test_store_true_false_omitted_at_their_defaults(copy):
    args = copy.args(copy.validate({}))
    assert "--ignoreInputDir" not in args and "--nokeep" not in args


def test_fs_plugin_gets_only_the_output_dir(tmp_path):
    d = tmp_path / "gen"
    d.mkdir()
    (d / "descriptor.json").write_text(json.dumps({"name": "gen", "type": "fs", "selfpath": "/usr/local/bin",
                                                   "selfexec": "gen", "parameters": []}))
    plugin = Registry(tmp_path).get("gen")
    assert plugin.argv({}, "/in", "/out") == ["/usr/local/bin/gen", "/out"]


def test_broken_descriptor_is_skipped_and_reported(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "descriptor.json").write_text(json.dumps({"name": "bad", "parameters": [
        {"name": "x", "type": "complex", "flag": "x"}]}))
    registry = Registry(tmp_path)
    assert registry.names() == []
    assert "type must be one of" in registry.broken["bad"]


def test_check_descriptor_flags_store_true_on_non_bool():
    problems = check_descriptor({"name": "p", "parameters": [
        {"name": "n", "type": "int", "flag": "--n", "action": "store_true"}]})
    assert problems == ["parameter 'n': store_true needs type bool"]


def test_deid_declaration_must_name_the_plugins_parameters():
    params = [{"name": "secretEnv", "type": "str", "flag": "--secretEnv"},
              {"name": "mapDir", "type": "str", "flag": "--mapDir"}]
    good = {"name": "p", "parameters": params, "radcloud": {"deid": {"secret_param": "secretEnv", "map_param": "mapDir"}}}
    assert check_descriptor(good) == []
    bad = {**good, "radcloud": {"deid": {"secret_param": "secretEnv", "map_param": "out"}}}
    assert check_descriptor(bad) == ["radcloud.deid.map_param must name one of the plugin's parameters"]
    real = Registry(Path(__file__).resolve().parents[2] / "plugins")
    assert real.get("deidentify").deid == {"secret_param": "secretEnv", "map_param": "mapDir",
                                           "allow_param": "allowBurnedIn", "allow_burned_in": []}
    allow = {**good, "radcloud": {"deid": {**good["radcloud"]["deid"], "allow_param": "nope",
                                           "allow_burned_in": "Secondary Capture Image Storage"}}}
    assert check_descriptor(allow) == ["radcloud.deid.allow_param must name one of the plugin's parameters",
                                       "radcloud.deid.allow_burned_in must be a list of SOP class names or UIDs"]
    assert [n for n in real.names() if real.get(n).deid] == ["deidentify"]  # nobody else gets the secret


def test_memory_and_cpu_strings():
    assert parse_memory("300Mi") == 300 * 1024**2
    assert parse_memory("2Gi") == 2 * 1024**3
    assert parse_memory("512") == 512 * 1024**2
    assert parse_memory("") is None
    assert parse_cpu("1500m") == 1.5 and parse_cpu("2") == 2.0
    with pytest.raises(ConfigError):
        parse_memory("lots")


def test_limits_come_from_descriptor_and_only_go_down(registry):
    limits = registry.get("memhog").limits({"timeout_s": 10})
    assert limits.memory_bytes == 200 * 1024**2 and limits.timeout_s == 10 and limits.network is False
    flood = registry.get("flood").limits({"max_output_bytes": 10**12})
    assert flood.max_output_bytes == 4194304
    with pytest.raises(BadRequest):
        registry.get("copy").limits({"network": True})


def test_every_repository_plugin_has_a_valid_descriptor():
    registry = Registry(REPO_PLUGINS)
    names = registry.names()
    assert registry.broken == {}
    for name in names:
        plugin = registry.get(name)
        assert Path(plugin.program()[-1]).is_file(), name
        assert (plugin.dir / "Dockerfile").is_file(), name


# Engineer language the Run page must not show a clinician (issue 21 item 5): libraries, packaging,
# standard clauses, command-line flags, runner terms.
JARGON = re.compile(r"PyPI|wheel|pylibjpeg|PS3\.\d+|Table [A-Z]\.|--\w|zlib|HMAC|\bshards?\b|\bexit\b|\bSOP\b|"
                    r"\bTID\b|\bSEG\b|\bSR\b|BIDS|SimpleITK|Gaussian|isotropic|\bLUT\b|MONOCHROME|\bYBR\b")


def test_every_shipped_plugin_speaks_plain_words_with_a_label_and_help_for_every_parameter():
    from radcloud.ui.pages import plugin_catalogue

    registry = Registry(REPO_PLUGINS)
    catalogue = {p["name"]: p for p in plugin_catalogue(registry)}
    assert set(catalogue) == set(registry.names()) and len(catalogue) >= 7
    for name in registry.names():
        descriptor = registry.show(name)
        words = plugins.ui_words(descriptor)
        assert set(words["parameters"]) == {p["name"] for p in descriptor["parameters"]}, name  # every one
        shown = catalogue[name]
        texts = [shown["title"], shown["summary"]] + [t for p in shown["parameters"] for t in (p["label"], p["help"])]
        for text in texts:
            assert text and not JARGON.search(text), (name, text)
        for p in shown["parameters"]:
            assert p["label"] != p["name"] and p["details"].startswith(p["flag"]), (name, p)  # flag kept for details
        assert shown["details"] == descriptor["description"]


def test_a_parameter_without_plain_words_shows_its_name_as_words_and_its_authors_help(registry):
    """A ChRIS plugin from elsewhere (the fixture copy) has no radcloud.ui block: the Run page must
    still show a label a person reads, not the variable name, and the descriptor's help."""
    from radcloud.ui.pages import plugin_catalogue, readable_name

    (copy,) = [p for p in plugin_catalogue(registry) if p["name"] == "copy"]
    shown = {p["name"]: (p["label"], p["help"]) for p in copy["parameters"]}
    assert shown["b_ignoreInputDir"] == ("Ignore input dir", "ignore the input dir")
    assert shown["prefix"] == ("Prefix", "prefix for file names")
    assert [readable_name(n) for n in ("thumbnailSize", "bodyHU", "SeriesUID", "b_keep", "max-size")] == \
        ["Thumbnail size", "Body HU", "Series UID", "Keep", "Max size"]


def test_plain_words_must_name_real_parameters_and_carry_label_and_help():
    d = {"name": "x", "parameters": [{"name": "a", "type": "int", "flag": "--a"}],
         "radcloud": {"ui": {"title": "X", "parameters": {"a": {"label": "A"}, "b": {"label": "B", "help": "b"}}}}}
    problems = plugins.check_descriptor(d)
    assert "radcloud.ui.parameters.a must have a label and a help text" in problems
    assert "radcloud.ui.parameters.b names no parameter of the plugin" in problems


def test_path_option_value_becomes_the_input_dir_as_pfcon_does(tmp_path):
    d = tmp_path / "topo"
    d.mkdir()
    (d / "descriptor.json").write_text(json.dumps({"name": "topo", "type": "ts", "selfpath": "/usr/bin",
        "selfexec": "topo", "parameters": [{"name": "plugininstances", "type": "path", "flag": "--plugininstances",
                                            "optional": False, "action": "store"}]}))
    plugin = Registry(tmp_path).get("topo")
    values = plugin.validate({"plugininstances": "chris/feed_1/pl-a_1,chris/feed_1/pl-b_2"})
    assert plugin.argv(values, "/share/incoming", "/share/outgoing") == [
        "/usr/bin/topo", "--plugininstances", "/share/incoming", "/share/incoming", "/share/outgoing"]
    with pytest.raises(BadRequest):
        plugin.validate({"plugininstances": "../etc"})


def test_cli_lists_and_builds_argv(capsys):
    from radcloud.run.registry import main

    assert main(["--root", str(FIXTURES), "argv", "copy", "times=2", "ignoreInputDir=true"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.endswith("--ignoreInputDir --times 2 --sleep 0.0 <inputdir> <outputdir>")
    assert main(["--root", str(FIXTURES), "argv", "copy", "times=x"]) == 2
    assert "times" in capsys.readouterr().err
    assert main(["--root", str(REPO_PLUGINS), "list"]) == 0
    assert "segment-stats" in capsys.readouterr().out
