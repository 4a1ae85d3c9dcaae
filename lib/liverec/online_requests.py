"""Online requests: their fields, the parsed ``Request`` and ``Event``, and the checks that turn a record into one.

A request (one row of ``dataframe_records``) carries ``user_id``, ``session``, ``viewing``, ``k`` and
``exclude``; :class:`RequestParsing` (a mixin of ``liverec.online.OnlineScorer``, which holds the bundle's
catalogue and user indexes, the event weights and the ALS settings it reads) validates a record against the
bundle and resolves it to catalogue and user rows. A bad request raises :func:`_request_error`'s
MlflowException, which the scoring server answers with 400 (404 for an unknown user). A well-formed item id
that is not in the bundle's catalogue (an item new since the nightly run) is not an error: its session event,
``viewing`` or ``exclude`` entry is left out and the id kept in ``Request.ignored``, which the answer reports.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from liverec.als import event_strength_value
from liverec.cleaning import pseudonymise_value

REQUEST_FIELDS = ("user_id", "session", "viewing", "k", "exclude")
SESSION_FIELDS = ("item_id", "event_type", "ts", "value")


def _request_error(message: str, not_found: bool = False) -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST

    return MlflowException(message, error_code=RESOURCE_DOES_NOT_EXIST if not_found else INVALID_PARAMETER_VALUE)


@dataclass
class Event:
    item: int
    event_type: str
    ts: float  # epoch seconds (request order when absent)
    strength: float


@dataclass
class UserState:
    """A known user as the online store holds them (liverec.online_bundle.user_records' JSON record), resolved
    to the served catalogue's rows (items the catalogue lacks are dropped)."""

    user_id: str  # pseudonymised
    stats: np.ndarray  # liverec.features.USER_STATS
    content: np.ndarray | None  # the profile's unit content vector
    affinity: dict[str, float]  # category shares
    recent: list[int]  # the profile's recent items, newest first
    seen_idx: np.ndarray  # items of the history ...
    seen_val: np.ndarray  # ... and their ALS strengths (0 outside ALS's window)
    friend_idx: np.ndarray  # every item a friend chose, best first ...
    friend_n: np.ndarray  # ... how many friends chose each ...
    friend_of: dict[int, str]  # ... and one of them for the first recommend.friend_candidates (for reasons)
    nightly_idx: np.ndarray  # the nightly rows in rank order ...
    nightly_reason: dict[int, str]  # ... and their reasons
    factor: np.ndarray | None  # the nightly ALS factor
    as_of: float | None  # epoch seconds of the newest event the profile holds: stream events after it are new

    @classmethod
    def decode(cls, user_id: str, raw: bytes, index: dict[str, int], dim: int) -> UserState:
        import orjson

        d = orjson.loads(raw)

        def rows(ids: list[str]) -> np.ndarray:
            return np.fromiter((index.get(i, -1) for i in ids), dtype=np.int64, count=len(ids))

        seen = rows(d["seen"])
        ok = seen >= 0
        fr = rows(d["friend_items"])
        fok = fr >= 0
        nt = rows(d["nightly"])
        content = d["content"]
        content = np.asarray(content, dtype=np.float32) if content and len(content) == dim else None
        factor = np.asarray(d["factor"], dtype=np.float32) if d["factor"] else None
        return cls(user_id, np.asarray(d["stats"], dtype=np.float64), content, d["affinity"] or {},
                   [int(i) for i in rows(d["recent"]) if i >= 0], seen[ok], np.asarray(d["strength"])[ok],
                   fr[fok], np.asarray(d["friend_n"], dtype=np.float32)[fok],
                   {int(i): str(a) for i, a in zip(fr[:len(d["friend_of"])], d["friend_of"], strict=True)
                    if i >= 0},  # the first friend_candidates only
                   nt[nt >= 0], {int(i): str(r) for i, r in zip(nt, d["nightly_reason"], strict=True) if i >= 0},
                   factor, d["as_of"])


@dataclass
class Request:
    user: UserState | None  # the known user, None for a visitor without history (or the store unreachable)
    session: list[Event]  # newest first: the request's own events and the stream's since the profile
    viewing: int | None
    k: int
    exclude: set[int] = field(default_factory=set)
    ignored: list[str] = field(default_factory=list)  # item ids not in the catalogue, left out, in request order
    warnings: list[str] = field(default_factory=list)  # degraded answers say why (the store unreachable)
    streamed: int = 0  # events of the session that came from the store's recent list (the stream), not the request
    pseudo: str | None = None  # the user's pseudonym (None for a visitor): what the impressions name
    explored: bool = False  # the answer was drawn by exploration (OnlineScorer.explore)
    pool: Any = None  # what exploration drew from (liverec.impressions.Pool: items, standardised scores, features)


def _plain(v: Any) -> Any:
    """numpy scalars (pandas hands them over) as Python ones; integral floats as ints."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return False


def _ts(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value) / 1000.0 if abs(value) > 1e11 else float(value)
    if isinstance(value, str):
        try:
            t = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()
    raise _request_error(f"{where}.ts must be epoch seconds or an ISO-8601 time, got {value!r}")


class RequestParsing:
    """``OnlineScorer.parse``: a request record -> :class:`Request`, checked against the bundle."""

    key: bytes
    meta: dict[str, Any]
    index: dict[str, int]  # item id -> catalogue row
    weights: dict[str, float]  # clean.event_weights
    als_conf: Any  # the AlsSettings the bundle was built with

    def parse(self, record: dict[str, Any]) -> Request:
        m = self.meta
        unknown = sorted(set(record) - set(REQUEST_FIELDS))
        if unknown:
            raise _request_error(f"unknown request field(s) {unknown}; a request has {list(REQUEST_FIELDS)}")
        user, streamed, warnings, pseudo = None, [], [], None
        raw_user = _plain(record.get("user_id"))
        if not _missing(raw_user):
            if not isinstance(raw_user, (str, int)) or isinstance(raw_user, bool) or not str(raw_user).strip():
                raise _request_error(f"user_id must be a string or an integer, got {raw_user!r}")
            pseudo = pseudonymise_value(str(raw_user).strip(), self.key)
            user, streamed, warning = self.lookup_user(pseudo)
            if warning:
                warnings.append(warning)
            elif user is None and not streamed:
                raise _request_error(
                    f"unknown user_id {raw_user!r}: no profile in the online store (built for ds "
                    f"{self.store_ds() or m['ds']}) and no recent events; send user_id null with the session for a "
                    "visitor without history", not_found=True)
        raw_k = _plain(record.get("k"))
        k = m["default_k"] if _missing(raw_k) else raw_k
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= m["max_k"]:
            raise _request_error(f"k must be an integer from 1 to {m['max_k']}, got {raw_k!r}")
        ignored: list[str] = []
        raw_session = record.get("session")
        session = self._session(raw_session, ignored)
        if streamed:  # the stream's events the profile does not hold yet, beside the request's own
            have = {(e.item, e.ts) for e in session}
            streamed = [e for e in streamed if (e.item, e.ts) not in have]
            order = sorted(session + streamed, key=lambda e: e.ts, reverse=True)
            session = order[:m["max_session"]]
        viewing = None if _missing(record.get("viewing")) else self._item(record["viewing"], "viewing", ignored)
        raw_ex = record.get("exclude")
        raw_ex = [] if _missing(raw_ex) else raw_ex
        if not isinstance(raw_ex, (list, tuple, np.ndarray)):
            raise _request_error(f"exclude must be a list of item ids, got {type(raw_ex).__name__}")
        if len(raw_ex) > m["max_exclude"]:
            raise _request_error(f"exclude has {len(raw_ex)} items; at most {m['max_exclude']} are accepted")
        exclude = {at for i in raw_ex if (at := self._item(i, "exclude", ignored)) is not None}
        asked = (not _missing(raw_session) and len(raw_session) > 0) or not _missing(record.get("viewing"))
        if user is None and not asked and not streamed and not warnings:
            raise _request_error("a request needs a known user_id, a session or a viewed item")
        # a visitor whose every item is new since the nightly run gets the popular items, not an error
        return Request(user, session, viewing, int(k), exclude, ignored, warnings, len(streamed), pseudo)

    def lookup_user(self, pseudo: str) -> tuple[UserState | None, list[Event], str | None]:
        raise NotImplementedError  # liverec.online.OnlineScorer reads the online store

    def store_ds(self) -> str | None:
        raise NotImplementedError

    def recent_events(self, raw: bytes | None, after: float | None) -> list[Event]:
        """The store's recent-event list of a user (the stream's: [item_id, event_type, ts, event_id] newest first)
        as session events, those newer than ``after`` only; items or types the model does not know are skipped."""
        if not raw:
            return []
        import orjson

        out = []
        for item_id, etype, ts, _ in orjson.loads(raw):
            at = self.index.get(str(item_id))
            if at is None or etype not in self.weights or (after is not None and ts <= after):
                continue
            out.append(Event(at, etype, float(ts), event_strength_value(self.als_conf, self.weights, etype, None)))
        return out

    def _item(self, raw: Any, where: str, ignored: list[str]) -> int | None:
        """The catalogue row of an item id; None (and the id appended to ``ignored``) for a well-formed id the
        catalogue does not hold. An id that is not a string or an integer is a bad request."""
        raw = _plain(raw)
        if not isinstance(raw, (str, int)) or isinstance(raw, bool) or not str(raw).strip():
            raise _request_error(f"{where}: an item id is a string or an integer, got {raw!r}")
        at = self.index.get(str(raw).strip())
        if at is None:
            ignored.append(str(raw).strip())
        return at

    def _session(self, raw: Any, ignored: list[str]) -> list[Event]:
        if _missing(raw):
            return []
        if not isinstance(raw, (list, tuple, np.ndarray)):
            raise _request_error(f"session must be a list of events, got {type(raw).__name__}")
        if len(raw) > self.meta["max_session"]:
            raise _request_error(f"session has {len(raw)} events; at most {self.meta['max_session']} are accepted "
                                 "(online.max_session): send the newest")
        out = []
        for n, e in enumerate(raw):
            where = f"session[{n}]"
            if not isinstance(e, dict):
                raise _request_error(f"{where} must be an object with item_id, event_type and ts")
            extra = sorted(set(e) - set(SESSION_FIELDS))
            if extra:
                raise _request_error(f"{where} has unknown field(s) {extra}; an event has {list(SESSION_FIELDS)}")
            if _missing(e.get("item_id")):
                raise _request_error(f"{where} lacks item_id")
            item = self._item(e["item_id"], where, ignored)
            etype = str(e.get("event_type") or "").strip().lower()
            if etype not in self.weights:
                raise _request_error(f"{where}.event_type {e.get('event_type')!r} is not one of "
                                     f"{sorted(self.weights)}")
            value = _plain(e.get("value"))
            if not _missing(value) and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                        or not math.isfinite(value)):
                raise _request_error(f"{where}.value must be a number, got {value!r}")
            # the batch's own strength rule (ALS's event_strength), for the fold-in
            w = event_strength_value(self.als_conf, self.weights, etype, None if _missing(value) else float(value))
            ts = float(n) if _missing(e.get("ts")) else _ts(_plain(e["ts"]), where)
            if item is not None:  # checked like the others, then left out: the catalogue does not know it
                out.append(Event(item, etype, ts, w))
        # newest first; equal times keep the later position as the newer
        order = sorted(range(len(out)), key=lambda i: (out[i].ts, i), reverse=True)
        return [out[i] for i in order]
