"""The served online model's size does not grow with the users: the same catalogue at two user counts.

    python benchmarks/online_artifact_scale.py [--small 2k] [--large 20m]

Both sizes are ``nightly_scale.py`` runs (``.liverec/bench-scale-<size>``) of generated logs with the same
catalogue (27,000 items) and 100 times more users in the large one. A size whose run is missing is run first
(``nightly_scale.py --sizes <size> --champion-from 1m``: the champion ranker of the 1m run ranks both, so both
online models carry the same ranker). For each: the registered ``liverec-online@champion`` version's artifact
(bytes on disk: the bundle's arrays and metadata, the ranker copy, MLflow's files), the users in the online
store, and publish_online's own progress lines (the bundle step, the store materialisation: its rows and
seconds, Spark building the records included).

Writes benchmarks/results/online_artifact_scale.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from _measure import machine, write_results

REPO = Path(__file__).resolve().parents[1]


def champion_artifact(work: Path) -> tuple[int, Path]:
    """(version, artifact folder) of liverec-online@champion in a run's MLflow store."""
    with sqlite3.connect(work / "mlflow.db") as db:
        version = db.execute("SELECT version FROM registered_model_aliases WHERE name = 'liverec-online' AND "
                             "alias = 'champion'").fetchone()[0]
        where = db.execute("SELECT storage_location FROM model_versions WHERE name = 'liverec-online' AND "
                           "version = ?", (version,)).fetchone()[0]
    return int(version), Path(urlparse(where).path)


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def one(name: str) -> dict:
    work = REPO / ".liverec" / f"bench-scale-{name}"
    if not (work / "mlflow.db").exists():
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "nightly_scale.py"), "--sizes", name,
                        "--champion-from", "1m", "--label", name], check=True, cwd=REPO / "benchmarks")
    logs = "".join(p.read_text() for p in sorted(work.glob("pipeline*.log")))
    bundle = re.findall(r"^\[publish_online\] bundle: ([\d,]+) rows, ([\d.]+)s arrays_mb=([\d.]+)", logs, re.M)[-1]
    store = re.findall(r"^\[publish_online\] online store: ([\d,]+) rows, ([\d.]+)s", logs, re.M)[-1]
    version, folder = champion_artifact(work)
    files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    published = dt.datetime.fromtimestamp(max((folder / k).stat().st_mtime for k in files)).strftime("%Y-%m-%d %H:%M")
    return {"work": str(work), "version": version, "published": published, "artifact_bytes": size_of(folder),
            "bundle_bytes": sum(v for k, v in files.items() if "/bundle." in f"/{k}"),
            "ranker_bytes": sum(v for k, v in files.items() if k.startswith("artifacts/ranker/")),
            "items": int(bundle[0].replace(",", "")), "bundle_seconds": float(bundle[1]),
            "arrays_mb": float(bundle[2]), "store_users": int(store[0].replace(",", "")),
            "store_seconds": float(store[1])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", default="2k")
    ap.add_argument("--large", default="20m")
    args = ap.parse_args()
    runs = {args.small: one(args.small), args.large: one(args.large)}
    small, large = runs[args.small], runs[args.large]
    command = "python benchmarks/online_artifact_scale.py " + " ".join(sys.argv[1:])
    payload = {"benchmark": "online_artifact_scale", "date": dt.date.today().isoformat(), "machine": machine(),
               "command": command, "runs": runs}
    mb = 2 ** 20
    lines = ["# online_artifact_scale", "",
             f"Measured {payload['date']} on {payload['machine']}; `{command}`. Two `nightly_scale.py` runs of "
             "generated logs over the same catalogue, ranked by the same champion ranker (the 1m run's); the "
             "artifact is the registered `liverec-online@champion` version on disk.", "",
             "| | " + " | ".join(runs) + " |", "|---" * (len(runs) + 1) + "|"]
    rows = [("online model published (the code of that day)", lambda r: r["published"]),
            ("users in the online store", lambda r: f"{r['store_users']:,}"),
            ("catalogue items in the bundle", lambda r: f"{r['items']:,}"),
            ("**served artifact, MB**", lambda r: f"**{r['artifact_bytes'] / mb:.1f}**"),
            ("of which the bundle (arrays + metadata), MB", lambda r: f"{r['bundle_bytes'] / mb:.1f}"),
            ("of which the ranker copy, MB", lambda r: f"{r['ranker_bytes'] / mb:.1f}"),
            ("publish_online bundle step, s", lambda r: f"{r['bundle_seconds']:.1f}"),
            ("online store materialisation (Spark records + write), s", lambda r: f"{r['store_seconds']:.1f}"),
            ("store materialisation, users/s", lambda r: f"{r['store_users'] / r['store_seconds']:,.0f}")]
    for label, fmt in rows:
        lines.append(f"| {label} | " + " | ".join(fmt(r) for r in runs.values()) + " |")
    lines += ["", f"{large['store_users'] / small['store_users']:.0f} times the users, artifact x"
                  f"{large['artifact_bytes'] / small['artifact_bytes']:.3f}."]
    write_results("online_artifact_scale", payload, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
