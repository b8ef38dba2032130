"""Persistence for entities and activations: one sqlite file in the state dir.

Entities (packages, actions) and activation records are JSON documents keyed
like OpenWhisk's database (``namespace/[package/]name``). Activations carry a
``done`` flag so a restart can find the ones a dead process left in flight
and finish them as errors instead of leaving them "running" forever.
``Store(":memory:")`` gives the same behaviour without touching disk (tests).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
  type TEXT NOT NULL, namespace TEXT NOT NULL, path TEXT NOT NULL,
  updated INTEGER NOT NULL, doc TEXT NOT NULL,
  PRIMARY KEY (type, namespace, path));
CREATE TABLE IF NOT EXISTS activations (
  id TEXT PRIMARY KEY, namespace TEXT NOT NULL, name TEXT NOT NULL, path TEXT NOT NULL,
  start INTEGER NOT NULL, done INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS activations_by_start ON activations (namespace, start);
"""


class Store:
    """Thread-safe document store. ``location`` is a file path or ``":memory:"``."""

    def __init__(self, location: str | Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(location), check_same_thread=False, isolation_level=None)
        if str(location) != ":memory:":
            # WAL + NORMAL: commits do not fsync, a crash loses at most the last
            # few activations, never corrupts the file. Invokes stay sub-millisecond.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- entities ---------------------------------------------------------

    def put_entity(self, type_: str, namespace: str, path: str, doc: dict[str, Any]) -> None:
        self._run(
            "INSERT OR REPLACE INTO entities VALUES (?, ?, ?, ?, ?)",
            (type_, namespace, path, int(doc.get("updated", 0)), json.dumps(doc)),
        )

    def get_entity(self, type_: str, namespace: str, path: str) -> dict[str, Any] | None:
        rows = self._run(
            "SELECT doc FROM entities WHERE type=? AND namespace=? AND path=?", (type_, namespace, path)
        )
        return json.loads(rows[0][0]) if rows else None

    def delete_entity(self, type_: str, namespace: str, path: str) -> bool:
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM entities WHERE type=? AND namespace=? AND path=?", (type_, namespace, path)
            )
            return cur.rowcount > 0

    def list_entities(self, type_: str, namespace: str, package: str | None = None) -> list[dict[str, Any]]:
        """All entities of a type, newest first. ``package`` restricts to one package's actions."""
        if package is None:
            rows = self._run(
                "SELECT doc FROM entities WHERE type=? AND namespace=? ORDER BY updated DESC, path",
                (type_, namespace),
            )
        else:
            rows = self._run(
                "SELECT doc FROM entities WHERE type=? AND namespace=? AND path LIKE ? ESCAPE '\\' "
                "ORDER BY updated DESC, path",
                (type_, namespace, _like_prefix(package + "/")),
            )
        return [json.loads(r[0]) for r in rows]

    def list_all_entities(self, type_: str) -> list[dict[str, Any]]:
        """Every entity of a type in every namespace (the alarms scheduler's registrations)."""
        return [json.loads(r[0]) for r in self._run("SELECT doc FROM entities WHERE type=? ORDER BY namespace, path",
                                                     (type_,))]

    # -- activations ------------------------------------------------------

    def put_activation(self, record: dict[str, Any], *, done: bool) -> None:
        path = _annotation(record, "path") or f"{record['namespace']}/{record['name']}"
        self._run(
            "INSERT OR REPLACE INTO activations VALUES (?, ?, ?, ?, ?, ?, ?)",
            (record["activationId"], record["namespace"], record["name"], path,
             int(record["start"]), int(done), json.dumps(record)),
        )

    def delete_activation(self, activation_id: str) -> None:
        self._run("DELETE FROM activations WHERE id=?", (activation_id,))

    def get_activation(self, activation_id: str) -> tuple[dict[str, Any], bool] | None:
        rows = self._run("SELECT doc, done FROM activations WHERE id=?", (activation_id,))
        return (json.loads(rows[0][0]), bool(rows[0][1])) if rows else None

    def list_activations(self, namespace: str, *, name: str | None = None, since: int | None = None,
                         upto: int | None = None, skip: int = 0, limit: int = 30) -> list[dict[str, Any]]:
        """Completed activations, newest first, filtered like OpenWhisk's list."""
        where, args = self._filter(namespace, name, since, upto)
        rows = self._run(
            f"SELECT doc FROM activations WHERE {where} ORDER BY start DESC, id LIMIT ? OFFSET ?",
            (*args, limit, skip),
        )
        return [json.loads(r[0]) for r in rows]

    def count_activations(self, namespace: str, *, name: str | None = None, since: int | None = None,
                          upto: int | None = None) -> int:
        where, args = self._filter(namespace, name, since, upto)
        return self._run(f"SELECT COUNT(*) FROM activations WHERE {where}", args)[0][0]

    @staticmethod
    def _filter(namespace: str, name: str | None, since: int | None, upto: int | None) -> tuple[str, tuple]:
        clauses, args = ["namespace=?", "done=1"], [namespace]
        if name:
            # "hello" matches the action name, "pkg/hello" the path after the namespace.
            clauses.append("(name=? OR path=?)")
            args += [name, f"{namespace}/{name}"]
        if since is not None:
            clauses.append("start>=?")
            args.append(since)
        if upto is not None:
            clauses.append("start<=?")
            args.append(upto)
        return " AND ".join(clauses), tuple(args)

    def in_flight(self) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in self._run("SELECT doc FROM activations WHERE done=0")]


def _annotation(record: dict[str, Any], key: str) -> Any:
    for a in record.get("annotations", []):
        if a.get("key") == key:
            return a.get("value")
    return None


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
