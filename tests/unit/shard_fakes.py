"""In-memory collaborators for the shard runner's unit tests (no sockets)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from radcloud.core.errors import NotFound
from radcloud.store.storage import ObjectInfo

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "plugins"


class FakeStore:
    """The slice of radcloud.store.storage.ObjectStore a shard uses, on a dict."""

    def __init__(self, objects: dict[str, bytes] | None = None) -> None:
        self.objects: dict[str, bytes] = dict(objects or {})
        self.types: dict[str, str] = {}

    def get_to_file(self, key: str, path: str) -> None:
        if key not in self.objects:
            raise NotFound(f"no object {key!r}", field="key")
        Path(path).write_bytes(self.objects[key])

    def put_file(self, key: str, path: str, *, content_type: str | None = None) -> ObjectInfo:
        data = Path(path).read_bytes()
        self.objects[key] = data
        self.types[key] = content_type or "application/octet-stream"
        return ObjectInfo(key=key, size=len(data), md5=hashlib.md5(data).hexdigest(),
                          content_type=self.types[key])

    def list(self, prefix: str) -> list[ObjectInfo]:
        return [ObjectInfo(k, len(v), hashlib.md5(v).hexdigest()) for k, v in sorted(self.objects.items())
                if k.startswith(prefix)]

    def stat(self, key: str) -> ObjectInfo | None:
        data = self.objects.get(key)
        return None if data is None else ObjectInfo(key, len(data), hashlib.md5(data).hexdigest())


class RecordingReporter:
    """Records every call; ``cancel_after_lines`` flips the cancel flag."""

    def __init__(self, cancel_after_lines: int | None = None, broken: bool = False) -> None:
        self.events: list[tuple[str, Any]] = []
        self.lines: list[str] = []
        self.outcomes: list[dict[str, Any]] = []
        self.cancel_after_lines = cancel_after_lines
        self.broken = broken

    def running(self, shard_id: str, info: dict[str, Any]) -> None:
        self.events.append(("running", info))

    def started(self, shard_id: str, info: dict[str, Any]) -> None:
        self.events.append(("started", info))

    def progress(self, shard_id: str, done: int, total: int) -> None:
        if self.broken:
            raise ConnectionError("redis went away")
        self.events.append(("progress", (done, total)))

    def log(self, shard_id: str, line: str) -> None:
        if self.broken:
            raise ConnectionError("redis went away")
        self.lines.append(line)

    def finished(self, shard_id: str, outcome: dict[str, Any]) -> None:
        self.outcomes.append(outcome)

    def cancelled(self) -> bool:
        return self.cancel_after_lines is not None and len(self.lines) >= self.cancel_after_lines

    @property
    def outcome(self) -> dict[str, Any]:
        assert len(self.outcomes) == 1, self.outcomes
        return self.outcomes[0]
