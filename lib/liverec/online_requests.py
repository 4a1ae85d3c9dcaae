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
class Request:
    user: int | None  # row of the bundle's users, None for a visitor without history
    session: list[Event]  # newest first
    viewing: int | None
    k: int
    exclude: set[int] = field(default_factory=set)
    ignored: list[str] = field(default_factory=list)  # item ids not in the catalogue, left out, in request order


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
    uindex: dict[str, int]  # pseudonymised user id -> user row
    weights: dict[str, float]  # clean.event_weights
    als_conf: Any  # the AlsSettings the bundle was built with

    def parse(self, record: dict[str, Any]) -> Request:
        m = self.meta
        unknown = sorted(set(record) - set(REQUEST_FIELDS))
        if unknown:
            raise _request_error(f"unknown request field(s) {unknown}; a request has {list(REQUEST_FIELDS)}")
        user = None
        raw_user = _plain(record.get("user_id"))
        if not _missing(raw_user):
            pseudo = pseudonymise_value(str(raw_user).strip(), self.key)
            user = self.uindex.get(pseudo)
            if user is None:
                raise _request_error(
                    f"unknown user_id {raw_user!r}: no profile in the model built for ds {m['ds']}; send "
                    "user_id null with the session for a visitor without history", not_found=True)
        raw_k = _plain(record.get("k"))
        k = m["default_k"] if _missing(raw_k) else raw_k
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= m["max_k"]:
            raise _request_error(f"k must be an integer from 1 to {m['max_k']}, got {raw_k!r}")
        ignored: list[str] = []
        raw_session = record.get("session")
        session = self._session(raw_session, ignored)
        viewing = None if _missing(record.get("viewing")) else self._item(record["viewing"], "viewing", ignored)
        raw_ex = record.get("exclude")
        raw_ex = [] if _missing(raw_ex) else raw_ex
        if not isinstance(raw_ex, (list, tuple, np.ndarray)):
            raise _request_error(f"exclude must be a list of item ids, got {type(raw_ex).__name__}")
        if len(raw_ex) > m["max_exclude"]:
            raise _request_error(f"exclude has {len(raw_ex)} items; at most {m['max_exclude']} are accepted")
        exclude = {at for i in raw_ex if (at := self._item(i, "exclude", ignored)) is not None}
        asked = (not _missing(raw_session) and len(raw_session) > 0) or not _missing(record.get("viewing"))
        if user is None and not asked:
            raise _request_error("a request needs a known user_id, a session or a viewed item")
        # a visitor whose every item is new since the nightly run gets the popular items, not an error
        return Request(user, session, viewing, int(k), exclude, ignored)

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
