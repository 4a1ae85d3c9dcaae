"""The online feature store: per-user profiles published in *generations* by the batch, and each user's recent-events
value written by the stream, behind one small interface (:class:`OnlineStore`) with two real back ends.

Values are opaque bytes (the caller encodes them); keys are pseudonymised user ids. :func:`open_store` picks the
back end from a URL: ``sqlite:////abs/path/store.sqlite`` (or ``sqlite:///relative/path``) or
``redis://host:port/db`` (``rediss://`` for TLS).

Generations. ``publish(ds, records)`` writes a new generation ``f"{ds}.{uuid4().hex[:8]}"`` (a rerun of the same ds
is a new generation, never an in-place overwrite of the live one) in batches while readers keep reading the current
generation; then one atomic step makes the new generation current. After that step the store holds exactly the new
and the previous generation (the one that was current until then); older ones are deleted. A publish that fails
midway leaves the current generation as it was and removes its partial rows (best effort). The recent values are not
generation-scoped: the stream overwrites them at any time.

SQLite layout (stdlib ``sqlite3``, WAL journal, ``synchronous=NORMAL``, busy timeout = ``timeout_s``):

* ``meta(key TEXT PRIMARY KEY, value TEXT)``: ``current`` (the current generation id) and ``generations`` (a JSON
  list of the generation ids held, oldest first);
* ``profiles_<generation id, every character outside [0-9A-Za-z_] as "_">(user TEXT PRIMARY KEY, value BLOB)
  WITHOUT ROWID``: one table per generation;
* ``current_profiles``: a view on the current generation's table (on no rows before the first publish), so that
  :meth:`OnlineStore.lookup` is one prepared ``SELECT`` with two subqueries that reads the current generation and
  the recent value in one snapshot;
* ``recent(user TEXT PRIMARY KEY, value BLOB, updated_at REAL)``.

A generation is loaded in its own table, each batch its own committed transaction: under WAL, readers of the current
generation are never blocked by the load (nor by the recent writes). The flip is one ``BEGIN IMMEDIATE``
transaction that updates ``meta``, re-points the view and drops the tables of the generations older than the
previous one; a reader sees either the whole old state or the whole new one. The ``prefix`` of :func:`open_store`
does not apply (one store per file).

Redis layout (redis-py; all keys under ``prefix``):

* ``{prefix}:current``: string, the current generation id;
* ``{prefix}:generations``: list of the generation ids held, oldest first;
* ``{prefix}:gen:{gen}``: one HASH per generation, user -> value;
* ``{prefix}:recent:{user}``: string, the user's recent value.

A generation is loaded with pipelines of ``batch`` HSETs (``transaction=False``) into a hash no reader looks at.
The flip is one Lua script, atomic on the server: ``SET {prefix}:current gen``, the generations list set to
[previous, new] and the older generations' hashes UNLINKed (freed in the background). :meth:`OnlineStore.lookup`
is one ``EVALSHA`` of a read-only Lua script that reads the current pointer, the profile in that generation and the
recent value atomically; on ``NOSCRIPT`` (a server restarted empty, a flushed script cache) it falls back to
``EVAL``, which caches the script again. The scripts touch keys they compute from the pointer, so the Redis back end
is for a standalone server (or a primary with replicas), not a Redis Cluster.

Errors. Every back-end failure of a call (connection refused, a timeout, SQLite's "database is locked" past the
busy timeout, a file that cannot be opened) is raised as :class:`StoreUnavailable`, the cause chained, its message
naming the store's URL (a password in it masked). The Redis client reconnects by itself on the next call once the
server answers again (one immediate retry on a broken connection, no backoff: the request path fails fast).
"""

from __future__ import annotations

import abc
import hashlib
import json
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

__all__ = ["OnlineStore", "RedisStore", "SqliteStore", "StoreUnavailable", "open_store"]

T = TypeVar("T")
_CHUNK = 500  # users per SQLite IN (...) / Redis MGET, HDEL, DEL
_BYTES = (bytes, bytearray, memoryview)
ACCEPTED = "sqlite:////abs/path/store.sqlite, sqlite:///relative/path, redis://host:port/db or rediss://host:port/db"


class StoreUnavailable(RuntimeError):
    """The online store cannot be reached or did not answer (refused, timed out, locked, unreadable)."""


def redacted(url: str) -> str:
    """``url`` with the password, if any, replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


def generation_id(ds: str) -> str:
    return f"{ds}.{uuid.uuid4().hex[:8]}"


def ds_of(gen: str) -> str:
    """The ds a generation id was made for."""
    return gen.rsplit(".", 1)[0]


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _checked(user: str, value: Any) -> tuple[str, bytes]:
    if not isinstance(user, str):
        raise TypeError(f"online store keys are str user ids, got {type(user).__name__}")
    if not isinstance(value, _BYTES):
        raise TypeError(f"online store values are bytes (the caller encodes them), got {type(value).__name__}")
    return user, bytes(value)


class OnlineStore(abc.ABC):
    """Per-user profiles in generations plus each user's recent value; see the module docstring."""

    url: str

    @abc.abstractmethod
    def publish(self, ds: str, records: Iterable[tuple[str, bytes]], batch: int = 5000) -> int:
        """Load ``records`` (user, value) as a new generation of ``ds`` in batches of ``batch``, then make it current
        in one atomic step, keeping it and the previous generation only. The last value of a user repeated in
        ``records`` wins. Returns the rows the new generation holds (its distinct users). When it fails midway, the
        current generation is unchanged and the partial rows are removed (best effort); the error is raised
        (:class:`StoreUnavailable` for a back-end error, the records' own exception as it is)."""

    @abc.abstractmethod
    def current(self) -> str | None:
        """The ds of the current generation; None before the first publish."""

    @abc.abstractmethod
    def generations(self) -> list[str]:
        """The generation ids held, oldest first."""

    @abc.abstractmethod
    def lookup(self, user: str) -> tuple[bytes | None, bytes | None]:
        """(the user's profile in the current generation, the user's recent value), in one round trip."""

    @abc.abstractmethod
    def put_recent(self, rows: Iterable[tuple[str, bytes]]) -> int:
        """Overwrite each user's recent value, all in one transaction (SQLite) or MULTI/EXEC (Redis); the count."""

    @abc.abstractmethod
    def get_recent(self, users: Sequence[str]) -> dict[str, bytes]:
        """The recent values of ``users`` that exist."""

    @abc.abstractmethod
    def delete_users(self, users: Sequence[str]) -> int:
        """Remove the users' rows from every generation held (and from a generation being loaded: a user in its
        remaining records comes back, so a source should drop the user too) and their recent values; the rows
        removed."""

    @abc.abstractmethod
    def profiles(self, batch: int = 5000) -> Iterator[tuple[str, bytes]]:
        """Every (user, profile) of the current generation (a copy to another store, audits), ``batch`` at a time."""

    @abc.abstractmethod
    def count(self) -> int:
        """The users in the current generation."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` when the back end does not answer."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection(s)."""

    def __enter__(self) -> OnlineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redacted(self.url)!r})"

    def _unavailable(self, error: BaseException, doing: str) -> StoreUnavailable:
        return StoreUnavailable(f"online store {redacted(self.url)} unavailable ({doing}): "
                                f"{type(error).__name__}: {error}")


# --------------------------------------------------------------------------------------------------------- SQLite

_SQL_LOOKUP = ('SELECT (SELECT value FROM current_profiles WHERE user = ?), '
               '(SELECT value FROM recent WHERE user = ?)')
_SQL_EMPTY_VIEW = "SELECT CAST(NULL AS TEXT) AS user, CAST(NULL AS BLOB) AS value WHERE 0"


def profiles_table(gen: str) -> str:
    """The SQLite table of a generation."""
    return "profiles_" + re.sub(r"[^0-9A-Za-z_]", "_", gen)


class SqliteStore(OnlineStore):
    """The online store in one SQLite file (WAL): see the module docstring for the layout."""

    def __init__(self, url: str, path: str | Path, timeout_s: float = 0.5):
        self.url = url
        self.path = Path(path)
        self._lock = threading.RLock()  # one connection, shared by the caller's threads
        try:
            if str(self.path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None,
                                         check_same_thread=False, cached_statements=256)
        except (OSError, sqlite3.Error) as e:
            raise self._unavailable(e, "open") from e
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            if self._conn.execute("PRAGMA journal_mode").fetchall()[0][0].lower() != "wal":
                self._conn.execute("PRAGMA journal_mode = WAL")  # once per file: it stays WAL
            self._conn.execute("PRAGMA synchronous = NORMAL")
            schema = {r[0] for r in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE name IN ('meta', 'recent', 'current_profiles')").fetchall()}
            if len(schema) < 3:  # a new file: create the schema (an existing store is opened without a write)
                self._create_schema()
        except sqlite3.Error as e:
            self._conn.close()
            raise self._unavailable(e, "open") from e
        self._cursor = self._conn.cursor()  # the hot path's: no cursor made per lookup

    def _create_schema(self) -> None:
        with self._write():
            self._conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            self._conn.execute("CREATE TABLE IF NOT EXISTS recent (user TEXT PRIMARY KEY, value BLOB, updated_at REAL)")
            self._conn.execute(f"CREATE VIEW IF NOT EXISTS current_profiles AS {_SQL_EMPTY_VIEW}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: the write lock up front, waiting up to the busy timeout)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.rollback()
                raise
            self._conn.execute("COMMIT")

    def _call(self, doing: str, fn: Callable[[], T]) -> T:
        try:
            with self._lock:
                return fn()
        except sqlite3.Error as e:
            raise self._unavailable(e, doing) from e

    def _meta(self, key: str) -> str | None:
        rows = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchall()
        return rows[0][0] if rows else None

    def _held(self) -> list[str]:
        return json.loads(self._meta("generations") or "[]")

    def publish(self, ds: str, records: Iterable[tuple[str, bytes]], batch: int = 5000) -> int:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        gen = generation_id(ds)
        table = profiles_table(gen)
        insert = f'INSERT OR REPLACE INTO "{table}" (user, value) VALUES (?, ?)'
        flipping = False
        try:
            with self._lock:
                self._conn.execute(f'CREATE TABLE "{table}" (user TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID')
            rows: list[tuple[str, bytes]] = []
            for user, value in records:  # the lock is not held while the caller's records are produced
                rows.append(_checked(user, value))
                if len(rows) >= batch:
                    with self._write() as conn:
                        conn.executemany(insert, rows)
                    rows = []
            with self._write() as conn:
                conn.executemany(insert, rows)
                written = conn.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0]
                # the flip: meta and the view in one transaction, then the tables older than the previous one
                flipping = True
                previous = self._meta("current")
                keep = [g for g in (previous, gen) if g is not None]
                drop = [g for g in self._held() if g not in keep]
                conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                 [("current", gen), ("generations", json.dumps(keep))])
                conn.execute("DROP VIEW IF EXISTS current_profiles")
                conn.execute(f'CREATE VIEW current_profiles AS SELECT user, value FROM "{table}"')
                for old in drop:
                    conn.execute(f'DROP TABLE IF EXISTS "{profiles_table(old)}"')
            return written
        except BaseException as e:
            self._discard(gen, table, flipping)
            if isinstance(e, sqlite3.Error):
                raise self._unavailable(e, f"publish {gen}") from e
            raise

    def _discard(self, gen: str, table: str, flipping: bool) -> None:
        """Best effort: drop a failed publish's table, unless its flip did commit after all."""
        try:
            with self._lock:
                if self._conn.in_transaction:
                    self._conn.rollback()
                if flipping and self._meta("current") == gen:
                    return
                self._conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        except sqlite3.Error:
            pass

    def current(self) -> str | None:
        gen = self._call("current", lambda: self._meta("current"))
        return None if gen is None else ds_of(gen)

    def generations(self) -> list[str]:
        return self._call("generations", self._held)

    def lookup(self, user: str) -> tuple[bytes | None, bytes | None]:
        try:
            with self._lock:
                # fetchall: the statement runs to its end and is reset, holding no read snapshot between calls
                ((profile, recent),) = self._cursor.execute(_SQL_LOOKUP, (user, user)).fetchall()
        except sqlite3.Error as e:
            raise self._unavailable(e, "lookup") from e
        return profile, recent

    def put_recent(self, rows: Iterable[tuple[str, bytes]]) -> int:
        now = time.time()
        data = [(*_checked(user, value), now) for user, value in rows]
        try:
            with self._write() as conn:
                conn.executemany("INSERT OR REPLACE INTO recent (user, value, updated_at) VALUES (?, ?, ?)", data)
        except sqlite3.Error as e:
            raise self._unavailable(e, "put_recent") from e
        return len(data)

    def get_recent(self, users: Sequence[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(users))

        def read() -> dict[str, bytes]:
            out: dict[str, bytes] = {}
            for part in _chunks(wanted):
                marks = ",".join("?" * len(part))
                out.update(self._conn.execute(f"SELECT user, value FROM recent WHERE user IN ({marks})", part))
            return out

        return self._call("get_recent", read)

    def delete_users(self, users: Sequence[str]) -> int:
        wanted = list(dict.fromkeys(users))
        if not wanted:
            return 0
        try:
            with self._write() as conn:
                # every generation table there is: those held and one a publish is loading
                tables = [r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'profiles_*'")]
                removed = 0
                for part in _chunks(wanted):
                    marks = ",".join("?" * len(part))
                    for table in [*tables, "recent"]:
                        removed += conn.execute(f'DELETE FROM "{table}" WHERE user IN ({marks})', part).rowcount
        except sqlite3.Error as e:
            raise self._unavailable(e, "delete_users") from e
        return removed

    def profiles(self, batch: int = 5000) -> Iterator[tuple[str, bytes]]:
        last = ""
        while True:
            rows = self._call("profiles", lambda after=last: self._conn.execute(
                "SELECT user, value FROM current_profiles WHERE user > ? ORDER BY user LIMIT ?", (after, batch)
            ).fetchall())
            yield from rows
            if len(rows) < batch:
                return
            last = rows[-1][0]

    def count(self) -> int:
        return self._call("count", lambda: self._conn.execute("SELECT count(*) FROM current_profiles").fetchall()[0][0])

    def ping(self) -> None:
        self._call("ping", lambda: self._conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall())

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# ---------------------------------------------------------------------------------------------------------- Redis

# KEYS: current pointer, the user's recent key; ARGV: user, generation key prefix ("{prefix}:gen:")
_LUA_LOOKUP = """\
local gen = redis.call('GET', KEYS[1])
local profile = false
if gen then profile = redis.call('HGET', ARGV[2] .. gen, ARGV[1]) end
return {profile, redis.call('GET', KEYS[2])}
"""
# KEYS: current pointer; ARGV: generation key prefix
_LUA_COUNT = """\
local gen = redis.call('GET', KEYS[1])
if not gen then return 0 end
return redis.call('HLEN', ARGV[1] .. gen)
"""
# KEYS: current pointer, generations list; ARGV: new generation, generation key prefix. Idempotent (a retried
# flip keeps the true previous generation); returns the generations dropped.
_LUA_FLIP = """\
local previous = redis.call('GET', KEYS[1])
if previous == ARGV[1] then return {} end
local held = redis.call('LRANGE', KEYS[2], 0, -1)
local dropped = {}
for _, g in ipairs(held) do
  if g ~= previous and g ~= ARGV[1] then
    redis.call('UNLINK', ARGV[2] .. g)
    table.insert(dropped, g)
  end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
if previous then redis.call('RPUSH', KEYS[2], previous) end
redis.call('RPUSH', KEYS[2], ARGV[1])
return dropped
"""


class _Script:
    """A Lua script run by EVALSHA of its locally computed sha, EVAL (which caches it again) on NOSCRIPT."""

    def __init__(self, source: str, noscript: type[Exception]):
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self._noscript = noscript  # redis.exceptions.NoScriptError (redis is imported by RedisStore only)

    def __call__(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except self._noscript:
            return client.eval(self.source, len(keys), *keys, *args)


class RedisStore(OnlineStore):
    """The online store in a Redis server under ``prefix``: see the module docstring for the layout."""

    def __init__(self, url: str, timeout_s: float = 0.5, prefix: str = "liverec"):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self.prefix = prefix
        self._errors = (redis.RedisError,)
        self._r = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=0,
            # a pooled connection the server closed (a restart) is retried once, at once, on a new one; a timeout is
            # not retried: the request path fails within timeout_s
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)))
        self._k_current = f"{prefix}:current"
        self._k_generations = f"{prefix}:generations"
        self._k_gen = f"{prefix}:gen:"
        self._k_recent = f"{prefix}:recent:"
        self._lookup = _Script(_LUA_LOOKUP, redis.exceptions.NoScriptError)
        self._count = _Script(_LUA_COUNT, redis.exceptions.NoScriptError)
        self._flip = _Script(_LUA_FLIP, redis.exceptions.NoScriptError)

    def _call(self, doing: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except self._errors as e:
            raise self._unavailable(e, doing) from e

    def publish(self, ds: str, records: Iterable[tuple[str, bytes]], batch: int = 5000) -> int:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        gen = generation_id(ds)
        key = self._k_gen + gen
        flipping = False
        try:
            pipe = self._r.pipeline(transaction=False)
            pending = 0
            for user, value in records:
                pipe.hset(key, *_checked(user, value))
                pending += 1
                if pending >= batch:
                    pipe.execute()
                    pending = 0
            if pending:
                pipe.execute()
            written = int(self._r.hlen(key))
            flipping = True
            self._flip(self._r, [self._k_current, self._k_generations], [gen, self._k_gen])
            return written
        except BaseException as e:
            self._discard(gen, key, flipping)
            if isinstance(e, self._errors):
                raise self._unavailable(e, f"publish {gen}") from e
            raise

    def _discard(self, gen: str, key: str, flipping: bool) -> None:
        """Best effort: unlink a failed publish's hash, unless its flip did run after all."""
        try:
            if flipping and self._r.get(self._k_current) == gen.encode():
                return
            self._r.unlink(key)
        except self._errors:
            pass

    def current(self) -> str | None:
        gen = self._call("current", lambda: self._r.get(self._k_current))
        return None if gen is None else ds_of(gen.decode())

    def generations(self) -> list[str]:
        return [g.decode() for g in self._call("generations", lambda: self._r.lrange(self._k_generations, 0, -1))]

    def lookup(self, user: str) -> tuple[bytes | None, bytes | None]:
        try:
            profile, recent = self._lookup(self._r, (self._k_current, self._k_recent + user), (user, self._k_gen))
        except self._errors as e:
            raise self._unavailable(e, "lookup") from e
        return profile, recent

    def put_recent(self, rows: Iterable[tuple[str, bytes]]) -> int:
        data = [_checked(user, value) for user, value in rows]
        if not data:
            return 0

        def write() -> None:
            pipe = self._r.pipeline(transaction=True)
            for user, value in data:
                pipe.set(self._k_recent + user, value)
            pipe.execute()

        self._call("put_recent", write)
        return len(data)

    def get_recent(self, users: Sequence[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(users))
        if not wanted:
            return {}

        def read() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for part in _chunks(wanted):
                pipe.mget([self._k_recent + u for u in part])
            return [v for values in pipe.execute() for v in values]

        values = self._call("get_recent", read)
        return {u: v for u, v in zip(wanted, values, strict=True) if v is not None}

    def delete_users(self, users: Sequence[str]) -> int:
        wanted = list(dict.fromkeys(users))
        if not wanted:
            return 0

        def delete() -> int:
            # every generation hash there is: those held and one a publish is loading
            pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self._k_gen) + "*"
            hashes = list(self._r.scan_iter(match=pattern, count=1000, _type="hash"))
            pipe = self._r.pipeline(transaction=True)
            for part in _chunks(wanted):
                for h in hashes:
                    pipe.hdel(h, *part)
                pipe.delete(*[self._k_recent + u for u in part])
            return sum(int(n) for n in pipe.execute())

        return self._call("delete_users", delete)

    def profiles(self, batch: int = 5000) -> Iterator[tuple[str, bytes]]:
        gen = self._call("profiles", lambda: self._r.get(self._k_current))
        if gen is None:
            return
        key, cursor = self._k_gen + gen.decode(), 0
        while True:
            cursor, found = self._call("profiles", lambda c=cursor: self._r.hscan(key, c, count=batch))
            yield from ((u.decode(), v) for u, v in found.items())
            if cursor == 0:
                return

    def count(self) -> int:
        return int(self._call("count", lambda: self._count(self._r, [self._k_current], [self._k_gen])))

    def ping(self) -> None:
        self._call("ping", self._r.ping)

    def close(self) -> None:
        self._r.close()


# ----------------------------------------------------------------------------------------------------------- open

def open_store(url: str, timeout_s: float = 0.5, prefix: str = "liverec") -> OnlineStore:
    """The online store at ``url``: ``sqlite:////abs/path/store.sqlite`` or ``sqlite:///relative/path``
    (:class:`SqliteStore`, the file and its folder created when missing) or ``redis://host:port/db`` /
    ``rediss://host:port/db`` (:class:`RedisStore`, keys under ``prefix``; connects on the first call).
    ``timeout_s``: the connect and socket timeouts (Redis), the busy timeout (SQLite)."""
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return SqliteStore(url, url[len("sqlite:///"):], timeout_s)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("redis", "rediss"):
        return RedisStore(url, timeout_s=timeout_s, prefix=prefix)
    raise ValueError(f"unknown online store url {redacted(url)!r}: accepted forms are {ACCEPTED}")
