"""The right to be forgotten: a list of people's rows deleted from every table, the online store and the impression
files not yet collected, with a count per place in gold.forget_audit (never an id) and the models trained on their
data marked for retraining.

Ids come raw (as the sources give them) or already pseudonymised; either way the HMAC pseudonym is what silver, gold,
the online store and the impressions hold, and bronze, which keeps the raw ids, is matched by pseudonymising its
column: the raw id of a person given only as a pseudonym is still found there. Each table of ``tables.PERSONAL``
gets one Delta DELETE of the rows whose user columns name one of them (a social edge goes when either end does), then
a VACUUM with ``forget.vacuum_retain_hours`` so older versions (time travel) no longer hold them either. A second run
over the same list deletes nothing and vacuums nothing.

The event files in the streaming landing folder (``stream.landing``: raw ids, JSON lines or CSV) lose the people's
lines too, read by the stream or not: a file is rewritten under a hidden name and renamed into place, so one not
yet read is read without them and one already read, whose path the stream's checkpoint remembers, is not read
again.

Not covered (documented in docs/privacy.md): the derived rows of other people (a friend's ``friend_count``), and
item-level models (ALS item factors, EASE) until the next nightly run refits them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from liverec import tables

ONLINE_STORE = "store:online"
IMPRESSION_FILES = "files:impressions"
EVENT_FILES = "files:landing"


def read_ids(path: str | Path) -> list[str]:
    """One id per line; blank lines and lines starting with # are skipped. An empty list is an error."""
    from liverec.errors import InputError

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise InputError(f"--users {path}: {err.strerror or err}") from None
    ids = list(dict.fromkeys(x.strip() for x in lines if x.strip() and not x.strip().startswith("#")))
    if not ids:
        raise InputError(f"--users {path} names nobody (one id per line)")
    return ids


def pseudonyms(ids: Iterable[str], key: bytes, pseudonymised: bool) -> list[str]:
    """The pseudonyms of ``ids`` (given raw, or already pseudonymised: lower-case hex of 64 digits)."""
    from liverec.cleaning import pseudonymise_value
    from liverec.errors import InputError

    out = []
    for i in ids:
        if pseudonymised:
            if len(i) != 64 or any(c not in "0123456789abcdef" for c in i):
                raise InputError(f"--pseudonymised: {i[:12]}... is not a pseudonym (64 lower-case hex digits)")
            out.append(i)
        else:
            out.append(pseudonymise_value(i, key))
    return out


def delete_from_table(spark: Any, settings: Any, table: str, users: list[str], key: bytes) -> int:
    """Delete the rows of ``table`` whose user columns name one of the pseudonyms ``users``; the rows deleted (from
    the commit's own metrics; 0 and no commit when none match)."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from liverec import lakehouse
    from liverec.cleaning import pseudonymise

    columns, raw = tables.PERSONAL[table]
    df = lakehouse.read(spark, settings, table)
    if raw:  # the raw ids in this table whose pseudonym is one of them (few: the people to forget)
        wanted = spark.createDataFrame([(u,) for u in users], "p string")
        found: set[str] = set()
        for c in columns:
            values = df.select(F.col(c).alias("v")).where(F.col("v").isNotNull()).distinct()
            hits = values.withColumn("p", pseudonymise(F.col("v"), key)).join(F.broadcast(wanted), "p")
            found |= {r["v"] for r in hits.select("v").collect()}
        values = sorted(found)
    else:
        values = users
    if not values:
        return 0
    condition = None
    for c in columns:
        part = F.col(c).isin(values)
        condition = part if condition is None else condition | part
    if df.where(condition).limit(1).count() == 0:
        return 0
    target = DeltaTable.forPath(spark, tables.table_path(settings, table))
    target.delete(condition)
    metrics = target.history(1).collect()[0]["operationMetrics"] or {}
    return int(metrics.get("numDeletedRows", 0))


def vacuum(spark: Any, settings: Any, table: str, hours: int) -> None:
    """VACUUM ``table`` keeping ``hours`` of history (Delta refuses less than 168 unless its check is off: it is
    turned off for this call only)."""
    from delta.tables import DeltaTable

    key = "spark.databricks.delta.retentionDurationCheck.enabled"
    before = spark.conf.get(key, "true")
    spark.conf.set(key, "false")
    try:
        DeltaTable.forPath(spark, tables.table_path(settings, table)).vacuum(float(hours))
    finally:
        spark.conf.set(key, before)


def scrub_impression_files(folder: str, users: list[str]) -> int:
    """Remove the users' rows from the impression files waiting in ``folder`` (each file rewritten under a hidden
    name and renamed into place, as the servers write them); the rows removed."""
    wanted, removed = set(users), 0
    root = Path(folder.removeprefix("file://"))
    if not root.is_dir():
        return 0
    for path in sorted(root.glob("*.jsonl")):
        lines = path.read_bytes().splitlines()
        keep = [x for x in lines if not x.strip() or json.loads(x).get("user_id") not in wanted]
        if len(keep) == len(lines):
            continue
        removed += len(lines) - len(keep)
        _rewrite(path, b"\n".join(keep) + (b"\n" if keep else b""))
    return removed


def _rewrite(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.forget")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def scrub_event_files(folder: str, users: list[str], key: bytes, fmt: str) -> int:
    """Remove the users' events from the files in the streaming landing folder ``folder`` (``fmt`` json: JSON lines;
    csv: a header line naming the columns). The files hold raw ids: each line's ``user_id`` is pseudonymised and
    compared with ``users`` (pseudonyms). A line that does not parse is kept (the stream quarantines it). Each file
    with a line removed is rewritten under a hidden name and renamed into place; the lines removed."""
    import csv
    import io

    from liverec.cleaning import pseudonymise_value

    wanted, verdict = set(users), {}

    def gone(raw: Any) -> bool:
        if raw is None or raw == "":
            return False
        raw = str(raw)
        if raw not in verdict:
            verdict[raw] = pseudonymise_value(raw, key) in wanted
        return verdict[raw]

    root = Path(folder.removeprefix("file://"))
    if not root.is_dir():
        return 0
    removed = 0
    for path in sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith((".", "_"))):
        if fmt == "csv":
            rows = list(csv.reader(io.StringIO(path.read_text())))
            if not rows or "user_id" not in rows[0]:
                continue
            at = rows[0].index("user_id")
            keep = [rows[0], *[r for r in rows[1:] if not (len(r) > at and gone(r[at]))]]
            if len(keep) < len(rows):
                out = io.StringIO()
                csv.writer(out, lineterminator="\n").writerows(keep)
                _rewrite(path, out.getvalue().encode())
                removed += len(rows) - len(keep)
            continue
        lines = path.read_bytes().splitlines()
        keep = []
        for line in lines:
            try:
                row = json.loads(line) if line.strip() else None
            except ValueError:
                row = None
            if not (isinstance(row, dict) and gone(row.get("user_id"))):
                keep.append(line)
        if len(keep) < len(lines):
            _rewrite(path, b"\n".join(keep) + (b"\n" if keep else b""))
            removed += len(lines) - len(keep)
    return removed


def delete_from_store(settings: Any, users: list[str]) -> int:
    """The users' records and recent events removed from the online store (every generation it holds)."""
    from liverec.online_store import open_store

    conf, url = settings.online, tables.online_store_url(settings)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return 0  # no store published here (opening it would create an empty one)
    with open_store(url, conf.store_timeout_s, conf.store_prefix) as store:
        return store.delete_users(users)
