"""The stack's SeaweedFS certificates, made by the real openssl (a subprocess: not the unit tier)."""


def test_weed_tls_is_created_once_private_and_names_loopback(tmp_path, require):
    import shutil
    import subprocess

    from radcloud.ops.stack.weed import ensure_tls

    require(shutil.which("openssl") is not None, "openssl missing: apt-get install openssl")
    tls = ensure_tls(tmp_path / "tls")
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == ["ca.crt", "ca.key", "node.crt", "node.key"]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in (tmp_path / "tls").iterdir())
    assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
    text = subprocess.run(["openssl", "x509", "-in", tls.cert, "-noout", "-text"], capture_output=True,
                          text=True, check=True).stdout
    assert "IP Address:127.0.0.1" in text and "TLS Web Client Authentication" in text
    verified = subprocess.run(["openssl", "verify", "-CAfile", tls.ca, tls.cert], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    before = open(tls.cert).read()
    assert ensure_tls(tmp_path / "tls") == tls and open(tls.cert).read() == before
