"""Dense integer ids for string ids (ALS, EASE, the ranker's vocabulary, the vector searches), numbered in the
ids' sort order without a global window.

``row_number().over(Window.orderBy(id))`` moves every row into one partition, which is a single task at any scale.
Here the rows are split into buckets by the first ``BUCKET_CHARS`` characters of the id, which keeps the order:
a < b implies prefix(a) <= prefix(b). Each bucket is numbered in its own partition, and each bucket's offset is the
count of the rows in the buckets before it, from a table of one row per bucket. The ids come out the same as the
global window's.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

BUCKET_CHARS = 2  # 256 buckets for hex pseudonyms, about a hundred for numeric ids


def dense_index(frame: DataFrame, column: str, out: str, start: int = 0) -> DataFrame:
    """``frame`` with ``out`` (int): start, start + 1, ... in the order of ``column``, a string column whose
    values are unique and not null in ``frame``, as ``row_number().over(Window.orderBy(column)) - 1 + start``
    gives them."""
    keyed = frame.withColumn("_bucket", F.substring(F.col(column), 1, BUCKET_CHARS))
    counts = keyed.groupBy("_bucket").agg(F.count(F.lit(1)).alias("_n"))
    before = counts.select(F.col("_bucket").alias("_other"), "_n")
    offsets = (counts.select("_bucket").crossJoin(F.broadcast(before)).where(F.col("_other") < F.col("_bucket"))
               .groupBy("_bucket").agg(F.sum("_n").alias("_offset")))
    within = F.row_number().over(Window.partitionBy("_bucket").orderBy(column))
    return (keyed.join(F.broadcast(offsets), "_bucket", "left")
            .withColumn(out, (F.coalesce(F.col("_offset"), F.lit(0)) + within - 1 + start).cast("int"))
            .drop("_bucket", "_offset"))
