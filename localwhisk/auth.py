"""Credentials: one ``uuid:key`` per namespace, generated into the state dir.

OpenWhisk authenticates with HTTP Basic where user = uuid and password = key
(ENT/BasicAuthenticationAuthKey.scala). localwhisk keeps them in
``<state>/auth/<namespace>`` with mode 0600, created on first start, so a
restarted server keeps accepting the clients configured earlier.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
import uuid
from pathlib import Path

DEFAULT_NAMESPACE = "guest"


def new_key() -> str:
    """Return a fresh ``uuid:key`` (OpenWhisk keys are a UUID and 64 characters)."""
    return f"{uuid.uuid4()}:{secrets.token_urlsafe(48)[:64]}"


def load_or_create(state_dir: Path, namespace: str = DEFAULT_NAMESPACE) -> str:
    """Read the namespace's key from the state dir, creating it (0600) if absent."""
    folder = Path(state_dir) / "auth"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / namespace
    if path.exists():
        return path.read_text().strip()
    key = new_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def parse_basic(header: str | None) -> str | None:
    """Return ``uuid:key`` from an ``Authorization: Basic ...`` header, or None."""
    if not header or not header[:6].lower() == "basic ":
        return None
    try:
        return base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


class Authenticator:
    """Maps credentials to namespaces. ``keys`` is ``{namespace: "uuid:key"}``."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._keys = dict(keys)

    def namespace_for(self, header: str | None) -> str | None:
        """Return the namespace the header authenticates, or None if it does not."""
        creds = parse_basic(header)
        if creds is None:
            return None
        for namespace, key in self._keys.items():
            if hmac.compare_digest(creds.encode(), key.encode()):
                return namespace
        return None

    def key_of(self, namespace: str) -> str | None:
        return self._keys.get(namespace)
