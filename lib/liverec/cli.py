"""``liverec``: run a stage, the whole pipeline, or the demo generator.

    liverec run <stage> [--conf F] [--set k=v ...] [--ds YYYY-MM-DD] [stage options]
    liverec pipeline    [--conf F] [--set k=v ...] [--ds YYYY-MM-DD] [--source demo ...]
    liverec generate    [--conf F] [--set k=v ...] [--output DIR] [--events N]
    liverec serve       [--conf F] [--set k=v ...] [--host H] [--port P] [--version N] [--workers W] [--mlflow]
    liverec stages

Problems the user can fix print one line, ``liverec <stage>: error: ...``, and exit with 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import uuid
from collections.abc import Sequence
from typing import Any, NoReturn

from liverec.errors import InputError, LiverecError


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage, so every mistake is one line."""

    def error(self, message: str) -> NoReturn:
        raise LiverecError(message)


def _ds(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError as exc:
        raise LiverecError(f"--ds must be a date YYYY-MM-DD, got '{text}'") from exc


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conf", help="config overlay file (default: conf/local.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--ds", type=_ds, default=dt.datetime.now(dt.UTC).date().isoformat(),
                   help="run date, YYYY-MM-DD (default: today, UTC)")


def build_parser() -> argparse.ArgumentParser:
    from liverec.stages import STAGES

    parser = _Parser(prog="liverec", description="liverec: recommendations on Spark, Delta, MLflow")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run one stage")
    stage_sub = run.add_subparsers(dest="stage", required=True, parser_class=_Parser)
    for stage in STAGES.values():
        sp = stage_sub.add_parser(stage.name, help=stage.help)
        _common(sp)
        stage.add_arguments(sp)
    pipe = sub.add_parser("pipeline", help="run every stage in order (demo data by default)")
    _common(pipe)
    pipe.add_argument("--source", default="demo", help="ingest source for the first stage (default: demo)")
    pipe.add_argument("--input", help="ingest input (default for demo: conf demo.output_dir)")
    pipe.add_argument("--format", help="ingest input format")
    pipe.add_argument("--items", help="ingest items file (with --source events)")
    pipe.add_argument("--default-ts", help="ingest --default-ts: the time of every event of a log without timestamps")
    pipe.add_argument("--stages", help="comma-separated subset of the stages, run in pipeline order in one Spark "
                                       "application (default: all)")
    gen = sub.add_parser("generate", help="write the demo event log (with deliberate dirt)")
    _common(gen)
    from liverec.stages import generate_arguments

    generate_arguments(gen)
    serve = sub.add_parser("serve", help="serve the online model (liverec.server: Starlette + uvicorn; --mlflow: "
                                         "mlflow models serve --env-manager local)")
    serve.add_argument("--conf", help="config overlay file (default: conf/local.yaml)")
    serve.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    serve.add_argument("--host", help="address to listen on (default: conf online.host)")
    serve.add_argument("--port", type=int, help="port (default: conf online.port)")
    serve.add_argument("--version", help="serve this registered version instead of the online alias")
    serve.add_argument("--workers", type=int, help="server worker processes (default: conf online.workers)")
    serve.add_argument("--mlflow", action="store_true", help="serve the pyfunc with `mlflow models serve` instead "
                                                            "(no /ready, /metrics or alias reloads)")
    sub.add_parser("stages", help="list the stages")
    return parser


def serve_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow models serve`` command line and environment for the configured online model."""
    from liverec.config import load_settings

    settings = load_settings(args.conf, args.set)
    conf = settings.online
    uri = f"models:/{conf.registered_model}/{args.version}" if args.version else \
        f"models:/{conf.registered_model}@{conf.alias}"
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
           "-h", args.host or conf.host, "-p", str(args.port or conf.port), "-w", str(args.workers or conf.workers)]
    return cmd, {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri()}


def _run_stages(names: Sequence[str], args: argparse.Namespace, extra: dict[str, Any] | None = None) -> None:
    import mlflow
    from pyspark.sql import SparkSession

    from liverec import tracking
    from liverec.config import load_settings
    from liverec.progress import Progress
    from liverec.session import build_spark
    from liverec.stages import STAGES, Context, run_generate

    settings = load_settings(args.conf, args.set)
    owned = SparkSession.getActiveSession() is None  # a caller's session (tests, notebooks) is left running
    spark = build_spark(settings, names[0] if len(names) == 1 else "pipeline")
    pipeline_id = uuid.uuid4().hex[:12]
    try:
        with tracking.caller_environment_kept():
            skip: dict[str, str] = {}  # stage -> why an earlier stage of this run made it pointless
            for name in names:
                progress = Progress(name)
                if name in skip:
                    progress.info(f"skipped: {skip[name]}")
                    continue
                ctx = Context(spark, settings, args.ds, progress)
                params = {k: v for k, v in vars(args).items() if k not in {"set", "conf", "ds", "command", "stage"}
                          and v is not None}
                with tracking.job_run(settings, name, args.ds, params) as run:
                    mlflow.set_tag("liverec.pipeline_id", pipeline_id)
                    if args.conf:
                        mlflow.log_param("conf_file", args.conf)
                    for pair in args.set:
                        mlflow.log_param(f"set.{pair.split('=', 1)[0]}"[:250], pair.split("=", 1)[-1][:500])
                    stage_run = run_generate if name == "generate" else STAGES[name].run
                    summary = stage_run(ctx, args)
                    for later in summary.pop("skip_stages", []):
                        skip[later] = f"{name} wrote nothing ({summary.get('skipped')})"
                    mlflow.log_metrics({k: float(v) for k, v in {**summary, **progress.metrics}.items()
                                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
                    mlflow.log_dict({k: v for k, v in summary.items()}, f"{name}_summary.json")
                    progress.done()
                    progress.info(f"mlflow run {run.info.run_id}")
    finally:
        if owned:
            spark.stop()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "forget":  # `liverec forget --users FILE` is `liverec run forget --users FILE`
        argv = ["run", *argv]
    label = "liverec"
    if argv and argv[0] in {"run", "pipeline", "generate"}:
        label = f"liverec {argv[1]}" if argv[0] == "run" and len(argv) > 1 else f"liverec {argv[0]}"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command == "stages":
            from liverec.stages import PIPELINE, STAGES

            print("`liverec pipeline` runs, in this order:")
            for name in [*PIPELINE, None, *sorted(set(STAGES) - set(PIPELINE))]:
                if name is None:
                    print("run on their own (`liverec run <stage>`):")
                    continue
                s = STAGES[name]
                print(f"  {name:22s} {s.help}\n      reads {', '.join(s.reads)} -> writes {', '.join(s.writes)} "
                      f"(jobs/{s.job_file}.py{', Airflow DAG liverec_' + s.dag if s.dag else ''})")
            return 0
        if args.command == "serve" and args.mlflow:
            cmd, env = serve_command(args)
            print(f"liverec serve: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
            os.execve(cmd[0], cmd, env)
        if args.command == "serve":
            from liverec import server
            from liverec.config import load_settings

            settings = load_settings(args.conf, args.set)
            conf = settings.online
            serve_conf = server.ServeConfig(settings.tracking_uri(), conf.registered_model, conf.alias, args.version,
                                            conf.reload_seconds, conf.max_body_bytes)
            host, port, workers = args.host or conf.host, args.port or conf.port, args.workers or conf.workers
            if conf.store:  # online.store set here wins over the store the model was published with
                os.environ["LIVEREC_ONLINE_STORE"] = conf.store
            print(f"liverec serve: {serve_conf.uri()} on http://{host}:{port} ({workers} worker(s); /health, "
                  "/ready, /metrics, POST /invocations and /recommend)", file=sys.stderr, flush=True)
            server.run(serve_conf, host, port, workers)
            return 0
        if args.command == "run":
            label = f"liverec {args.stage}"
            _run_stages([args.stage], args)
        elif args.command == "generate":
            label = "liverec generate"
            _run_stages(["generate"], args)
        else:
            label = "liverec pipeline"
            from liverec.stages import PIPELINE

            names = list(PIPELINE)
            if args.stages:
                wanted = [n.strip() for n in args.stages.split(",") if n.strip()]
                unknown = sorted(set(wanted) - set(PIPELINE))
                if unknown or not wanted:
                    raise InputError(f"--stages: unknown stage(s) {', '.join(unknown) or '(none given)'}; "
                                     f"known: {', '.join(PIPELINE)}")
                names = [n for n in PIPELINE if n in wanted]
            _run_stages(names, args)
            from liverec.config import load_settings

            settings = load_settings(args.conf, args.set)
            print(f"[pipeline] tables under {settings.lakehouse_root}")
    except LiverecError as exc:
        print(f"{label}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def run_job(stage: str, argv: Sequence[str] | None = None) -> int:
    """Entry point for ``jobs/<stage>.py`` under spark-submit or plain python."""
    return main(["run", stage, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
