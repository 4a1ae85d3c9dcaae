"""The pipeline's stages, declared once: each module of this package declares its ``Stage`` objects (options,
tables read and written, ``run``), and everything that needs the stages' order reads it from here:

- ``PIPELINE``: the order ``liverec pipeline`` runs them in (a topological order of the reads/writes, ties in
  declaration order);
- ``dag_dependencies(dag)``: the upstream tasks of each task of an Airflow DAG (``airflow_dags/``);
- ``stage_table()``: the README's stage table (tests/test_config.py checks the README holds it);
- ``liverec stages`` prints them.

Importing this package imports no Spark (the Airflow scheduler imports it to build its DAGs).
"""

from __future__ import annotations

from liverec.stages import (
    clean,
    evaluate,
    features,
    federated,
    feedback,
    ingest,
    models,
    privacy,
    publish,
    ranker,
    stream,
)
from liverec.stages.base import NIGHTLY, TRAINING, Context, Stage
from liverec.stages.ingest import generate_arguments, run_generate

__all__ = ["NIGHTLY", "PIPELINE", "STAGES", "TRAINING", "Context", "Stage", "dag_dependencies",
           "generate_arguments", "run_generate", "stage_table"]

STAGES: dict[str, Stage] = {s.name: s for m in (ingest, clean, features, models, ranker, federated, publish, evaluate,
                                                stream, feedback, privacy)
                            for s in m.STAGES}


def _upstream(names: list[str]) -> dict[str, set[str]]:
    """For each of ``names``: the others among ``names`` that write something it reads."""
    return {b: {a for a in names if a != b and set(STAGES[a].writes) & set(STAGES[b].reads)} for b in names}


def _ordered(names: list[str]) -> tuple[str, ...]:
    """``names`` in a topological order of their reads and writes; among the ready ones, declaration order."""
    up, done, order = _upstream(names), set(), []
    while len(order) < len(names):
        ready = [n for n in names if n not in done and up[n] <= done]
        if not ready:
            raise ValueError(f"the stages {sorted(set(names) - done)} read each other's outputs in a cycle")
        order.append(ready[0])
        done.add(ready[0])
    return tuple(order)


PIPELINE: tuple[str, ...] = _ordered([s.name for s in STAGES.values() if s.pipeline])


def dag_dependencies(dag: str) -> dict[str, list[str]]:
    """task -> its direct upstream tasks in the Airflow DAG ``dag`` (NIGHTLY or TRAINING): the stages declared
    for it, linked where one writes what the other reads, without the links another path already implies."""
    names = list(_ordered([s.name for s in STAGES.values() if s.dag == dag]))
    up = _upstream(names)

    def ancestors(n: str) -> set[str]:
        seen, todo = set(), list(up[n])
        while todo:
            a = todo.pop()
            if a not in seen:
                seen.add(a)
                todo.extend(up[a])
        return seen

    return {n: sorted(a for a in up[n] if not any(a in ancestors(b) for b in up[n] if b != a)) for n in names}


def stage_table() -> str:
    """The README's stage table (Markdown), from the declarations."""
    rows = ["| stage | job | Airflow DAG | reads | writes | what it does |", "|---|---|---|---|---|---|"]
    names = [*PIPELINE, *[n for n in STAGES if n not in PIPELINE]]
    for n in names:
        s = STAGES[n]
        rows.append(f"| `{n}`{'' if s.pipeline else ' (not in `liverec pipeline`)'} | `jobs/{s.job_file}.py` | "
                    f"{s.dag or '-'} | {', '.join(s.reads)} | {', '.join(s.writes)} | {s.help} |")
    return "\n".join(rows)
