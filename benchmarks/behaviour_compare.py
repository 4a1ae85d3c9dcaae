"""Compare two behaviour snapshots (behaviour_snapshot.py): per table, the row count and which columns' hashes
differ; the evaluation's metrics that differ.

    python benchmarks/behaviour_compare.py BEFORE.json AFTER.json
"""

import json
import sys


def _metrics(evaluation):
    return {f"{r['split']}.{m}.{k}": round(v, 4) for r in (evaluation or []) for m, d in r["results"].items()
            for k, v in d.items() if isinstance(v, (int, float))}


def main(before_path: str, after_path: str) -> None:
    before, after = (json.load(open(p)) for p in (before_path, after_path))
    for table in sorted(set(before) | set(after)):
        if table == "evaluation":
            a, b = _metrics(before.get(table)), _metrics(after.get(table))
            diff = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
            print("evaluation:", "same" if not diff else diff)
            continue
        ta, tb = before.get(table), after.get(table)
        if ta is None or tb is None:
            print(table, "only in", "after" if ta is None else "before")
            continue
        cols = [c for c in sorted(set(ta["columns"]) | set(tb["columns"]))
                if ta["columns"].get(c) != tb["columns"].get(c)]
        same = not cols and ta["rows"] == tb["rows"]
        print(f"{table}: rows {ta['rows']} vs {tb['rows']}", "identical" if same else f"differ in {cols}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
