"""A dict-backed stand-in for the few redis-py commands the arrivals watcher and router use."""

from __future__ import annotations


class FakeRedis:
    """The few commands the watcher uses, on dicts (decode_responses=True semantics)."""

    def __init__(self) -> None:
        self.kv: dict[str, str] = {}
        self.hashes: dict[str, dict[str, str]] = {}
        self.lists: dict[str, list[str]] = {}

    def get(self, key):
        return self.kv.get(key)

    def set(self, key, value, nx=False, ex=None):
        if nx and key in self.kv:
            return None
        self.kv[key] = str(value)
        return True

    def hset(self, key, field=None, value=None, mapping=None):
        h = self.hashes.setdefault(key, {})
        if field is not None:
            h[field] = str(value)
        h.update({k: str(v) for k, v in (mapping or {}).items()})

    def hgetall(self, key):
        return dict(self.hashes.get(key, {}))

    def hget(self, key, field):
        return self.hashes.get(key, {}).get(field)

    def hsetnx(self, key, field, value):
        h = self.hashes.setdefault(key, {})
        if field in h:
            return 0
        h[field] = str(value)
        return 1

    def hkeys(self, key):
        return list(self.hashes.get(key, {}))

    def hvals(self, key):
        return list(self.hashes.get(key, {}).values())

    def delete(self, *keys):
        for key in keys:
            self.kv.pop(key, None)
            self.hashes.pop(key, None)

    def expire(self, key, seconds):  # expiry is not modelled: a test drops a key to stand for it
        return key in self.kv or key in self.hashes

    def lpush(self, key, *values):
        self.lists.setdefault(key, [])[:0] = list(reversed(values))

    def ltrim(self, key, start, end):
        self.lists[key] = self.lists.get(key, [])[start:end + 1]

    def lrange(self, key, start, end):
        return self.lists.get(key, [])[start:end + 1]

    def hdel(self, key, *fields):
        for f in fields:
            self.hashes.get(key, {}).pop(f, None)

    def pipeline(self):
        redis, calls = self, []

        class Pipe:
            def __getattr__(self, name):
                return lambda *a, **k: calls.append((name, a, k))

            def execute(self):
                for name, a, k in calls:
                    getattr(redis, name)(*a, **k)
        return Pipe()
