"""liverec.online_store on its two real back ends (a SQLite file, a real redis-server): generations and their atomic
flip, recent values, deletion, failures and recovery. The expected values are written out by hand."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest

from liverec.online_store import (
    OnlineStore,
    RedisStore,
    SqliteStore,
    StoreUnavailable,
    open_store,
    profiles_table,
    redacted,
)
from tests.conftest import free_port

D1, D2, D3 = "2024-01-01", "2024-01-02", "2024-01-03"


class Boom(Exception):
    """The records' own failure (not a back-end error)."""


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request, tmp_path: Path) -> tuple[str, dict]:
    """(url, open_store keywords): a SQLite file in tmp_path, or the session's redis-server under a fresh prefix."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}", {}
    return request.getfixturevalue("redis_server"), {"prefix": f"t-{uuid.uuid4().hex[:8]}"}


@pytest.fixture
def opener(store_url):
    """Opens stores on the test's url (each a separate connection/client); closes them after the test."""
    url, kwargs = store_url
    opened: list[OnlineStore] = []

    def open_(**extra) -> OnlineStore:
        store = open_store(url, **{**kwargs, **extra})
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(opener) -> OnlineStore:
    return opener()


def name_of(store: OnlineStore, gen: str) -> str:
    """The back end's name for a generation's rows: its SQLite table or its Redis hash."""
    return profiles_table(gen) if isinstance(store, SqliteStore) else f"{store.prefix}:gen:{gen}"


def peek(store: OnlineStore) -> dict[str, dict[str, bytes]]:
    """Every generation's rows the back end holds (held, being loaded or left over), read past the store's API."""
    if isinstance(store, SqliteStore):
        con = sqlite3.connect(store.path)
        try:
            names = [r[0] for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'profiles_*'")]
            return {n: dict(con.execute(f'SELECT user, value FROM "{n}"')) for n in names}
        finally:
            con.close()
    import redis

    client = redis.Redis.from_url(store.url)
    try:
        keys = client.keys(f"{store.prefix}:gen:*")
        return {k.decode(): {f.decode(): v for f, v in client.hgetall(k).items()} for k in keys}
    finally:
        client.close()


def held_names(store: OnlineStore) -> set[str]:
    return {name_of(store, g) for g in store.generations()}


def test_empty_store(store):
    assert list(store.profiles()) == []
    assert store.current() is None
    assert store.lookup("u1") == (None, None)
    assert store.count() == 0
    assert store.generations() == []
    assert store.get_recent(["u1"]) == {}
    store.ping()


def test_publish_then_lookup(store):
    written = store.publish(D1, [("u1", b"p1"), ("u2", b"p2"), ("u1", b"p1-last")], batch=2)
    assert written == 2  # u1 twice: the last value wins, one row
    assert store.current() == D1
    assert store.count() == 2
    assert store.lookup("u1") == (b"p1-last", None)
    assert store.lookup("u2") == (b"p2", None)
    assert store.lookup("u3") == (None, None)
    [gen] = store.generations()
    assert gen.startswith(f"{D1}.") and len(gen) == len(D1) + 9
    assert sorted(store.profiles(batch=1)) == [("u1", b"p1-last"), ("u2", b"p2")]  # paged one at a time


def test_load_invisible_until_flip_and_two_generations_kept(store, opener):
    assert store.publish(D1, [("u1", b"a1"), ("u2", b"a2"), ("u3", b"a3")]) == 3
    [gen1] = store.generations()
    other = opener()  # a second connection / client on the same store
    during = {}

    def records():
        for i in range(1, 7):
            if i == 5:  # two batches of 2 (u1..u4) are written by now
                loading = {k: v for k, v in peek(store).items() if k not in held_names(store)}
                during.update(u1=other.lookup("u1"), u4=other.lookup("u4"), u3_same=store.lookup("u3"),
                              current=other.current(), count=other.count(), generations=other.generations(),
                              loading=list(loading.values()))
            yield f"u{i}", f"b{i}".encode()

    assert store.publish(D2, records(), batch=2) == 6
    assert during == {"u1": (b"a1", None), "u4": (None, None), "u3_same": (b"a3", None), "current": D1, "count": 3,
                      "generations": [gen1], "loading": [{"u1": b"b1", "u2": b"b2", "u3": b"b3", "u4": b"b4"}]}
    for reader in (store, other):
        assert reader.current() == D2
        assert reader.lookup("u1") == (b"b1", None)
        assert reader.lookup("u6") == (b"b6", None)
        assert reader.count() == 6
    gen1_, gen2 = store.generations()
    assert gen1_ == gen1 and gen2.startswith(f"{D2}.")
    assert peek(store)[name_of(store, gen1)] == {"u1": b"a1", "u2": b"a2", "u3": b"a3"}  # the previous, kept

    assert store.publish(D3, [("u9", b"c9")]) == 1
    gen2_, gen3 = store.generations()
    assert gen2_ == gen2 and gen3.startswith(f"{D3}.")
    assert set(peek(store)) == {name_of(store, gen2), name_of(store, gen3)}  # the oldest is gone
    assert other.current() == D3
    assert other.lookup("u1") == (None, None)
    assert other.lookup("u9") == (b"c9", None)
    assert other.count() == 1


def test_same_ds_rerun_is_a_new_generation(store):
    store.publish(D1, [("u1", b"x1"), ("u2", b"x2")])
    [gen1] = store.generations()
    assert store.publish(D1, [("u1", b"y1")]) == 1
    gen1_, gen2 = store.generations()
    assert gen1_ == gen1 and gen2 != gen1 and gen2.startswith(f"{D1}.")
    assert store.current() == D1
    assert store.lookup("u1") == (b"y1", None)
    assert store.lookup("u2") == (None, None)
    assert store.count() == 1


def test_publish_of_no_records(store):
    store.publish(D1, [("u1", b"a1")])
    assert store.publish(D2, iter(())) == 0
    assert store.current() == D2
    assert store.count() == 0
    assert store.lookup("u1") == (None, None)
    assert len(store.generations()) == 2


@pytest.mark.parametrize("failure", ["raises", "not bytes"])
def test_failed_publish_changes_nothing(store, opener, failure):
    store.publish(D1, [("u1", b"a1"), ("u2", b"a2")])
    before = store.generations()

    def records():
        yield from [("u1", b"z1"), ("u2", b"z2"), ("u3", b"z3")]  # one batch of 2 written, then the failure
        if failure == "raises":
            raise Boom("the source broke")
        yield "u4", "a str, not bytes"

    with pytest.raises(Boom if failure == "raises" else TypeError):
        store.publish(D2, records(), batch=2)
    for reader in (store, opener()):
        assert reader.current() == D1
        assert reader.generations() == before
        assert reader.lookup("u1") == (b"a1", None)
        assert reader.lookup("u3") == (None, None)
        assert reader.count() == 2
    assert set(peek(store)) == held_names(store)  # the partial rows are removed
    assert store.publish(D2, [("u3", b"b3")]) == 1  # and the store goes on
    assert store.lookup("u3") == (b"b3", None)


def test_recent_values_and_delete_users(store):
    assert store.put_recent([("u1", b"r1"), ("u9", b"r9")]) == 2
    assert store.lookup("u1") == (None, b"r1")  # no generation yet
    assert store.get_recent(["u1", "u2", "u9", "u1"]) == {"u1": b"r1", "u9": b"r9"}

    store.publish(D1, [("u1", b"p1"), ("u2", b"p2")])
    assert store.lookup("u1") == (b"p1", b"r1")
    assert store.put_recent([("u1", b"r1-new")]) == 1
    assert store.lookup("u1") == (b"p1", b"r1-new")
    store.publish(D2, [("u1", b"q1"), ("u3", b"q3")])
    assert store.lookup("u1") == (b"q1", b"r1-new")  # not generation-scoped: kept over a publish
    assert store.put_recent([]) == 0
    assert store.get_recent([]) == {}

    # u1: its row in both generations and its recent value; "nobody": nothing
    assert store.delete_users(["u1", "nobody"]) == 3
    assert store.lookup("u1") == (None, None)
    assert store.get_recent(["u1", "u9"]) == {"u9": b"r9"}
    gen1, gen2 = store.generations()
    assert peek(store) == {name_of(store, gen1): {"u2": b"p2"}, name_of(store, gen2): {"u3": b"q3"}}
    assert store.delete_users(["u2"]) == 1  # in the previous generation only
    assert store.count() == 1
    assert store.delete_users([]) == 0


def test_get_recent_many(store):
    """More users than one IN (...) / MGET chunk (500)."""
    assert store.put_recent([(f"u{i}", b"v%d" % i) for i in range(1200)]) == 1200
    got = store.get_recent([f"u{i}" for i in range(0, 1400, 2)])
    assert got == {f"u{i}": b"v%d" % i for i in range(0, 1200, 2)}


def test_readers_see_old_or_new_never_a_mix(store, opener):
    """A reader looping over lookups while another connection publishes sees the old values until one moment,
    the new ones after it."""
    users = [f"u{i}" for i in range(3000)]
    store.publish(D1, [(u, b"old") for u in users])
    publisher = opener()
    done = threading.Event()
    errors: list[BaseException] = []

    def publish():
        try:
            publisher.publish(D2, [(u, b"new") for u in users], batch=500)
        except BaseException as e:  # noqa: B036 - reported by the test below
            errors.append(e)
        finally:
            done.set()

    thread = threading.Thread(target=publish)
    seen = []
    thread.start()
    i = 0
    while not done.is_set():
        seen.append(store.lookup(users[i % len(users)])[0])
        i += 7
    thread.join()
    assert errors == []
    seen.append(store.lookup(users[0])[0])
    assert set(seen) <= {b"old", b"new"}
    first_new = seen.index(b"new")
    assert set(seen[first_new:]) == {b"new"}, "an old value after the flip"


def test_redis_unreachable_fails_fast():
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    store = open_store(url, timeout_s=0.2, prefix="nowhere")
    assert isinstance(store, RedisStore)
    for call in (lambda: store.lookup("u1"), store.ping, lambda: store.publish(D1, [("u1", b"x")]),
                 lambda: store.put_recent([("u1", b"x")]), store.current):
        start = time.monotonic()
        with pytest.raises(StoreUnavailable, match=url) as info:
            call()
        assert time.monotonic() - start < 2.0
        assert info.value.__cause__ is not None
    store.close()


def test_redis_password_is_masked():
    assert redacted("redis://:s3cret@127.0.0.1:1/0") == "redis://:***@127.0.0.1:1/0"
    store = open_store(f"redis://app:s3cret@127.0.0.1:{free_port()}/0", timeout_s=0.2)
    with pytest.raises(StoreUnavailable) as info:
        store.ping()
    assert "s3cret" not in str(info.value) and "app:***@127.0.0.1" in str(info.value)
    assert "s3cret" not in repr(store)
    store.close()


def test_redis_recovers_after_a_restart(redis_restartable):
    import redis

    server = redis_restartable
    store = open_store(server.url, timeout_s=0.2, prefix="restart")
    store.publish(D1, [("u1", b"a1")])
    assert store.lookup("u1") == (b"a1", None)

    server.stop()
    for call in (lambda: store.lookup("u1"), store.ping, lambda: store.publish(D2, [("u1", b"b1")])):
        start = time.monotonic()
        with pytest.raises(StoreUnavailable, match="127.0.0.1"):
            call()
        assert time.monotonic() - start < 2.0

    server.start()  # the same port, empty: --save ""
    raw = redis.Redis.from_url(server.url)
    assert raw.script_exists(store._lookup.sha) == [False]
    assert store.lookup("u1") == (None, None)  # the same object: reconnected, NOSCRIPT -> EVAL
    assert raw.script_exists(store._lookup.sha) == [True]
    assert store.current() is None
    assert store.publish(D2, [("u1", b"b1"), ("u2", b"b2")]) == 2
    assert store.lookup("u1") == (b"b1", None)
    assert store.count() == 2
    assert store.current() == D2

    server.stop()  # a restart between two calls: the pooled connection is stale, the next call goes through
    server.start()
    assert store.lookup("u1") == (None, None)
    raw.close()
    store.close()


def test_sqlite_locked_and_unopenable(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    store = open_store(url, timeout_s=0.2)
    store.publish(D1, [("u1", b"a1")])
    store.put_recent([("u1", b"r1")])

    writer = sqlite3.connect(tmp_path / "store.sqlite", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
    writer.execute("INSERT OR REPLACE INTO recent (user, value, updated_at) VALUES ('u1', x'00', 0)")
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match="locked") as info:
        store.put_recent([("u1", b"r1-new")])
    assert time.monotonic() - start < 2.0
    assert url in str(info.value)
    assert store.lookup("u1") == (b"a1", b"r1")  # WAL: readers go on while another connection writes
    with open_store(url, timeout_s=0.2) as reader:  # and an existing store opens without writing
        assert reader.lookup("u1") == (b"a1", b"r1")
    writer.execute("ROLLBACK")
    writer.close()
    assert store.put_recent([("u1", b"r1-new")]) == 1
    assert store.lookup("u1") == (b"a1", b"r1-new")
    store.close()

    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(StoreUnavailable, match="afile"):
        open_store(f"sqlite:///{tmp_path / 'afile' / 'store.sqlite'}")


def test_sqlite_paths(tmp_path, monkeypatch):
    store = open_store(f"sqlite:///{tmp_path / 'deep' / 'er' / 'store.sqlite'}")  # sqlite:////abs/...
    assert isinstance(store, SqliteStore) and (tmp_path / "deep" / "er" / "store.sqlite").is_file()
    store.publish(D1, [("u1", b"a1")])
    store.close()
    with open_store(f"sqlite:///{tmp_path / 'deep' / 'er' / 'store.sqlite'}") as again:  # kept in the file
        assert again.current() == D1 and again.lookup("u1") == (b"a1", None)
        assert sqlite3.connect(again.path).execute("PRAGMA journal_mode").fetchone() == ("wal",)

    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///rel/store.sqlite") as relative:
        assert relative.current() is None
    assert (tmp_path / "rel" / "store.sqlite").is_file()


@pytest.mark.parametrize("url", ["memcached://127.0.0.1:11211", "sqlite://rel/store.sqlite", "sqlite:///",
                                 "/tmp/store.sqlite", "", "http://127.0.0.1:6379/0"])
def test_open_store_rejects_unknown_urls(url):
    with pytest.raises(ValueError, match=r"sqlite:////abs/path/store\.sqlite.*redis://host:port/db"):
        open_store(url)
