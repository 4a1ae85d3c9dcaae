"""Every use of Petastorm lives here, so it can be swapped for another Spark -> PyTorch feed.

Petastorm 0.13.1 is unmaintained (it breaks on pyarrow 15+ and numpy 2): it is installed with
--no-deps by the Makefile. ``materialise`` writes a DataFrame once as Parquet under a cache folder
(``make_spark_converter``); ``batches`` reads one rank's shard of it as torch tensors, forever, so the
caller decides how many steps each rank runs (every DDP rank must run the same number, or the
all-reduce of the rank that runs one step more waits for ever); ``all_batches`` reads it once, whole.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

from pyspark.sql import DataFrame, SparkSession

# Petastorm 0.13.1 calls pyarrow APIs deprecated since pyarrow 5 (and still present in the pinned 14): one
# FutureWarning per file and epoch would bury the training log. Nothing else is silenced.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\.")


def materialise(spark: SparkSession, df: DataFrame, cache_url: str, min_row_groups: int) -> Any:
    """A Petastorm converter over ``df`` (written under ``cache_url``) with at least ``min_row_groups`` files,
    so that every shard has rows."""
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, cache_url)
    return make_spark_converter(df.repartition(max(1, min_row_groups)))


def size(converter: Any) -> int:
    return len(converter)


def batches(converter: Any, batch_size: int, rank: int, world: int, seed: int) -> Iterator[dict]:
    """Endless batches (dicts of tensors) of shard ``rank`` of ``world``, shuffled."""
    with converter.make_torch_dataloader(batch_size=batch_size, cur_shard=rank, shard_count=world, num_epochs=None,
                                         shuffling_queue_capacity=4 * batch_size, seed=seed,
                                         workers_count=1) as loader:
        yield from loader


def all_batches(converter: Any, batch_size: int) -> Iterator[dict]:
    """Every row once, in one process (no sharding, no shuffling)."""
    with converter.make_torch_dataloader(batch_size=batch_size, num_epochs=1, workers_count=1,
                                         shuffle_row_groups=False) as loader:
        yield from loader


def delete(converter: Any) -> None:
    converter.delete()
