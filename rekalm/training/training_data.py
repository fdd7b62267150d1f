"""Training rows as token ids and labels: encoding, the loss mask, packing and collation.

One ``train.jsonl`` row ``{kind, prompt, completion}`` is encoded as ONE string with
:func:`rekalm.llm.prompts.encode_prompt_and_answer` (the tokens inference ranks and continues);
the completion gets EOS and the example is cut to ``seq_len``. The boundary rule, in one line:
prompt tokens get label -100, completion tokens and EOS are learned (``loss: completion_only``,
the default; a knowledge document has prompt ``""``, so all of it is learned); with
``loss: full_sequence`` (the original study) every token is learned. A completion-only
example whose prompt alone fills ``seq_len`` has nothing to learn and is dropped (counted).

Example (SmolLM2's tokenizer, EOS ``<|im_end|>`` = 2; tokens shown as text)::

    prompt      "Liked: Alien (1979)\\n"
    completion  "Here a list:\\n1. Heat (1995)"
    tokens      L  iked  : ␣Alien ␣( 1  9  7  9  )  \\n  | Here ␣a ␣list : \\n  1  .  ␣Heat ␣( 1  9  9  5  )  EOS
    input_ids   60 42052 42 43734 365 33 41 39 41 25 198 | 4590 253 1398 42 198 33 30 16708 365 33 41 41 37 25 2
    labels      -100 (11 times)                          | 4590 253 1398 42 198 33 30 16708 365 33 41 41 37 25 2
    (full_sequence: labels == input_ids)

Packing (``packing: true``): :func:`pack_best_fit` groups examples best-fit-decreasing into
rows of at most ``seq_len`` tokens, and :class:`PackedRowCollator` batches the rows with
position ids restarting at 0 for every example and no attention mask, so transformers builds
a block-diagonal causal mask (SDPA/eager) and no example sees another. The first token of
each example is never a target, so no example learns to predict across a boundary. Two
examples ``a`` (3 tokens) and ``b`` (2 tokens) in a batch whose longest row has 6 tokens::

    input_ids     [a0,   a1, a2, b0,   b1, pad]
    position_ids  [ 0,    1,  2,  0,    1,   0]     # the padded tail is a segment of its own
    labels        [-100, a1, a2, -100, b1, -100]    # (completion_only masks prompt tokens too)

For flash-attention :class:`FlattenedRowCollator` puts the batch's examples in one row
(transformers' ``DataCollatorWithFlattening``) and the varlen kernels use the same position
ids; without packing :class:`SingleExamples` serves one padded example per item.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tqdm import tqdm

from rekalm.common.io import read_jsonl
from rekalm.llm.prompts import encode_prompt_and_answer

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100  # the label value torch's cross-entropy (and transformers) skip
LossMode = Literal["completion_only", "full_sequence"]


@dataclass
class TokenizedSet:
    examples: list[dict[str, list[int]]]
    dropped: int  # completion-only examples whose prompt alone fills seq_len
    truncated: int


def load_training_rows(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Read train.jsonl and check every row has string ``prompt`` and ``completion``."""
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path}: no training rows")
    for number, row in enumerate(rows, start=1):
        for key in ("prompt", "completion"):
            if not isinstance(row.get(key), str):
                raise ValueError(
                    f"{path}:{number}: field {key!r} must be a string (rows are {{kind, prompt, completion}})"
                )
        if not row["completion"]:
            raise ValueError(f"{path}:{number}: empty completion")
    return rows


def tokenize_rows(
    rows: Sequence[dict[str, str]], tokenizer: PreTrainedTokenizerBase, seq_len: int, loss: LossMode
) -> TokenizedSet:
    """Token ids and labels per row: ``prompt`` then ``completion`` + EOS, cut to ``seq_len``."""
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer: no eos_token_id; the completion needs an end-of-sequence token")
    # Prompt and completion are encoded as one string, as inference meets them (the
    # completion's tokens depend on what precedes them); offsets place the label boundary.
    encoded = encode_prompt_and_answer(tokenizer, [r["prompt"] for r in rows], [r["completion"] for r in rows])
    examples, dropped, truncated = [], 0, 0
    for ids, boundary in tqdm(encoded, total=len(rows), desc="tokenizing", mininterval=5):
        prompt_ids = ids[:boundary]
        completion_ids = ids[boundary:] + [tokenizer.eos_token_id]
        if loss == "completion_only" and len(prompt_ids) >= seq_len:
            dropped += 1
            continue
        input_ids = (prompt_ids + completion_ids)[:seq_len]
        truncated += len(prompt_ids) + len(completion_ids) > seq_len
        if loss == "completion_only":
            labels = [IGNORE_INDEX] * len(prompt_ids) + input_ids[len(prompt_ids) :]
        else:
            labels = list(input_ids)
        examples.append({"input_ids": input_ids, "labels": labels})
    return TokenizedSet(examples, dropped, truncated)


def pack_best_fit(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group example indices into rows of at most ``capacity`` tokens (best-fit decreasing).

    A sorted list of free space + bisect finds the tightest row in O(log rows) search
    (plus a C-level memmove), so 10^5 examples pack in well under a second.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free tokens, row index), sorted
    for index in order:
        length = lengths[index]
        if length > capacity:
            raise ValueError(f"packing: example {index} has {length} tokens > seq_len {capacity}")
        slot = bisect.bisect_left(free, (length, -1))
        if slot < len(free):
            space, row = free.pop(slot)
        else:
            space, row = capacity, len(rows)
            rows.append([])
        rows[row].append(index)
        if space - length > 0:
            bisect.insort(free, (space - length, row))
    return rows


class PackedRows:
    """A map-style dataset whose items are packed rows: ``{"segments": [example, ...]}``."""

    def __init__(self, examples: list[dict[str, list[int]]], rows: list[list[int]]):
        self.examples = examples
        self.rows = rows
        self.served: list[int] = []  # items this process trained on since the last epoch end

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, list[dict[str, list[int]]]]:
        self.served.append(index)
        return {"segments": [self.examples[i] for i in self.rows[index]]}


class SingleExamples:
    """One example per item (no packing): the plain layout, padded per batch."""

    def __init__(self, examples: list[dict[str, list[int]]]):
        self.examples = examples
        self.served: list[int] = []  # items this process trained on since the last epoch end

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        self.served.append(index)
        return self.examples[index]


@dataclass
class PackedRowCollator:
    """Batch packed rows as [batch, longest row] with position ids restarting per example.

    Hand-written because transformers' ``DataCollatorWithFlattening`` puts the whole batch
    into ONE row: fine for flash-attention's varlen kernels, but under SDPA that is a
    (batch*seq_len)^2 mask, 4x the attention work of [batch, seq_len] at batch 4. Row tails
    are padded as a segment of their own (positions from 0, labels -100), so real tokens
    never attend to padding and no attention mask is needed (a 2-D mask would switch
    transformers' packed-sequence detection off).
    """

    pad_token_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        rows = [self._row(feature["segments"]) for feature in features]
        width = max(len(ids) for ids, _, _ in rows)
        batch_ids, batch_labels, batch_positions = [], [], []
        for ids, labels, positions in rows:
            pad = width - len(ids)
            batch_ids.append(ids + [self.pad_token_id] * pad)
            batch_labels.append(labels + [IGNORE_INDEX] * pad)
            batch_positions.append(positions + list(range(pad)))
        return {
            "input_ids": torch.tensor(batch_ids, dtype=torch.long),
            "labels": torch.tensor(batch_labels, dtype=torch.long),
            "position_ids": torch.tensor(batch_positions, dtype=torch.long),
        }

    @staticmethod
    def _row(segments: list[dict[str, list[int]]]) -> tuple[list[int], list[int], list[int]]:
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for segment in segments:
            ids += segment["input_ids"]
            labels += [IGNORE_INDEX] + segment["labels"][1:]  # never predict across a boundary
            positions += range(len(segment["input_ids"]))
        return ids, labels, positions


class FlattenedRowCollator:
    """For flash-attention: the batch's examples in one row, via transformers' own collator
    (the varlen kernels then attend within each example only, at no extra cost)."""

    def __init__(self) -> None:
        from transformers import DataCollatorWithFlattening

        self.flatten = DataCollatorWithFlattening(return_tensors="pt")

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.flatten([segment for feature in features for segment in feature["segments"]])
