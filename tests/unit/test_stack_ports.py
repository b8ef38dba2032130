"""radcloud.ops.stack.ports: the demo's default ports and their validation."""

from __future__ import annotations

import pytest

from radcloud.ops.stack.ports import STANDARD, Ports


def test_default_offset_avoids_system_services_ports():
    ports = Ports.standard()
    assert (ports.orthanc_http, ports.orthanc_dicom, ports.redis, ports.s3) == (18042, 14242, 16379, 18333)
    assert not {8042, 4242, 6379, 8333} & set(ports.to_dict().values())


def test_standard_ports_are_distinct_and_weed_grpc_is_http_plus_10000():
    ports = Ports.standard(5000).to_dict()
    assert len(set(ports.values())) == len(STANDARD)
    for name in ("s3", "weed_master", "weed_volume", "weed_filer", "weed_admin"):
        assert ports[name + "_grpc"] == ports[name] + 10000
    # Below the kernel's ephemeral range, where outgoing connections could steal them.
    assert max(Ports.standard().to_dict().values()) < 32768


def test_offset_past_65535_is_refused_with_the_offending_ports():
    with pytest.raises(ValueError) as exc:
        Ports.standard(50000)
    assert str(exc.value).startswith("port offset 50000 gives invalid ports: ")
    assert "redis=56379" not in str(exc.value)
    assert "orthanc_http=58042" not in str(exc.value)
    assert "s3_grpc=68333" in str(exc.value)


def test_dict_round_trip():
    ports = Ports.standard(123)
    assert Ports.from_dict(ports.to_dict()) == ports
