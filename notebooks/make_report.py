"""Build and execute notebooks/nightly_report.ipynb: gold.recommendations and the evaluation results.

    python notebooks/make_report.py [--lakehouse lakehouse] [--reports .liverec/reports] [--ds D]
                                    [--output notebooks/nightly_report.ipynb]

The notebook reads the Delta tables with the ``deltalake`` package (no Spark), so it opens in any
Jupyter with this project's virtual environment; it is executed here with nbclient and saved with its
outputs (tables and plots). ``make notebook`` runs it on the demo lakehouse.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

CELLS = [
    ("md", """# liverec: the nightly recommendations

What the nightly job wrote to `gold.recommendations` for one date, and how the models scored in the
hold-out evaluation (`liverec run evaluate`): metrics per model, catalogue coverage and intra-list
diversity of the lists, where the items came from, and the score distributions.

Inputs come from environment variables (set by `notebooks/make_report.py`): `LIVEREC_LAKEHOUSE`
(the lakehouse root), `LIVEREC_REPORTS` (evaluate's report folder) and `LIVEREC_DS` (default: the
newest partition)."""),
    ("code", """import json
import os
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from deltalake import DeltaTable

matplotlib.rcParams["figure.dpi"] = 80
LAKEHOUSE = Path(os.environ.get("LIVEREC_LAKEHOUSE", "../lakehouse"))
REPORTS = Path(os.environ.get("LIVEREC_REPORTS", "../.liverec/reports"))


def partitions(table):
    dt = DeltaTable(str(LAKEHOUSE / table))
    return sorted({p["ds"] for p in dt.partitions()}), dt


def read(table, ds):
    _, dt = partitions(table)
    files = [f for f in dt.file_uris() if f"/ds={ds}/" in f]  # Delta writes Hive-style partition folders
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True) if files else pd.DataFrame()


dates, _ = partitions("gold/recommendations")
DS = os.environ.get("LIVEREC_DS") or dates[-1]
recs = read("gold/recommendations", DS)
print(f"gold.recommendations ds={DS}: {len(recs):,} rows, {recs.user_id.nunique():,} users "
      f"(dates in the table: {', '.join(dates)})")"""),
    ("md", "## Who ranked what\nRows per candidate source and per model version (a `ranker:` version is the "
           "champion ranker; `als:` rows say when no champion was there)."),
    ("code", """mix = recs.groupby(["model_version", "source"]).agg(rows=("item_id", "size"), users=("user_id", "nunique"),
                                                mean_score=("score", "mean")).reset_index()
mix"""),
    ("md", "## Metrics per model\nThe hold-out evaluation of the same date (`evaluation.json`): every model "
           "against each split."),
    ("code", """path = REPORTS / DS / "evaluation.json"
if path.exists():
    evaluation = json.loads(path.read_text())
    rows = [{"split": r["split"], "model": m, **v} for r in evaluation for m, v in r["results"].items()]
    metrics = pd.DataFrame(rows)
    shown = [c for c in ("precision", "recall", "ndcg", "map", "hit_rate", "coverage", "diversity") if c in metrics]
    display(metrics[["split", "model", *shown, "users"]].round(4))
    splits = list(metrics.split.unique())
    fig, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 3.5), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        part = metrics[metrics.split == split].set_index("model")[shown]
        part.T.plot.bar(ax=ax, rot=30)
        ax.set_title(f"{split} split, @{evaluation[0].get('k', 10)}")
    plt.tight_layout()
    plt.show()
else:
    print(f"no evaluation for ds={DS} under {REPORTS} (run `liverec run evaluate --ds {DS}`)")"""),
    ("md", "## Coverage and diversity\nCatalogue coverage of all lists together; intra-list diversity = mean "
           "(1 - cosine) of the item text embeddings over the pairs in each user's list."),
    ("code", """emb_dates, _ = partitions("gold/item_embeddings")
emb_ds = max([d for d in emb_dates if d <= DS], default=None)
emb = read("gold/item_embeddings", emb_ds) if emb_ds else pd.DataFrame(columns=["item_id", "embedding"])
vectors = {i: np.asarray(v, dtype=np.float32) for i, v in zip(emb.item_id, emb.embedding, strict=True)}
catalogue = max(len(vectors), 1)
print(f"catalogue coverage: {recs.item_id.nunique():,} distinct items of {catalogue:,} "
      f"({recs.item_id.nunique() / catalogue:.1%})")


def intra_list_diversity(items):
    vs = [vectors[i] / np.linalg.norm(vectors[i]) for i in items if i in vectors]
    if len(vs) < 2:
        return np.nan
    m = np.stack(vs)
    sims = m @ m.T
    n = len(vs)
    return float(1 - (sims.sum() - n) / (n * (n - 1)))


ild = recs.sort_values("rank").groupby("user_id").item_id.apply(list).map(intra_list_diversity)
popularity = recs.item_id.value_counts()
fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
axes[0].hist(ild.dropna(), bins=30)
axes[0].set_title(f"intra-list diversity per user (mean {ild.mean():.3f})")
axes[1].plot(np.arange(1, len(popularity) + 1), popularity.values)
axes[1].set_xscale("log")
axes[1].set_title("how many lists each item is in (items by rank)")
plt.tight_layout()
plt.show()"""),
    ("md", "## Scores\nThe ranker's scores (logits) per candidate source, and by position in the list (MMR "
           "may place a lower score above a higher one for diversity)."),
    ("code", """fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
for source, part in recs.groupby("source"):
    axes[0].hist(part.score, bins=40, alpha=0.5, label=f"{source} ({len(part):,})")
axes[0].legend()
axes[0].set_title("score distribution per source")
recs.groupby("rank").score.agg(["mean", "min", "max"]).plot(ax=axes[1])
axes[1].set_title("score by rank")
plt.tight_layout()
plt.show()"""),
    ("md", "## A few lists, with their reasons"),
    ("code", """sample = recs[recs.user_id.isin(sorted(recs.user_id.unique())[:2])].sort_values(["user_id", "rank"])
sample.assign(user_id=sample.user_id.str[:10])[["user_id", "rank", "item_id", "score", "source", "reason"]]"""),
]


def build(lakehouse: str, reports: str, ds: str | None, output: Path, timeout: int = 600) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
                for kind, src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    env = {"LIVEREC_LAKEHOUSE": str(Path(lakehouse).resolve()), "LIVEREC_REPORTS": str(Path(reports).resolve()),
           "LIVEREC_DS": ds or ""}
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits them
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(output.parent)}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    nbformat.write(nb, output)
    return output


def main() -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lakehouse", default=str(here.parent / "lakehouse"))
    ap.add_argument("--reports", default=str(here.parent / ".liverec" / "reports"))
    ap.add_argument("--ds", help="date to show (default: the newest partition of gold.recommendations)")
    ap.add_argument("--output", default=str(here / "nightly_report.ipynb"))
    args = ap.parse_args()
    print(build(args.lakehouse, args.reports, args.ds, Path(args.output)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
