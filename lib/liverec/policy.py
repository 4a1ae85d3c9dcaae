"""Content policy: the items that must never reach a user, and why.

Two CSV files name them (``policy.blocked_items``: ``item_id,reason``; ``policy.blocked_categories``:
``category,reason``; a header line, one entry per line, a reason for every entry). An item is blocked when it is
named, or when one of its catalogue categories is. :func:`resolve` turns the rules and the day's catalogue into
one :class:`Blocked` set; every publishing path removes those items before its top N is cut, so a list still has
N items when there are N others to give:

- the nightly table (``recommend_nightly``): the ranked path drops them from every user's candidates
  (``liverec.candidates.union``); the baseline chain's EASE, ALS, content and popularity lists never score them
  (``liverec.fallback.nightly``); the job then checks that no published row holds one;
- the online answers (``liverec.online``): the bundle carries a ``blocked`` mask over its catalogue, and the
  scorer bans those items from every candidate source (the store's nightly rows, neighbours, EASE, ALS, the
  popular list a degraded answer falls back to).

Empty paths (the default) block nothing.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from liverec.config import PolicySettings
from liverec.errors import InputError

ITEMS_BLOCKED = "policy.items_blocked"  # the MLflow param both publishing jobs log: how many items the policy blocks


@dataclass(frozen=True)
class Rules:
    items: dict[str, str] = field(default_factory=dict)  # item_id -> reason
    categories: dict[str, str] = field(default_factory=dict)  # category -> reason

    @property
    def empty(self) -> bool:
        return not self.items and not self.categories


@dataclass(frozen=True)
class Blocked:
    """The blocked items of one catalogue: item_id -> reason (a named item's own reason wins over its category's)."""

    reasons: dict[str, str] = field(default_factory=dict)
    by_item: int = 0  # items blocked by name
    by_category: int = 0  # further items blocked through a category (catalogue items only)

    @property
    def ids(self) -> list[str]:
        return sorted(self.reasons)

    def __len__(self) -> int:
        return len(self.reasons)

    def mask(self, item_ids: np.ndarray | list[str]) -> np.ndarray:
        """Which of ``item_ids`` are blocked (bool per id): the candidate arrays' and the online bundle's mask."""
        return np.isin(np.asarray(item_ids, dtype=object), np.asarray(self.ids, dtype=object))

    def metrics(self) -> dict[str, int]:
        """The counts a run logs (progress line and MLflow params)."""
        return {ITEMS_BLOCKED: len(self), "policy.items_blocked_by_name": self.by_item,
                "policy.items_blocked_by_category": self.by_category}


def _read(path: str, key_col: str, conf_key: str) -> dict[str, str]:
    """{key: reason} from a CSV file with a ``key_col,reason`` header; InputError naming ``conf_key`` otherwise."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{conf_key} names {path}, which is not a file (a CSV with a header {key_col},reason)")
    out: dict[str, str] = {}
    with p.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or key_col not in reader.fieldnames or "reason" not in reader.fieldnames:
            raise InputError(f"{conf_key} ({path}) must have a header with the columns {key_col},reason; "
                             f"it has {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            key, reason = (row.get(key_col) or "").strip(), (row.get("reason") or "").strip()
            if not key and not reason:
                continue  # a blank line
            if not key or not reason:
                raise InputError(f"{conf_key} ({path}) line {line}: every entry needs a {key_col} and a reason "
                                 f"(got {key_col}={key!r}, reason={reason!r})")
            out.setdefault(key, reason)
    return out


def rules(conf: PolicySettings) -> Rules:
    """The configured rules (empty when both paths are empty)."""
    items = _read(conf.blocked_items, "item_id", "policy.blocked_items") if conf.blocked_items else {}
    cats = _read(conf.blocked_categories, "category", "policy.blocked_categories") if conf.blocked_categories else {}
    return Rules(items, cats)


def resolve(r: Rules, items: DataFrame) -> Blocked:
    """The items ``r`` blocks in the catalogue ``items`` (item_id, categories array): the named ones (whether or
    not the catalogue holds them) and the catalogue's items in a blocked category."""
    if r.empty:
        return Blocked()
    reasons = dict(r.items)
    by_category = 0
    if r.categories:
        cats = F.array(*[F.lit(c) for c in sorted(r.categories)])
        hits = (items.where(F.arrays_overlap(F.coalesce("categories", F.array().cast("array<string>")), cats))
                .select("item_id", F.array_sort(F.array_intersect("categories", cats)).alias("hit")).collect())
        for row in hits:
            if row["item_id"] not in reasons:
                c = row["hit"][0]
                reasons[row["item_id"]] = f"category {c}: {r.categories[c]}"
                by_category += 1
    return Blocked(reasons, len(r.items), by_category)


def load(conf: PolicySettings, items: DataFrame) -> Blocked:
    """:func:`resolve` of the configured rules over the catalogue ``items``."""
    return resolve(rules(conf), items)


def frame(blocked: Blocked, spark) -> DataFrame:  # noqa: ANN001 (a SparkSession)
    """(item_id, reason) rows of the blocked items."""
    return spark.createDataFrame(sorted(blocked.reasons.items()), "item_id string, reason string")


def leaks(rows: DataFrame, blocked: Blocked) -> int:
    """How many of ``rows`` (item_id) hold a blocked item: 0, or a bug the publishing job refuses to publish."""
    if not len(blocked):
        return 0
    return rows.join(F.broadcast(frame(blocked, rows.sparkSession)), "item_id", "left_semi").count()
