"""``generate`` (the demo log) and ``ingest`` (a source -> bronze.events / bronze.items / bronze.social)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from liverec import tables
from liverec.errors import InputError
from liverec.stages.base import INPUT_FILES, NIGHTLY, Context, Stage, write


def generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", help="folder to write the demo log into (default: conf demo.output_dir)")
    p.add_argument("--events", type=int, help="number of events before dirt (default: conf demo.events)")
    p.add_argument("--users", type=int, help="number of users (default: conf demo.users)")
    p.add_argument("--items", type=int, help="number of items (default: conf demo.items)")


def run_generate(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    from liverec import demo_data

    conf = ctx.settings.demo
    changes = {k: getattr(args, k) for k in ("events", "users", "items") if getattr(args, k, None) is not None}
    for key, value in changes.items():
        if value <= 0:
            raise InputError(f"--{key} must be positive, got {value}")
    conf = dataclasses.replace(conf, **changes)
    output = getattr(args, "output", None) or conf.output_dir
    manifest = demo_data.generate(ctx.spark, conf, output)
    ctx.progress.step("generate", manifest["rows_written"], clean_events=manifest["clean_events"],
                      items=manifest["items"], edges=manifest["edges"])
    ctx.progress.info(f"demo log in {output} (dirt: {json.dumps(manifest['dirt'])})")
    return {"output": output, **{f"dirt_{k}": v for k, v in manifest["dirt"].items()},
            "clean_events": manifest["clean_events"], "rows_written": manifest["rows_written"]}


def _ingest_arguments(p: argparse.ArgumentParser) -> None:
    from liverec.ingest import FORMATS, SOURCES

    p.add_argument("--source", required=True, choices=SOURCES, help="what kind of input this is")
    p.add_argument("--input", help="input file or folder (for demo: where to generate; default conf demo.output_dir)")
    p.add_argument("--items", help="with --source events: an items file (item_id, title, category, description, price)")
    p.add_argument("--format", choices=FORMATS, help="input format when the file name does not tell")
    p.add_argument("--default-ts", help="time (ISO-8601 or epoch seconds) of every event of a log without timestamps "
                                        "(--source events: the ts column may then be absent; filmtrust: default the "
                                        "run date, 00:00 UTC)")


def _read(ctx: Context, args: argparse.Namespace) -> Any:
    """The source named by ``--source`` read and checked (nothing written yet): an ``ingest.Ingested``."""
    from liverec import demo_data, ingest, readers

    spark, settings, source = ctx.spark, ctx.settings, args.source
    if source != "demo" and not args.input:
        raise InputError(f"--input is required for --source {source}")
    if source == "demo":
        out = args.input or settings.demo.output_dir
        if not (Path(out) / "manifest.json").is_file():
            run_generate(ctx, argparse.Namespace(output=out, events=None, users=None, items=None))
        return ingest.Ingested(
            events=ingest.read_generic_events(spark, str(Path(out) / demo_data.DEMO_FILES["events"]), "csv"),
            items=ingest.read_generic_items(spark, str(Path(out) / demo_data.DEMO_FILES["items"]), "csv"),
            social=ingest.read_edges(spark, str(Path(out) / demo_data.DEMO_FILES["edges"])))
    if source == "events":
        data = ingest.Ingested(events=ingest.read_generic_events(spark, args.input, args.format,
                                                                 getattr(args, "default_ts", None)))
        if args.items:
            data.items = ingest.read_generic_items(spark, args.items, None)
        return data
    if source == "movielens":
        return readers.read_movielens(spark, args.input)
    if source == "online_retail":
        return readers.read_online_retail(spark, args.input, settings.scratch_dir)
    if source == "filmtrust":
        default_ts = getattr(args, "default_ts", None) or f"{ctx.ds}T00:00:00"
        ctx.progress.info(f"FilmTrust has no timestamps: every rating gets ts={default_ts} (--default-ts to choose); "
                          "evaluate it with --split random")
        return readers.read_filmtrust(spark, args.input, default_ts)
    if source == "otto":
        return readers.read_otto(spark, args.input)
    return ingest.Ingested(social=ingest.read_edges(spark, args.input))  # edges


def run_ingest(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    from liverec import ingest

    data = _read(ctx, args)
    ctx.progress.step("read")  # every input was checked above; nothing has been written yet
    summary: dict[str, Any] = {"source": args.source}
    partition = {"ds": ctx.ds, "source": args.source}
    for table, df in ((tables.BRONZE_EVENTS, data.events), (tables.BRONZE_ITEMS, data.items),
                      (tables.BRONZE_SOCIAL, data.social)):
        if df is not None:
            version, rows = write(ctx, table, ingest.to_bronze(df, ctx.ds, args.source), partition)
            summary[f"{table}_rows"] = rows
            summary[f"{table}_version"] = version
    return summary


STAGES = (
    Stage("ingest", "read a source into bronze.events / bronze.items / bronze.social",
          reads=(INPUT_FILES,), writes=(tables.BRONZE_EVENTS, tables.BRONZE_ITEMS, tables.BRONZE_SOCIAL),
          run=run_ingest, add_arguments=_ingest_arguments, dag=NIGHTLY),
)
