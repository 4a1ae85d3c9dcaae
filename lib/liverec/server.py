"""``liverec serve``: the online model behind a small ASGI app (Starlette, orjson, uvicorn).

The app loads ``models:/<online.registered_model>@<online.alias>`` (or a pinned version) from the MLflow
registry in the background, so ``/health`` answers at once and ``/ready`` says 503 until the model is in
memory. Each request is scored by the model's ``OnlineScorer``, which reads the online store
(``liverec.online_store``) for the user's profile and the stream's recent events. Every
``online.reload_seconds`` it asks the registry where the alias points; a moved alias is loaded in a thread
and swapped in between requests (a request in flight finishes on the model it started with), so no request
is dropped.

Routes:

- ``POST /invocations``: ``{"dataframe_records": [request, ...]}``, the body ``mlflow models serve`` takes;
  the answer is ``{"predictions": [row, ...]}`` with the pyfunc's ANSWER_COLUMNS;
- ``POST /recommend``: one request object (``user_id``, ``session``, ``viewing``, ``k``, ``exclude``);
  the answer is ``{"items": [...], "ignored_items": [...], "warnings": [...], "streamed": n, "model": ...,
  "request_id": ...}`` (the id its impressions carry, ``liverec.impressions``);
- ``GET /health`` (the process is up), ``GET /ready`` (a model is loaded: its version, ds and the store's state),
  ``GET /metrics`` (Prometheus text: requests, errors by kind, a latency histogram, the scorer's counters).

A malformed request gets a 4xx with a message (400 bad JSON or fields, 404 unknown user, 413 too large,
405 wrong method), counted by kind; the server keeps serving. With ``--workers N`` uvicorn runs N processes,
each with its own model and counters (``/metrics`` labels them with the worker's pid).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

log = logging.getLogger(__name__)

CONF_ENV = "LIVEREC_SERVE"  # JSON of ServeConfig, how `liverec serve` hands its settings to uvicorn's workers
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
ERROR_KINDS = ("bad_json", "bad_request", "unknown_user", "too_large", "not_ready", "internal")


@dataclass(frozen=True)
class ServeConfig:
    tracking_uri: str
    registered_model: str
    alias: str
    version: str | None  # a pinned version: no reloads
    reload_seconds: float
    max_body_bytes: int  # larger request bodies are answered 413

    def uri(self, version: str | None = None) -> str:
        v = version or self.version
        return f"models:/{self.registered_model}/{v}" if v else f"models:/{self.registered_model}@{self.alias}"


@dataclass
class Served:
    version: str
    scorer: Any  # liverec.online.OnlineScorer
    loaded_at: float


@dataclass
class Metrics:
    requests: int = 0
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    reloads: int = 0
    reload_failures: int = 0

    def observe(self, seconds: float) -> None:
        self.requests += 1
        self.latency_sum += seconds
        for n, b in enumerate(LATENCY_BUCKETS):
            if seconds <= b:
                self.buckets[n] += 1
                return
        self.buckets[-1] += 1

    def text(self, served: Served | None) -> str:
        pid = os.getpid()
        lab = f'worker="{pid}"'
        out = ["# HELP liverec_requests_total Requests answered (any status).", "# TYPE liverec_requests_total counter",
               f"liverec_requests_total{{{lab}}} {self.requests}",
               "# HELP liverec_errors_total Requests answered with an error, by kind.",
               "# TYPE liverec_errors_total counter"]
        out += [f'liverec_errors_total{{{lab},kind="{k}"}} {v}' for k, v in self.errors.items()]
        out += ["# HELP liverec_request_seconds Time from the request's body to its answer.",
                "# TYPE liverec_request_seconds histogram"]
        total = 0
        for b, n in zip((*LATENCY_BUCKETS, float("inf")), self.buckets, strict=True):
            total += n
            le = "+Inf" if b == float("inf") else repr(b)
            out.append(f'liverec_request_seconds_bucket{{{lab},le="{le}"}} {total}')
        out += [f"liverec_request_seconds_sum{{{lab}}} {self.latency_sum:.6f}",
                f"liverec_request_seconds_count{{{lab}}} {self.requests}",
                "# TYPE liverec_model_reloads_total counter", f"liverec_model_reloads_total{{{lab}}} {self.reloads}",
                "# TYPE liverec_model_reload_failures_total counter",
                f"liverec_model_reload_failures_total{{{lab}}} {self.reload_failures}"]
        if served is not None:
            from liverec.online import COUNTERS

            out += ["# HELP liverec_scorer_total The scorer's counters (store reads, misses, errors, degraded "
                    "answers, streamed events, unknown items).", "# TYPE liverec_scorer_total counter"]
            out += [f'liverec_scorer_total{{{lab},counter="{c}"}} {served.scorer.counters[c]}' for c in COUNTERS]
            out += ["# TYPE liverec_model_version gauge",
                    f'liverec_model_version{{{lab},ds="{served.scorer.meta["ds"]}"}} {served.version}']
        return "\n".join(out) + "\n"


class Server:
    """The model the app serves, its reloads and its counters."""

    def __init__(self, conf: ServeConfig):
        self.conf = conf
        self.served: Served | None = None
        self.metrics = Metrics()
        self.load_error: str | None = None
        self._lock = threading.Lock()

    # ----- the model
    def _client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.conf.tracking_uri)

    def target_version(self) -> str:
        if self.conf.version:
            return str(self.conf.version)
        return str(self._client().get_model_version_by_alias(self.conf.registered_model, self.conf.alias).version)

    def load(self, version: str) -> Served:
        import mlflow

        from liverec import tracking

        with tracking.caller_environment_kept():
            mlflow.set_tracking_uri(self.conf.tracking_uri)
            model = mlflow.pyfunc.load_model(self.conf.uri(version))
        return Served(version, model.unwrap_python_model().scorer, time.time())

    def refresh(self) -> bool:
        """Load the version the alias names when it is not the one served; True when it swapped."""
        with self._lock:
            try:
                version = self.target_version()
                if self.served is not None and self.served.version == version:
                    return False
                served = self.load(version)
            except Exception as err:  # noqa: BLE001 (a failed reload keeps the old model serving)
                self.metrics.reload_failures += 1
                self.load_error = f"{type(err).__name__}: {err}"
                log.warning("loading %s failed: %s", self.conf.uri(), self.load_error)
                return False
            old, self.served, self.load_error = self.served, served, None
            if old is not None:
                self.metrics.reloads += 1
                log.warning("now serving %s version %s (was %s)", self.conf.registered_model, version, old.version)
            return True

    async def watch(self) -> None:
        """Load the model, then follow the alias every ``reload_seconds`` (not for a pinned version)."""
        while True:
            await asyncio.to_thread(self.refresh)
            if self.conf.version and self.served is not None:
                return
            await asyncio.sleep(self.conf.reload_seconds if self.served is not None else 2.0)

    # ----- requests
    def error(self, kind: str, status: int, message: str) -> Response:
        self.metrics.errors[kind] += 1
        return Response(orjson.dumps({"error_code": kind, "message": message}), status,
                        media_type="application/json")

    async def body(self, request: HttpRequest) -> Any:
        raw = await request.body()
        if len(raw) > self.conf.max_body_bytes:
            raise _Refused("too_large", 413, f"request body of {len(raw)} bytes; at most {self.conf.max_body_bytes} "
                                             "(online.max_body_bytes)")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise _Refused("bad_json", 400, f"malformed JSON: {err}") from None

    def score(self, served: Served, records: Any) -> list[dict[str, Any]]:
        from mlflow.exceptions import MlflowException

        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise _Refused("bad_request", 400, "requests are a list of objects (user_id, session, viewing, k, "
                                               "exclude)")
        try:
            return served.scorer.answer_rows(records)
        except MlflowException as err:
            not_found = err.error_code == "RESOURCE_DOES_NOT_EXIST"
            raise _Refused("unknown_user" if not_found else "bad_request", 404 if not_found else 400,
                           err.message) from None

    async def handle(self, request: HttpRequest, one: bool) -> Response:
        started = time.perf_counter()
        try:
            served = self.served
            if served is None:
                raise _Refused("not_ready", 503, f"no model loaded yet ({self.load_error or 'loading'})")
            body = await self.body(request)
            if one:
                rows = self.score(served, [body])
                first = rows[0] if rows else {}
                answer = {"items": [{k: r[k] for k in ("rank", "item_id", "title", "score", "source", "reason",
                                                       "propensity")} for r in rows],
                          "ignored_items": first.get("ignored_items", []), "warnings": first.get("warnings", []),
                          "streamed": first.get("streamed", 0), "model": served.version,
                          "request_id": first.get("request_id")}
            else:
                if not isinstance(body, dict) or "dataframe_records" not in body:
                    raise _Refused("bad_request", 400, 'send {"dataframe_records": [{"user_id": ..., "session": '
                                                       '[...], "k": 10}]}')
                answer = {"predictions": self.score(served, body["dataframe_records"])}
            return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), 200,
                            media_type="application/json")
        except _Refused as err:
            return self.error(err.kind, err.status, err.message)
        except Exception as err:  # noqa: BLE001 (a bug answers 500 and the server goes on)
            log.exception("request failed")
            return self.error("internal", 500, f"{type(err).__name__}: {err}")
        finally:
            self.metrics.observe(time.perf_counter() - started)

    def ready(self) -> Response:
        served = self.served
        if served is None:
            return Response(orjson.dumps({"ready": False, "error": self.load_error}), 503,
                            media_type="application/json")
        store = "ok"
        try:
            served.scorer.store.ping()
        except Exception as err:  # noqa: BLE001 (reported, the server answers degraded)
            store = f"unreachable: {err}"
        from liverec.online_store import redacted

        url = redacted(served.scorer.store.url) if served.scorer.store is not None else None
        return Response(orjson.dumps({"ready": True, "model": self.conf.registered_model, "version": served.version,
                                      "ds": served.scorer.meta["ds"], "store": store, "store_url": url}), 200,
                        media_type="application/json")


class _Refused(Exception):
    def __init__(self, kind: str, status: int, message: str):
        super().__init__(message)
        self.kind, self.status, self.message = kind, status, message


def create_app(conf: ServeConfig | None = None) -> Starlette:
    """The ASGI app (uvicorn's factory: the config comes from $LIVEREC_SERVE when not given)."""
    if conf is None:
        conf = ServeConfig(**json.loads(os.environ[CONF_ENV]))
    server = Server(conf)
    tasks: list[asyncio.Task] = []

    async def invocations(request: HttpRequest) -> Response:
        return await server.handle(request, one=False)

    async def recommend(request: HttpRequest) -> Response:
        return await server.handle(request, one=True)

    async def health(request: HttpRequest) -> Response:
        return Response(b'{"status":"ok"}', 200, media_type="application/json")

    async def ready(request: HttpRequest) -> Response:
        return await asyncio.to_thread(server.ready)

    async def metrics(request: HttpRequest) -> Response:
        return Response(server.metrics.text(server.served), 200, media_type="text/plain; version=0.0.4")

    async def lifespan(app: Starlette):  # noqa: ANN202
        import torch

        torch.set_num_threads(int(os.environ.get("LIVEREC_ONLINE_THREADS", "1")))
        tasks.append(asyncio.create_task(server.watch()))
        yield
        for t in tasks:
            t.cancel()

    app = Starlette(routes=[
        Route("/invocations", invocations, methods=["POST"]), Route("/recommend", recommend, methods=["POST"]),
        Route("/health", health, methods=["GET"]), Route("/ping", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]), Route("/metrics", metrics, methods=["GET"]),
    ], lifespan=lifespan)
    app.state.server = server
    return app


def run(conf: ServeConfig, host: str, port: int, workers: int) -> None:
    """Serve until stopped (uvicorn; ``workers`` processes, each loading the model)."""
    import uvicorn

    os.environ[CONF_ENV] = json.dumps(conf.__dict__)
    uvicorn.run("liverec.server:create_app", factory=True, host=host, port=port, workers=max(workers, 1),
                log_level="warning", access_log=False, http="auto", loop="auto")
