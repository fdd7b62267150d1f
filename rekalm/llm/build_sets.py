"""Per-ablation training and test sets.

Inputs: the split (``split.parquet``, ``candidates.parquet``), the item names
(``items.parquet``), the lexicalized files of the ablation's sources and the base model's
tokenizer (for its chat template and for token counts). Outputs:

- ``train.jsonl``: ``{"kind", "prompt", "completion"}`` rows, shuffled with ``seed``:
  ``kind == "ranking"``: one example per TRAIN user (prompt rendered by
  :func:`rekalm.llm.prompts.render_ranking_prompt`, completion ``"Here a list:\\n1. ..."`` with the
  held-out liked items first, then the held-out disliked ones, each group in the user's
  shuffled candidate order); ``kind == <source>``: a knowledge document (prompt ``""``).
- ``test.jsonl``: one row per TEST user ``{"user", "prompt", "answer_prefix",
  "candidates": [{"item", "name"}]}``, rendered by the same function.
- ``stats.json``: examples per kind, token lengths (p50/p95/max), cuts and drops.

Test users never enter ``train.jsonl``; a train user's held-out items appear only as that
user's candidates and target, never in a history section (an item that is both is removed
from the history and counted).

Mixes (``weights``, :meth:`rekalm.llm.build_inputs.BuildSettings.mix_for`): with
``placement: documents``, no source -> ranking x1; one source -> ranking x1 + documents x3;
several -> ranking x3 + each source's documents x1.
With ``placement: in_prompt`` there are no documents: the facts and rules about each user's
candidates are appended to the ranking prompt ("Facts that may help:"), at training and at
inference alike, and ranking examples are repeated ``weights.in_prompt.ranking`` times.
In-prompt knowledge (facts about the candidates, and rules whose whole antecedent is in the
user's liked history) is chosen by :class:`rekalm.llm.prompt_fit.KnowledgeSelector`. Rules are
mined from train users' history halves only, so they carry no held-out label.

Length rule (never silent; every cut is counted in stats.json; :mod:`rekalm.llm.prompt_fit`):
``prompt + answer + 1 (EOS) <= seq_len`` and ``prompt <= max_prompt_tokens`` (when set),
where ``answer`` lists every candidate; history is cut first (the latest items kept, liked
and disliked in proportion), in-prompt knowledge next, and a prompt that still does not fit
is kept whole and counted as ``exceeds_seq_len``.

Items whose display name is shorter than ``min_name_length`` characters (the original study
dropped names of <= 2 characters) are left out of prompt text: history, candidates, targets
and test candidates.
Documents of the ``text`` source are trimmed to ``text_max_tokens`` tokens at a sentence end.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from rekalm.common.io import read_jsonl, read_parquet, write_json, write_jsonl
from rekalm.common.tables import CANDIDATES, SPLIT, require_columns
from rekalm.knowledge.lexicalize import LEXICALIZERS, item_names
from rekalm.llm.build_inputs import BuildSettings, Counts, MixWeights, Row, UserLists, load_user_lists
from rekalm.llm.hf import load_tokenizer
from rekalm.llm.prompt_fit import KnowledgeSelector, PromptBuilder, SourceRows, TokenCounter
from rekalm.llm.prompts import ANSWER_PREFIX, has_chat_template

log = logging.getLogger(__name__)


def describe_lengths(lengths: Sequence[int]) -> dict[str, float]:
    if not lengths:
        return {"count": 0, "p50": 0.0, "p95": 0.0, "max": 0.0}
    values = np.asarray(lengths, dtype="float64")
    return {
        "count": int(values.size),
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "max": float(values.max()),
    }


# ---------------------------------------------------------------- sets


@dataclass
class BuiltSets:
    train: list[Row]
    test: list[Row]
    stats: dict[str, Any]


def build_sets(
    split: pd.DataFrame,
    candidates: pd.DataFrame,
    items: pd.DataFrame,
    knowledge: Mapping[str, list[Row]],
    tokenizer: Any,
    settings: BuildSettings,
    domain_label: str,
    ablation: str = "",
) -> BuiltSets:
    """Train and test rows for one ablation; ``knowledge`` maps each of the ablation's
    sources (in config order) to its lexicalized rows."""
    require_columns(split, SPLIT, "split.parquet")
    require_columns(candidates, CANDIDATES, "candidates.parquet")
    names = item_names(items, "items.parquet")
    for name, rows in knowledge.items():
        # A source registered as possibly empty (collab: no rule at the thresholds is a
        # documented outcome) may be; any other empty source would make the ablation no_kn
        # under another name.
        if not rows and not (name in LEXICALIZERS and LEXICALIZERS[name].may_be_empty):
            raise ValueError(
                f"lexicalize/{name}.jsonl is empty, so ablation {ablation!r} would train without its {name!r} "
                "knowledge; check lookup_dbpedia's stats.json"
            )
    counter = TokenCounter(tokenizer)
    counts = Counts()
    sources = [SourceRows.from_rows(name, rows) for name, rows in knowledge.items()]
    selector = KnowledgeSelector(sources, counter, settings) if settings.placement == "in_prompt" else None
    builder = PromptBuilder(tokenizer, counter, names, domain_label, settings, selector)

    users = load_user_lists(split, candidates, names, settings, counts)
    ranking, test, length_stats = _ranking_and_test_rows(users, builder, counts)
    _require_examples(ranking, test, length_stats, counts, settings)
    interacted = set(split["item"]) | set(candidates["item"])
    documents, document_stats = (
        _documents(sources, counter, settings, interacted) if settings.placement == "documents" else ({}, {})
    )
    mix = settings.mix_for(list(knowledge))
    train = _mix(ranking, documents, mix, settings.seed)

    stats = {
        "ablation": ablation,
        "sources": list(knowledge),
        "placement": settings.placement,
        "seq_len": settings.seq_len,
        "max_prompt_tokens": settings.max_prompt_tokens,
        "seed": settings.seed,
        "chat_template": "tokenizer" if has_chat_template(tokenizer) else "plain",
        "weights": {"ranking": mix.ranking, "documents": mix.documents},
        "train": {
            "examples": len(train),
            "examples_per_kind": dict(sorted(Counter(r["kind"] for r in train).items())),
            "unique_examples_per_kind": {"ranking": len(ranking), **{k: len(v) for k, v in documents.items()}},
            **length_stats["train"],
            **document_stats,
        },
        "test": length_stats["test"],
        "items": {
            "catalog": len(names),
            "short_names": sum(len(n.strip()) < settings.min_name_length for n in names.values()),
        },
        "counts": counts.as_dict(),
    }
    _warn_about(stats)
    return BuiltSets(train, test, stats)


def _require_examples(
    ranking: list[Row], test: list[Row], stats: Mapping[str, Any], counts: Counts, settings: BuildSettings
) -> None:
    """An ablation without ranking examples (or test prompts) trains or scores nothing."""
    for name, rows in (("train", ranking), ("test", test)):
        if not rows:
            dropped = counts.as_dict().get(f"{name}_users_without_candidates", 0)
            raise ValueError(
                f"no {name} user has a ranking prompt ({dropped} {name} user(s) lost every candidate, e.g. to names "
                "shorter than "
                f"min_name_length={settings.min_name_length}); check the split and lexicalize.min_name_length"
            )
    unusable = stats["train"]["ranking_cuts"]["prompt_fills_seq_len"]
    if unusable == len(ranking):
        shortest = stats["train"]["shortest_prompt_tokens"]
        raise ValueError(
            f"seq_len {settings.seq_len} is too small for any ranking prompt (the shortest train prompt, history "
            "cut, has "
            f"{shortest} tokens), so training would see knowledge documents only; raise the training preset's "
            f"seq_len above {shortest}"
        )


def _ranking_and_test_rows(
    users: list[UserLists], builder: PromptBuilder, counts: Counts
) -> tuple[list[Row], list[Row], dict[str, dict[str, Any]]]:
    ranking: list[Row] = []
    test: list[Row] = []
    lengths: dict[str, dict[str, list[int]]] = {
        "train": {"total": [], "prompt": []},
        "test": {"prompt": [], "answer": []},
    }
    cut: dict[str, Counter[str]] = {"train": Counter(), "test": Counter()}
    for user in tqdm(users, desc="prompts", mininterval=5):
        if user.user_set not in ("train", "test"):
            raise ValueError(
                f"candidates.parquet: user {user.user!r} has user_set {user.user_set!r}; expected 'train' or 'test'"
            )
        if not user.candidates:
            counts.add(f"{user.user_set}_users_without_candidates")
            continue
        fitted = builder.fit(user)
        part = cut[user.user_set]
        part["history_cut"] += fitted.history_dropped > 0
        part["history_items_dropped"] += fitted.history_dropped
        part["knowledge_cut"] += fitted.knowledge_dropped > 0
        part["exceeds_seq_len"] += fitted.exceeds_seq_len
        part["prompt_fills_seq_len"] += fitted.prompt_tokens >= builder.settings.seq_len  # training drops these
        if user.user_set == "train":
            lengths["train"]["prompt"].append(fitted.prompt_tokens)
            ranking.append({"kind": "ranking", "prompt": fitted.prompt, "completion": fitted.answer})
            lengths["train"]["total"].append(fitted.prompt_tokens + fitted.answer_tokens + 1)
        else:
            test.append(
                {
                    "user": user.user,
                    "prompt": fitted.prompt,
                    "answer_prefix": ANSWER_PREFIX,
                    "candidates": [{"item": item, "name": builder.names[item]} for item in user.candidates],
                }
            )
            lengths["test"]["prompt"].append(fitted.prompt_tokens)
            lengths["test"]["answer"].append(fitted.answer_tokens)
    stats = {
        "train": {
            "ranking_users": len(ranking),
            "ranking_tokens": describe_lengths(lengths["train"]["total"]),
            "ranking_cuts": {
                k: int(cut["train"][k])
                for k in (
                    "history_cut",
                    "history_items_dropped",
                    "knowledge_cut",
                    "exceeds_seq_len",
                    "prompt_fills_seq_len",
                )
            },
            "shortest_prompt_tokens": min(lengths["train"]["prompt"], default=0),
        },
        "test": {
            "users": len(test),
            "prompt_tokens": describe_lengths(lengths["test"]["prompt"]),
            "answer_tokens": describe_lengths(lengths["test"]["answer"]),
            "answers_over_512_tokens": int(sum(a > 512 for a in lengths["test"]["answer"])),
            "cuts": {
                k: int(cut["test"][k])
                for k in ("history_cut", "history_items_dropped", "knowledge_cut", "exceeds_seq_len")
            },
        },
    }
    return ranking, test, stats


def _documents(
    sources: Sequence[SourceRows], counter: TokenCounter, settings: BuildSettings, interacted: set[str]
) -> tuple[dict[str, list[Row]], dict[str, Any]]:
    """Knowledge documents per source; ``text`` documents trimmed to ``text_max_tokens``.
    With ``document_items: interacted`` item documents are kept only for items someone
    rated in this dataset (the same as ``all`` on a full dataset; on a slice such as
    ml1m_mini it keeps thousands of unseen items from swamping the ranking examples)."""
    budgets = {"text": settings.text_max_tokens}
    documents: dict[str, list[Row]] = {}
    trimmed: dict[str, int] = {}
    skipped: dict[str, int] = {}
    tokens: dict[str, dict[str, float]] = {}
    over: dict[str, int] = {}
    for source in sources:
        rows = source.rows
        if settings.document_items == "interacted":
            rows = [row for row in rows if "item" not in row or str(row["item"]) in interacted]
            skipped[source.name] = len(source.rows) - len(rows)
        texts = [row["text"] for row in rows]
        if source.name in budgets:
            results = [
                counter.trim(text, budgets[source.name])
                for text in tqdm(texts, desc=f"trim {source.name}", mininterval=5)
            ]
            texts = [text for text, _ in results if text]
            trimmed[source.name] = sum(flag for _, flag in results)
        documents[source.name] = [{"kind": source.name, "prompt": "", "completion": text} for text in texts]
        lengths = [n + 1 for n in counter.count_many(texts)]
        tokens[source.name] = describe_lengths(lengths)
        over[source.name] = sum(n > settings.seq_len for n in lengths)
    stats = {
        "document_tokens": tokens,
        "documents_trimmed": trimmed,
        "documents_exceeding_seq_len": over,
        "documents_of_items_nobody_rated": skipped,
    }
    return documents, stats


def _mix(ranking: list[Row], documents: Mapping[str, list[Row]], mix: MixWeights, seed: int) -> list[Row]:
    """Weighted copies, then one deterministic shuffle (numpy PCG64 seeded with ``seed``)."""
    rows = ranking * mix.ranking
    for source_rows in documents.values():
        rows = rows + source_rows * mix.documents
    order = np.random.default_rng(seed).permutation(len(rows))
    return [rows[i] for i in order]


def _warn_about(stats: Mapping[str, Any]) -> None:
    train_cuts = stats["train"]["ranking_cuts"]
    test_cuts = stats["test"]["cuts"]
    for name, cuts in (("train", train_cuts), ("test", test_cuts)):
        if cuts["history_cut"]:
            log.warning(
                "%s: history shortened for %d prompt(s) to fit seq_len %d", name, cuts["history_cut"], stats["seq_len"]
            )
        if cuts["exceeds_seq_len"]:
            log.warning(
                "%s: %d prompt(s) + full answer still exceed seq_len %d",
                name,
                cuts["exceeds_seq_len"],
                stats["seq_len"],
            )


# ---------------------------------------------------------------- files


def domain_label(domain: Mapping[str, Any]) -> str:
    """The word for the system prompt ("movie", "music", "board game")."""
    label = domain.get("label") or domain.get("name")
    if not label:
        raise ValueError("domain config: expected a 'label' (or 'name') for the system prompt")
    return str(label)


def build_sets_files(
    split_path: str | os.PathLike[str],
    candidates_path: str | os.PathLike[str],
    items_path: str | os.PathLike[str],
    knowledge_paths: Mapping[str, str | os.PathLike[str]],
    tokenizer_dir: str | os.PathLike[str],
    settings: BuildSettings,
    domain: Mapping[str, Any],
    train_path: str | os.PathLike[str],
    test_path: str | os.PathLike[str],
    stats_path: str | os.PathLike[str],
    ablation: str = "",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    built = build_sets(
        read_parquet(split_path),
        read_parquet(candidates_path),
        read_parquet(items_path),
        {source: read_jsonl(path) for source, path in knowledge_paths.items()},
        load_tokenizer(tokenizer_dir, trust_remote_code=trust_remote_code),
        settings,
        domain_label(domain),
        ablation,
    )
    write_jsonl(built.train, train_path)
    write_jsonl(built.test, test_path)
    write_json(built.stats, stats_path)
    log.info("%s: %d train rows, %d test users", ablation, len(built.train), len(built.test))
    return built.stats
