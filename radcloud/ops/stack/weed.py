"""SeaweedFS's own locks: JWT keys and a private CA, so only the S3 gateway answers without them.

``weed mini`` runs master, volume, filer, S3 and admin servers; each listens
on an HTTP and a gRPC port. Out of the box all of them answer anyone who can
connect, which would let a local user read or delete objects (the
re-identification maps among them) without the S3 keys.
:mod:`radcloud.ops.stack.config` renders ``security.toml`` from
templates/weed-security.toml.j2 (which says what each port requires) with
the JWT keys of :func:`new_keys` and the files of :func:`ensure_tls`: a CA
and the one certificate the components present to each other, created once
per state dir.
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

from radcloud.ops.stack.errors import StackError

JWT_KEYS = ("jwt_signing", "jwt_signing_read", "jwt_filer_signing", "jwt_filer_signing_read")
CERT_DAYS = 3650


@dataclasses.dataclass(frozen=True)
class WeedTls:
    ca: str
    cert: str
    key: str

    @classmethod
    def under(cls, folder: Path) -> "WeedTls":
        return cls(str(folder / "ca.crt"), str(folder / "node.crt"), str(folder / "node.key"))


def new_keys() -> dict[str, str]:
    """Fresh JWT signing keys (kept in credentials.json with the stack's other secrets)."""
    return {name: secrets.token_urlsafe(32) for name in JWT_KEYS}


def ensure_tls(folder: Path, openssl: str | None = None) -> WeedTls:
    """The stack's CA and node certificate under ``folder`` (0700), created once.

    One certificate serves every component as server and as client: weed
    does not check host names on gRPC, and HTTPS peers connect to 127.0.0.1,
    which the certificate names.

    Raises:
        StackError: openssl is missing or fails.
    """
    tls = WeedTls.under(folder)
    if all(Path(p).exists() for p in (tls.ca, tls.cert, tls.key)):
        return tls
    openssl = openssl or shutil.which("openssl")
    if not openssl:
        raise StackError("s3: openssl is needed to create SeaweedFS's certificates; "
                         "install it (apt-get install openssl)", service="s3")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    ca_key, csr, ext = folder / "ca.key", folder / "node.csr", folder / "node.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                   "extendedKeyUsage=serverAuth,clientAuth\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    steps = [
        [openssl, "req", "-x509", *ec, "-keyout", str(ca_key), "-out", tls.ca, "-days", str(CERT_DAYS),
         "-subj", "/CN=radcloud local stack SeaweedFS CA"],
        [openssl, "req", *ec, "-keyout", tls.key, "-out", str(csr), "-subj", "/CN=radcloud-weed"],
        [openssl, "x509", "-req", "-in", str(csr), "-CA", tls.ca, "-CAkey", str(ca_key), "-CAcreateserial",
         "-out", tls.cert, "-days", str(CERT_DAYS), "-extfile", str(ext)],
    ]
    try:
        for argv in steps:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                raise StackError(f"s3: openssl could not create SeaweedFS's certificates "
                                 f"({done.stderr.strip().splitlines()[-1:] or done.returncode}); "
                                 f"remove {folder} and run `radcloud stack up` again", service="s3")
    finally:
        for leftover in (csr, ext, folder / "ca.srl"):
            leftover.unlink(missing_ok=True)
    for path in folder.iterdir():
        path.chmod(0o600)
    return tls


def client_kwargs(tls: WeedTls) -> dict[str, Any]:
    """``requests`` arguments that present the stack's certificate (tests, diagnostics)."""
    return {"cert": (tls.cert, tls.key), "verify": tls.ca}
