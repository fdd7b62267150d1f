"""What a training run records: throughput and memory per step, the items each worker saw,
the TSV log and the loss curve.

- :func:`make_callback_class` adds ``tokens_per_second``, ``peak_memory_mb`` and a
  ``session`` number (1 + the sessions already in the history, so a resumed run starts
  session 2) to every loss entry of Trainer's log history;
- :func:`make_shard_callback` appends, per worker and epoch, the dataset items it trained
  on to ``<checkpoint_dir>/shards/rank-<r>.jsonl``: the audit that data-parallel workers see
  disjoint shards and that a resumed run does not repeat items;
- :func:`write_training_log` writes the loss entries as a TSV with the columns of
  :data:`LOG_COLUMNS` (a column the history lacks is empty); :func:`plot_loss` draws the
  loss per step, a dashed line where a session resumed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rekalm.common.io import atomic_path
from rekalm.training.training_data import PackedRows, SingleExamples

if TYPE_CHECKING:
    from transformers import TrainerCallback

log = logging.getLogger(__name__)


def peak_memory_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_callback_class() -> type:
    from transformers import TrainerCallback

    class ThroughputLog(TrainerCallback):
        """Adds tokens/s, peak memory and a session number to every loss entry of the log
        history. The history lives in trainer_state.json, so a resumed run keeps the rows
        logged before the interruption; ``session`` shows where it resumed."""

        def __init__(self, device: str):
            self.device = device
            self.session = 1
            self.last_time = 0.0
            self.last_tokens = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.session = 1 + max((entry.get("session", 0) for entry in state.log_history), default=0)
            self.last_time = time.perf_counter()
            self.last_tokens = state.num_input_tokens_seen
            if self.device == "cuda":
                import torch

                torch.cuda.reset_peak_memory_stats()

        def on_log(self, args, state, control, logs=None, **kwargs):
            entry = state.log_history[-1] if state.log_history else {}
            if "loss" not in entry or entry.get("step") != state.global_step:
                return
            now = time.perf_counter()
            tokens = state.num_input_tokens_seen
            entry["tokens_per_second"] = (tokens - self.last_tokens) / max(now - self.last_time, 1e-9)
            entry["peak_memory_mb"] = peak_memory_mb(self.device)
            entry["session"] = self.session
            self.last_time, self.last_tokens = now, tokens

    return ThroughputLog


SHARD_FOLDER = "shards"


def make_shard_callback(dataset: PackedRows | SingleExamples, checkpoint_dir: str) -> TrainerCallback:
    """Record which dataset items each worker trained on, per epoch, in
    ``<checkpoint_dir>/shards/rank-<r>.jsonl`` and the log: the audit that data-parallel
    workers see disjoint shards and a resumed run does not repeat items."""
    from transformers import TrainerCallback

    class ShardLog(TrainerCallback):
        def _record(self, args, state, complete: bool) -> None:
            rows, dataset.served[:] = sorted(dataset.served), []
            if not rows:
                return
            epoch = max(0, math.ceil(state.epoch or 0) - 1) if complete else math.floor(state.epoch or 0)
            entry = {
                "rank": args.process_index,
                "world_size": args.world_size,
                "epoch": epoch,
                "complete": complete,
                "step": state.global_step,
                "items": rows,
            }
            log.info(
                "rank %d of %d, epoch %d%s: trained on %d items",
                args.process_index,
                args.world_size,
                epoch,
                "" if complete else " (partial)",
                len(rows),
            )
            path = Path(checkpoint_dir) / SHARD_FOLDER / f"rank-{args.process_index}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")

        def on_epoch_end(self, args, state, control, **kwargs):
            self._record(args, state, complete=True)

        def on_train_end(self, args, state, control, **kwargs):
            self._record(args, state, complete=False)

    return ShardLog()


LOG_COLUMNS = [
    "step",
    "epoch",
    "loss",
    "learning_rate",
    "grad_norm",
    "num_input_tokens_seen",
    "tokens_per_second",
    "peak_memory_mb",
    "session",
]


def training_log_table(log_history: list[dict[str, Any]]):
    import pandas as pd

    entries = [entry for entry in log_history if "loss" in entry]
    table = pd.DataFrame(entries)
    for column in LOG_COLUMNS:
        if column not in table:
            table[column] = pd.NA
    return table[LOG_COLUMNS].sort_values("step", kind="stable").reset_index(drop=True)


def write_training_log(log_history: list[dict[str, Any]], tsv_path: str | os.PathLike[str]) -> None:
    with atomic_path(tsv_path) as temp:
        training_log_table(log_history).to_csv(temp, sep="\t", index=False)


def plot_loss(log_history: list[dict[str, Any]], png_path: str | os.PathLike[str], title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    table = training_log_table(log_history)
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(table["step"], table["loss"].astype(float), linewidth=1.2, label="training loss")
    resumed = table.loc[table["session"].ne(table["session"].shift()) & (table.index > 0), "step"]
    for step in resumed:
        axis.axvline(step, color="grey", linestyle="--", linewidth=0.8)
    axis.set_xlabel("optimizer step" + (" (dashed: resumed)" if len(resumed) else ""))
    axis.set_ylabel("loss")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(png_path) as temp:
        figure.savefig(temp, format="png", dpi=120)
    plt.close(figure)
