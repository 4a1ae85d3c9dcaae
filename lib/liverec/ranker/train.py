"""Distributed training of the ranker: Petastorm shards -> DistributedDataParallel, launched by Spark's
TorchDistributor (gloo on CPU, NCCL on GPU).

Each rank reads its own Petastorm shard and runs exactly ``steps_per_epoch`` steps per epoch (the same
on every rank). A training row is a sampled-softmax list (``examples.training_lists``): one positive and
``ranker.negatives_per_positive`` of the same user's candidates; the loss is the cross-entropy of the
positive against its list, so the model learns to order a user's candidates, not to calibrate a click
probability. After every epoch rank 0 scores the validation set, computes NDCG@10 per user and
broadcasts whether to stop (early stopping with ``patience``); the best epoch's weights are returned.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from liverec.config import RankerSettings
from liverec.features import DENSE_FEATURES
from liverec.metrics import ndcg_at_k
from liverec.ranker import examples as ex
from liverec.ranker import feed
from liverec.ranker.model import Ranker, RankerShape

VALID_BATCH = 4096


@dataclass
class TrainResult:
    state: dict[str, np.ndarray]  # best epoch's weights
    shape: RankerShape
    history: list[dict[str, float]]  # per epoch: loss, val_ndcg (@ ranker.val_k), seconds, examples_per_s
    best_epoch: int
    best_ndcg: float
    examples_per_s: float  # training lists per second, training steps only, all ranks together
    train_examples: int  # sampled-softmax lists (one per positive)
    valid_examples: int  # validation rows (one per candidate)
    num_processes: int
    device: str
    privacy: dict[str, float] | None = None  # ranker.privacy on: epsilon spent, delta, noise multiplier, ...


def tables_from_vocab(vocab: DataFrame, id_dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(id_init, text_table), rows indexed by item_idx (0 = padding): ALS factors (small random values for
    items without one) and text embeddings (zeros without one; width taken from the embeddings themselves).

    The vocabulary is model-sized (one row per item); it comes to the driver once, through Arrow.
    """
    pdf = vocab.select("item_idx", "als_factor", "text_embedding").toPandas()
    n = int(pdf["item_idx"].max()) + 1 if len(pdf) else 1
    rng = np.random.default_rng(seed)
    id_init = (rng.normal(size=(n, id_dim)) * 0.01).astype(np.float32)
    id_init[0] = 0.0
    has_factor = pdf["als_factor"].map(lambda v: v is not None and len(v) == id_dim).to_numpy(dtype=bool)
    if has_factor.any():
        id_init[pdf["item_idx"].to_numpy()[has_factor]] = np.stack(pdf["als_factor"][has_factor].to_numpy())
    has_text = pdf["text_embedding"].map(lambda v: v is not None and len(v) > 0).to_numpy(dtype=bool)
    width = len(pdf["text_embedding"][has_text].iloc[0]) if has_text.any() else 1
    text = np.zeros((n, width), dtype=np.float32)
    if has_text.any():
        text[pdf["item_idx"].to_numpy()[has_text]] = np.stack(pdf["text_embedding"][has_text].to_numpy())
    return id_init, text


def dense_stats(train_rows: DataFrame, n_dense: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each dense feature over the training rows (in Spark)."""
    cols = [F.col("dense")[i] for i in range(n_dense)]
    row = train_rows.agg(*[F.avg(c).alias(f"m{i}") for i, c in enumerate(cols)],
                         *[F.stddev_pop(c).alias(f"s{i}") for i, c in enumerate(cols)]).collect()[0]
    mean = np.array([row[f"m{i}"] or 0.0 for i in range(n_dense)], dtype=np.float32)
    std = np.array([row[f"s{i}"] or 1.0 for i in range(n_dense)], dtype=np.float32)
    return mean, np.where(std > 1e-6, std, 1.0).astype(np.float32)


def _to_model_inputs(batch: dict, device: Any) -> tuple:
    """One row per candidate (validation): item_idx (B,), recent_idx (B, L), dense (B, n_dense)."""
    return (batch["item_idx"].long().to(device), batch["recent_idx"].long().to(device),
            batch["dense"].float().to(device))


def list_tensors(batch: dict, device: Any) -> tuple:
    """A batch of sampled-softmax lists as tensors: item_idx (B, M) with the positive first, the user's recent_idx
    (B, L), dense (B, M, n_dense) (flattened row by row in the feed), log_weight (B, M) (0 without the column)."""
    import torch

    items = batch["item_idx"].long().to(device)
    b, m = items.shape
    dense = batch["dense"].float().to(device).reshape(b, m, -1)
    log_weight = batch["log_weight"].float().to(device) if "log_weight" in batch else torch.zeros(b, m, device=device)
    return items, batch["recent_idx"].long().to(device), dense, log_weight


def list_logits(model: Any, batch: dict, device: Any) -> Any:
    """Logits (B, M) of a batch of sampled-softmax lists (``list_tensors``), each negative's log weight added (a
    weighted negative counts as that many copies, examples.training_lists)."""
    items, recent, dense, log_weight = list_tensors(batch, device)
    return model(items, recent, dense, lists=True) + log_weight


def score_batches(model: Any, batches: Any, device: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, labels, groups) of every batch, in order; the model in eval mode."""
    import torch

    model.eval()
    scores, labels, groups = [], [], []
    with torch.no_grad():
        for b in batches:
            scores.append(model(*_to_model_inputs(b, device)).float().cpu().numpy())
            labels.append(b["label"].numpy())
            groups.append(b["group"].numpy())
    if not scores:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(scores), np.concatenate(labels), np.concatenate(groups)


def train_worker(payload: dict) -> dict | None:
    """One DDP rank (runs in a process TorchDistributor starts). Returns the result on rank 0 only."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    use_gpu = payload["use_gpu"]
    backend = "nccl" if use_gpu else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}" if use_gpu else "cpu")
    if use_gpu:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, payload["threads_per_rank"]))
    torch.manual_seed(payload["seed"])
    np.random.seed(payload["seed"] + rank)

    shape = RankerShape.from_dict(payload["shape"])
    model = Ranker(shape, payload["id_init"], payload["text_table"], payload["dense_mean"], payload["dense_std"])
    model.to(device)
    privacy, private = payload.get("privacy"), None
    if privacy:  # DP-SGD (ranker/private.py): per-list gradients, Opacus clips, adds noise and all-reduces
        from liverec.ranker.private import PrivateSteps

        for p in model.parameters():  # every rank starts from rank 0's weights, as DDP would make them
            dist.broadcast(p.data, src=0)
        ddp = model
    else:
        ddp = DDP(model, device_ids=[local_rank] if use_gpu else None)
    opt = torch.optim.Adam(ddp.parameters(), lr=payload["lr"], weight_decay=payload["weight_decay"])
    if privacy:
        private = PrivateSteps(model, opt, privacy["noise_multiplier"], privacy["max_grad_norm"],
                               payload["batch_size"], privacy["sample_rate"], world)
    steps = payload["steps_per_epoch"]
    best, best_epoch, best_state, stale, history = -1.0, 0, None, 0, []
    stream = feed.batches(payload["train"], payload["batch_size"], rank, world, payload["seed"] + rank)
    train_seconds, trained = 0.0, 0
    for epoch in range(1, payload["epochs"] + 1):
        ddp.train()
        started, total, n = time.monotonic(), 0.0, 0
        for _ in range(steps):
            batch = next(stream)
            target = torch.zeros(len(batch["item_idx"]), dtype=torch.long, device=device)
            if private is not None:
                private.step(*list_tensors(batch, device))
                with torch.no_grad():
                    loss = torch.nn.functional.cross_entropy(list_logits(model, batch, device), target)
            else:
                # sampled softmax: the positive (column 0) against the user's negatives of its list
                loss = torch.nn.functional.cross_entropy(list_logits(ddp, batch, device), target)
                opt.zero_grad()
                loss.backward()
                opt.step()
            total += float(loss.detach()) * len(target)
            n += len(target)
        seconds = time.monotonic() - started
        totals = torch.tensor([total, float(n)], dtype=torch.float64, device=device)
        dist.all_reduce(totals)
        train_seconds += seconds
        trained += int(totals[1].item())
        stop = torch.zeros(1, device=device)
        if rank == 0:
            scores, labels, groups = score_batches(model, feed.all_batches(payload["valid"], VALID_BATCH), device)
            ndcg = ndcg_at_k(scores, labels, groups, payload["val_k"])
            history.append({"epoch": epoch, "loss": float(totals[0] / max(totals[1], 1)), "val_ndcg": ndcg,
                            "epoch_seconds": seconds, "examples_per_s": float(totals[1]) / max(seconds, 1e-9)})
            print(f"[train_ranker] epoch {epoch}: loss {history[-1]['loss']:.4f} val NDCG@{payload['val_k']} {ndcg:.4f} "
                  f"({history[-1]['examples_per_s']:.0f} examples/s over {world} processes)", flush=True)
            if ndcg > best:
                best, best_epoch, stale = ndcg, epoch, 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
            if stale >= payload["patience"]:
                stop[0] = 1.0
        dist.broadcast(stop, src=0)
        if stop.item() > 0:
            break
    stream.close()
    result = None
    if rank == 0:
        result = {"state": {k: v.numpy() for k, v in best_state.items()}, "history": history,
                  "best_epoch": best_epoch, "best_ndcg": best, "examples_per_s": trained / max(train_seconds, 1e-9),
                  "device": str(device),
                  "privacy": {**privacy, "epsilon": private.epsilon(privacy["delta"]), "steps": private.steps}
                  if private is not None else None}
        if payload.get("result_path"):  # see fit(): local mode hands the result over through this file
            tmp = payload["result_path"] + ".tmp"
            with open(tmp, "wb") as fh:
                pickle.dump(result, fh)
            os.replace(tmp, payload["result_path"])
    dist.barrier()
    dist.destroy_process_group()
    return result


def initial_parts(train_part: DataFrame, vocab: DataFrame, conf: RankerSettings, id_dim: int
                  ) -> tuple[RankerShape, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What a training run starts from: the model's shape, the id embedding's initial rows (ALS factors), the text
    table, and the dense features' mean and standard deviation over the training rows."""
    n_dense = len(DENSE_FEATURES)
    mean, std = dense_stats(train_part, n_dense)
    id_init, text = tables_from_vocab(vocab, id_dim, conf.seed)
    shape = RankerShape(n_items=len(id_init), id_dim=id_dim, text_in=text.shape[1], text_dim=conf.text_dim,
                        n_dense=n_dense, attention_hidden=conf.attention_hidden, cross_layers=conf.cross_layers,
                        hidden_units=tuple(conf.hidden_units), dropout=conf.dropout)
    return shape, id_init, text, mean, std


def fit(spark: SparkSession, rows: DataFrame, vocab: DataFrame, conf: RankerSettings, id_dim: int,
        cache_url: str, num_processes: int | None = None) -> TrainResult:
    """Train on ``rows`` (examples with item_idx/recent_idx, column ``split``) with TorchDistributor."""
    from pyspark.ml.torch.distributor import TorchDistributor

    world = num_processes or conf.num_processes
    train_part = rows.where(F.col("split") == "train")
    train_rows = ex.training_lists(train_part, conf.recent_items, conf.negatives_per_positive, conf.seed).cache()
    valid_rows = ex.validation_rows(rows.where((F.col("split") == "valid") & F.col("sampled")),
                                    conf.recent_items).cache()
    n_train, n_valid = train_rows.count(), valid_rows.count()
    if n_train == 0 or n_valid == 0:
        from liverec.errors import InputError

        raise InputError(f"the ranker needs training lists and validation rows (got {n_train} and {n_valid}): "
                         "use more data or another ranker.validation_fraction / ranker.label_fraction")
    shape, id_init, text, mean, std = initial_parts(train_part, vocab, conf, id_dim)
    train_conv = feed.materialise(spark, train_rows, cache_url, 2 * world)
    valid_conv = feed.materialise(spark, valid_rows, cache_url, 1)
    steps = max(1, math.ceil(n_train / (conf.batch_size * world)))
    privacy = private_plan(conf, n_train, world, steps)
    cores = os.cpu_count() or 1
    payload = {"train": train_conv, "valid": valid_conv, "shape": shape.to_dict(), "id_init": id_init,
               "text_table": text, "dense_mean": mean, "dense_std": std, "lr": conf.learning_rate,
               "weight_decay": conf.weight_decay, "batch_size": conf.batch_size, "epochs": conf.epochs,
               "patience": conf.patience, "val_k": conf.val_k, "steps_per_epoch": steps, "seed": conf.seed,
               "use_gpu": conf.use_gpu, "privacy": privacy,
               "threads_per_rank": max(1, cores // world)}
    # In local mode every rank's return value is pickled to the same file (pyspark 4.0's TorchDistributor),
    # so rank 1's None can overwrite rank 0's result: rank 0 writes it to a file of its own instead.
    result_dir = tempfile.mkdtemp(prefix="liverec-ranker-")
    if conf.local_mode:
        payload["result_path"] = os.path.join(result_dir, "result.pkl")
    try:
        out = TorchDistributor(num_processes=world, local_mode=conf.local_mode, use_gpu=conf.use_gpu).run(
            train_worker, payload)
        if conf.local_mode:
            with open(payload["result_path"], "rb") as fh:
                out = pickle.load(fh)
        if out is None:
            raise RuntimeError("the ranker's training processes returned no result (see their log above)")
    finally:
        shutil.rmtree(result_dir, ignore_errors=True)
        feed.delete(train_conv)
        feed.delete(valid_conv)
        train_rows.unpersist()
        valid_rows.unpersist()
    return TrainResult(out["state"], shape, out["history"], out["best_epoch"], out["best_ndcg"],
                       out["examples_per_s"], n_train, n_valid, world, out["device"], out.get("privacy"))


def private_plan(conf: RankerSettings, n_train: int, world: int, steps_per_epoch: int) -> dict[str, float] | None:
    """``ranker.privacy``'s DP-SGD settings for a run (None when off): the sampling rate of a global batch, and the
    noise multiplier with which ``ranker.epochs`` epochs of ``steps_per_epoch`` steps spend at most
    ``target_epsilon`` at ``delta`` (``private.noise_for``)."""
    p = conf.privacy
    if not p.enabled:
        return None
    from liverec.errors import InputError
    from liverec.ranker import private

    if not p.target_epsilon > 0 or not 0 < p.delta < 1 or not p.max_grad_norm > 0:
        raise InputError(f"ranker.privacy needs target_epsilon > 0, 0 < delta < 1 and max_grad_norm > 0, got "
                         f"{p.target_epsilon}, {p.delta}, {p.max_grad_norm}")
    rate = min(1.0, conf.batch_size * world / n_train)
    planned = conf.epochs * steps_per_epoch
    return {"target_epsilon": float(p.target_epsilon), "delta": float(p.delta), "max_grad_norm": float(p.max_grad_norm),
            "sample_rate": rate, "planned_steps": planned,
            "noise_multiplier": private.noise_for(p.target_epsilon, p.delta, rate, planned)}


def load_model(shape: RankerShape, state: dict[str, np.ndarray]) -> Any:
    """A Ranker in eval mode with ``state``'s weights."""
    import torch

    model = Ranker(shape)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    model.eval()
    return model


def state_bytes(state: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **state)
    return buf.getvalue()


def log_history(result: TrainResult, k: int) -> None:
    """Per-epoch loss, validation NDCG@k (``ranker.val_k``; metric ``val_ndcg_at_<k>``) and lists/s, and the best
    epoch, to the active MLflow run."""
    import mlflow

    for h in result.history:
        mlflow.log_metrics({"loss": h["loss"], f"val_ndcg_at_{k}": h["val_ndcg"],
                            "examples_per_s": h["examples_per_s"]}, step=int(h["epoch"]))
    mlflow.log_metrics({f"best_val_ndcg_at_{k}": result.best_ndcg, "best_epoch": result.best_epoch,
                        "train_examples_per_s": result.examples_per_s})
