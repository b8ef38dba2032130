"""pfcon wire format: form parsing as parser_plugin, cmd as pfcon builds it, statuses."""

from __future__ import annotations

import base64
import json
from urllib.parse import urlencode

import pytest

from radcloud.core.errors import BadRequest
from radcloud.pfcon import protocol as P

# The plugin job of pfcon's req_resp_flow.md example, field for field.
EXAMPLE = ("jid=chris-jid-2&args=--prefix&args=le&auid=cube&number_of_workers=1&cpu_limit=1000"
           "&memory_limit=200&gpu_limit=0&image=fnndsc/pl-simpledsapp&entrypoint=python3"
           "&entrypoint=/usr/local/bin/simpledsapp&type=ds&input_dirs=home/user/cube"
           "&output_dir=home/user/cube_out")
FORM = "application/x-www-form-urlencoded"


def test_example_plugin_job_parses_and_builds_pfcons_cmd():
    job = P.PluginJob.parse(P.decode_body(EXAMPLE, FORM))
    assert job.jid == "chris-jid-2" and job.auid == "cube" and job.image == "fnndsc/pl-simpledsapp"
    assert job.entrypoint == ["python3", "/usr/local/bin/simpledsapp"]
    assert job.args == ["--prefix", "le"]
    assert (job.cpu_limit, job.memory_limit, job.gpu_limit, job.number_of_workers) == (1000, 200, 0, 1)
    assert job.input_dirs == ["home/user/cube"] and job.output_dir == "home/user/cube_out"
    assert job.cmd() == "python3 /usr/local/bin/simpledsapp --prefix le /share/incoming /share/outgoing"


def test_fs_cmd_has_no_incoming_and_path_flag_values_become_incoming():
    fields = P.decode_body(EXAMPLE.replace("type=ds", "type=fs") + "&args=--dir&args=home/x/data"
                           + "&args_path_flags=--dir", FORM)
    job = P.PluginJob.parse(fields)
    assert job.cmd() == ("python3 /usr/local/bin/simpledsapp --prefix le --dir /share/incoming "
                         "/share/outgoing")


def test_missing_and_malformed_fields_are_named_together():
    with pytest.raises(BadRequest) as err:
        P.PluginJob.parse(P.decode_body("jid=x&cpu_limit=lots&type=zz&env=NOEQUALS", FORM))
    problems = err.value.details["fields"]
    for name in ("entrypoint", "image", "auid", "memory_limit", "output_dir", "cpu_limit", "type", "env"):
        assert name in problems, name
    assert "input_dirs" not in problems  # optional, as in pfcon: see the fs test below
    assert "lots" in problems["cpu_limit"] and "ds, fs, ts" in problems["type"]


def test_fs_plugin_jobs_come_without_input_dirs_as_cube_sends_them():
    # CUBE's fs plugin instance has no parent: input_dirs is an empty list, so
    # urlencode puts no field on the wire. pfcon's parsers default it to [].
    fs_plugin = EXAMPLE.replace("type=ds", "type=fs").replace("&input_dirs=home/user/cube", "")
    assert "input_dirs" not in fs_plugin
    job = P.PluginJob.parse(P.decode_body(fs_plugin, FORM))
    assert job.input_dirs == [] and job.type == "fs" and job.output_dir == "home/user/cube_out"
    assert job.cmd() == "python3 /usr/local/bin/simpledsapp --prefix le /share/outgoing"
    copy = P.CopyJob.parse(P.decode_body(urlencode({"jid": "j1", "output_dir": "home/o", "cpu_limit": 1000,
                                                    "memory_limit": 300}), FORM))
    assert copy.input_dirs == [] and copy.output_dir == "home/o" and copy.memory_limit == 300


def test_env_repeats_into_a_dict():
    job = P.PluginJob.parse(P.decode_body(EXAMPLE + "&env=CHRIS_JID=chris-jid-2&env=A=b=c", FORM))
    assert job.env_dict() == {"CHRIS_JID": "chris-jid-2", "A": "b=c"}


def test_copy_upload_delete_fields_and_defaults():
    copy = P.CopyJob.parse(P.decode_body("jid=j1&input_dirs=home/a/&input_dirs=home/b&output_dir=home/o", FORM))
    assert copy.input_dirs == ["home/a/", "home/b"] and (copy.cpu_limit, copy.memory_limit) == (1000, 200)
    assert P.UploadJob.parse({"jid": ["j1"], "job_output_path": ["home/o"]}).job_output_path == "home/o"
    assert P.DeleteJob.parse({"jid": ["/j1"]}).jid == "j1"  # pfcon strips a leading slash
    with pytest.raises(BadRequest) as err:
        P.CopyJob.parse({"jid": ["j1"], "input_dirs": ["home/../etc"]})
    assert err.value.field == "input_dirs"
    with pytest.raises(BadRequest) as err:
        P.DeleteJob.parse({"jid": ["../x"]})
    assert err.value.field == "jid"


def test_bodies_form_text_base64_json_and_zip_mode():
    assert P.decode_body("jid=a&jid=b", FORM) == {"jid": ["a", "b"]}
    raw_json = base64.b64encode(json.dumps({"pfcon_user": "u", "pfcon_password": "p"}).encode()).decode()
    assert P.decode_body(raw_json, "application/json") == {"pfcon_user": ["u"], "pfcon_password": ["p"]}
    assert P.decode_body('{"a": [1, 2]}', "application/json") == {"a": ["1", "2"]}
    # A form OpenWhisk chose to base64-encode (padding '=' included) still parses.
    assert P.decode_body(base64.b64encode(b"jid=a1&jid=b").decode(), FORM) == {"jid": ["a1", "b"]}
    assert P.decode_body(base64.b64encode(b"jid=a").decode(), FORM) == {"jid": ["a"]}
    assert P.decode_body("", FORM) == {}
    with pytest.raises(BadRequest) as err:
        P.decode_body("--boundary...", "multipart/form-data; boundary=x")
    assert err.value.field == "data_file" and "in-network" in err.value.message
    with pytest.raises(BadRequest):
        P.PluginJob.parse(P.decode_body(EXAMPLE + "&data_file=zip", FORM))


def test_status_mapping_covers_every_job_state():
    expected = {"created": "notStarted", "staging": "notStarted", "running": "started",
                "finishing": "started", "succeeded": "finishedSuccessfully", "failed": "finishedWithError",
                "partial": "finishedWithError", "cancelled": "finishedWithError"}
    from radcloud.work.jobs import JOB_STATES

    assert {s: P.status_of(s) for s in JOB_STATES} == expected
    assert P.status_of(None) == P.status_of("bogus") == "undefined"
    assert set(expected.values()) | {"undefined"} == set(P.STATUSES)


def test_args_back_to_params_from_the_descriptor():
    params = [{"name": "prefix", "flag": "--prefix", "short_flag": "-p", "action": "store"},
              {"name": "shout", "flag": "--shout", "action": "store_true"},
              {"name": "keep", "flag": "--nokeep", "action": "store_false"}]
    assert P.args_to_params(["-p", "le", "--shout", "--nokeep"], params, "x") == \
        {"prefix": "le", "shout": True, "keep": False}
    assert P.args_to_params(["--prefix=a b"], params, "x") == {"prefix": "a b"}
    with pytest.raises(BadRequest) as err:
        P.args_to_params(["--saveinputmeta"], params, "x")
    assert "--saveinputmeta" in err.value.message and "--prefix" in err.value.message
    with pytest.raises(BadRequest):
        P.args_to_params(["--prefix"], params, "x")


def test_helpers():
    assert P.storage_path("/home/a//b/") == "home/a/b" and P.storage_path("a/../b") == ""
    assert P.iso(0) == "" and P.iso(None) == "" and P.iso(86400) == "1970-01-02T00:00:00"
    assert P.tail("\n".join(str(i) for i in range(2000))).splitlines()[0] == "1000"
    assert P.compute("j")["status"] == "undefined"
    assert P.query_fields(urlencode({"job_output_path": "home/o"})) == {"job_output_path": ["home/o"]}
