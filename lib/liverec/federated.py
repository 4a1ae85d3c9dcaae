"""Federated training of the ranker with Flower: a server and N silo processes, FedAvg (``train_ranker_federated``).

This module runs in Flower's own virtual environment (``make flower-setup``: flwr there, torch, numpy and pyarrow
from the liverec environment behind it), started by ``liverec.stages.federated`` as real processes on the
loopback interface:

    python -m liverec.federated server --port P --silos N --rounds R --init INIT.npz --valid DIR --out OUT
    python -m liverec.federated silo --server 127.0.0.1:P --data DIR/silo=K --manifest M.json --local-epochs E ...

The server holds the initial model and the validation rows only; it starts from the initial weights, asks every
silo for an update each round (``flwr.server.strategy.FedAvg``: the weights averaged, each silo weighted by its
training lists), scores the averaged model on the validation rows after every round (NDCG@``val_k``) and writes
the best round's weights and the history. A silo reads its own folder of training lists (the parquet files of
its users only), trains ``local_epochs`` passes over them per round (sampled softmax, Adam, as ``train_ranker``)
and sends back only the model's weights and its list count; it writes a manifest of what it read (files, rows, the
users' hashed ids), which the tests use to show that no silo read another's rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BATCH = 64


def _model(init: Path) -> Any:
    """The initial Ranker of ``init`` (npz: the state dict + a ``__shape__`` JSON)."""
    from liverec.ranker.model import Ranker, RankerShape

    data = np.load(init)
    shape = RankerShape.from_dict(json.loads(str(data["__shape__"])))
    model = Ranker(shape)
    import torch

    model.load_state_dict({k: torch.as_tensor(data[k]) for k in model.state_dict()})
    return model


def weights_of(model: Any) -> list[np.ndarray]:
    """The state dict (parameters and buffers, in order) as numpy arrays: what travels."""
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def load_weights(model: Any, weights: list[np.ndarray]) -> None:
    import torch

    model.load_state_dict({k: torch.as_tensor(w) for k, w in zip(model.state_dict(), weights, strict=True)})


def _columns(folder: Path, names: tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    """The parquet files directly in ``folder`` (one silo's or the validation rows), as numpy columns, and the
    files read."""
    import pyarrow.parquet as pq

    files = sorted(str(p) for p in folder.glob("*.parquet"))
    if not files:
        raise SystemExit(f"no parquet file in {folder}")
    table = pq.ParquetDataset(files).read(columns=list(names))
    out = {}
    for name in names:
        col = table[name]
        out[name] = (np.stack(col.to_numpy(zero_copy_only=False)) if str(col.type).startswith("list")
                     else col.to_numpy())
    return out, files


# --------------------------------------------------------------------------- silo

def train_local(model: Any, lists: dict[str, np.ndarray], epochs: int, lr: float, weight_decay: float,
                seed: int) -> float:
    """``epochs`` passes of sampled-softmax training over ``lists`` (item_idx (n, M), recent_idx (n, L), dense
    (n, M x n_dense), log_weight (n, M)); the mean loss of the last pass."""
    import torch

    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(lists["item_idx"])
    rng = np.random.default_rng(seed)
    model.train()
    total = 0.0
    for _ in range(epochs):
        total, order = 0.0, rng.permutation(n)
        for start in range(0, n, BATCH):
            idx = order[start:start + BATCH]
            items = torch.as_tensor(lists["item_idx"][idx], dtype=torch.long)
            b, m = items.shape
            dense = torch.as_tensor(lists["dense"][idx], dtype=torch.float32).reshape(b, m, -1)
            logits = model(items, torch.as_tensor(lists["recent_idx"][idx], dtype=torch.long), dense, lists=True)
            logits = logits + torch.as_tensor(lists["log_weight"][idx], dtype=torch.float32)
            loss = torch.nn.functional.cross_entropy(logits, torch.zeros(b, dtype=torch.long))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * b
    return total / max(n, 1)


def silo_main(args: argparse.Namespace) -> int:
    import flwr as fl
    import torch

    torch.set_num_threads(1)
    lists, files = _columns(Path(args.data), ("item_idx", "recent_idx", "dense", "log_weight", "group"))
    Path(args.manifest).write_text(json.dumps({"silo": args.silo, "folder": str(Path(args.data).resolve()),
                                               "files": files, "rows": int(len(lists["group"])),
                                               "users": sorted({int(g) for g in lists["group"]})}))
    model = _model(Path(args.init))
    del lists["group"]

    class Silo(fl.client.NumPyClient):
        def get_parameters(self, config: dict) -> list[np.ndarray]:
            return weights_of(model)

        def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list[np.ndarray], int, dict]:
            load_weights(model, parameters)
            rnd = int(config.get("round", 0))
            loss = train_local(model, lists, args.local_epochs, args.lr, args.weight_decay,
                               args.seed + 1000 * args.silo + rnd)
            print(f"[silo {args.silo}] round {rnd}: {len(lists['item_idx']):,} lists, loss {loss:.4f}", flush=True)
            return weights_of(model), len(lists["item_idx"]), {"loss": loss}

    fl.client.start_client(server_address=args.server, client=Silo().to_client())
    return 0


# --------------------------------------------------------------------------- server

def server_main(args: argparse.Namespace) -> int:
    import flwr as fl
    import torch

    from liverec.metrics import ndcg_at_k

    torch.set_num_threads(1)
    model = _model(Path(args.init))
    valid, _ = _columns(Path(args.valid), ("item_idx", "recent_idx", "dense", "label", "group"))
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"ndcg": -1.0, "round": 0, "weights": weights_of(model)}
    started = last = time.monotonic()
    fitted: dict[str, float] = {}

    def fit_metrics(metrics: list[tuple[int, dict]]) -> dict:
        """The silos' training loss, weighted by their lists (FedAvg's weights), and the lists trained on."""
        n = sum(k for k, _ in metrics)
        fitted.update(loss=sum(k * m["loss"] for k, m in metrics) / max(n, 1), lists=float(n))
        return dict(fitted)

    def evaluate(server_round: int, parameters: list[np.ndarray], config: dict) -> tuple[float, dict]:
        load_weights(model, parameters)
        model.eval()
        scores = []
        with torch.no_grad():
            for s in range(0, len(valid["item_idx"]), 4096):
                scores.append(model(torch.as_tensor(valid["item_idx"][s:s + 4096], dtype=torch.long),
                                    torch.as_tensor(valid["recent_idx"][s:s + 4096], dtype=torch.long),
                                    torch.as_tensor(valid["dense"][s:s + 4096], dtype=torch.float32)).numpy())
        nonlocal last
        ndcg = ndcg_at_k(np.concatenate(scores), valid["label"], valid["group"], args.val_k)
        now = time.monotonic()
        if server_round > 0:
            history.append({"epoch": server_round, "loss": fitted.get("loss", float("nan")), "val_ndcg": ndcg,
                            "epoch_seconds": now - last, "examples_per_s": fitted.get("lists", 0.0) / (now - last),
                            "seconds": now - started})
        last = now
        print(f"[server] round {server_round}: val NDCG@{args.val_k} {ndcg:.4f}"
              + (f", silos' loss {fitted['loss']:.4f}" if server_round > 0 and "loss" in fitted else ""), flush=True)
        if server_round > 0 and ndcg > best["ndcg"]:
            best.update(ndcg=ndcg, round=server_round, weights=[w.copy() for w in parameters])
        return 1.0 - ndcg, {"ndcg": ndcg}

    strategy = fl.server.strategy.FedAvg(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=args.silos, min_available_clients=args.silos,
        evaluate_fn=evaluate, on_fit_config_fn=lambda rnd: {"round": rnd}, fit_metrics_aggregation_fn=fit_metrics,
        initial_parameters=fl.common.ndarrays_to_parameters(weights_of(model)))
    fl.server.start_server(server_address=f"127.0.0.1:{args.port}",
                           config=fl.server.ServerConfig(num_rounds=args.rounds, round_timeout=args.round_timeout),
                           strategy=strategy)
    out = Path(args.out)
    np.savez(out / "weights.npz", **{k: w for k, w in zip(model.state_dict(), best["weights"], strict=True)})
    (out / "history.json").write_text(json.dumps({"history": history, "best_round": best["round"],
                                                  "best_ndcg": best["ndcg"]}))
    return 0 if best["round"] > 0 else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m liverec.federated", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="role", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--silos", type=int, required=True)
    s.add_argument("--rounds", type=int, required=True)
    s.add_argument("--round-timeout", type=float, default=None)
    s.add_argument("--init", required=True)
    s.add_argument("--valid", required=True)
    s.add_argument("--val-k", type=int, default=10)
    s.add_argument("--out", required=True)
    c = sub.add_parser("silo")
    c.add_argument("--server", required=True)
    c.add_argument("--silo", type=int, required=True)
    c.add_argument("--data", required=True)
    c.add_argument("--manifest", required=True)
    c.add_argument("--init", required=True)
    c.add_argument("--local-epochs", type=int, default=1)
    c.add_argument("--lr", type=float, default=0.001)
    c.add_argument("--weight-decay", type=float, default=0.0)
    c.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    return server_main(args) if args.role == "server" else silo_main(args)


if __name__ == "__main__":
    sys.exit(main())
