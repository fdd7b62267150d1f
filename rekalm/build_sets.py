"""Per-ablation training and test sets.

Inputs: the split (``split.parquet``, ``candidates.parquet``), the item names
(``items.parquet``), the lexicalized files of the ablation's sources and the base model's
tokenizer (for its chat template and for token counts). Outputs:

- ``train.jsonl``: ``{"kind", "prompt", "completion"}`` rows, shuffled with ``seed``:
  ``kind == "ranking"``: one example per TRAIN user (prompt rendered by
  :func:`rekalm.prompts.render_ranking_prompt`, completion ``"Here a list:\\n1. ..."`` with the
  held-out liked items first, then the held-out disliked ones, each group in the user's
  shuffled candidate order); ``kind == <source>``: a knowledge document (prompt ``""``).
- ``test.jsonl``: one row per TEST user ``{"user", "prompt", "answer_prefix",
  "candidates": [{"item", "name"}]}``, rendered by the same function.
- ``stats.json``: examples per kind, token lengths (p50/p95/max), cuts and drops.

Test users never enter ``train.jsonl``; a train user's held-out items appear only as that
user's candidates and target, never in a history section (an item that is both is removed
from the history and counted).

Mixes (``weights``; the original study's mixes): with ``placement: documents``, no source -> ranking x1;
one source -> ranking x1 + documents x3; several -> ranking x3 + each source's documents x1.
With ``placement: in_prompt`` there are no documents: the facts and rules about each user's
candidates are appended to the ranking prompt ("Facts that may help:"), at training and at
inference alike, and ranking examples are repeated ``weights.in_prompt.ranking`` times.
In-prompt knowledge per candidate: the item's text from item-keyed sources (``graph``,
``text``; each trimmed to ``in_prompt.item_tokens``), and association rules whose consequent
is a candidate AND whose whole antecedent is in the user's liked history (highest confidence
first, at most ``in_prompt.max_rules``). Rules are mined from train users' history halves only,
so they carry no held-out label. The knowledge block gets ``in_prompt.max_tokens`` tokens,
split evenly between the sources.

Length rule (never silent; every cut is counted in stats.json). A prompt must leave room for
its full answer: ``prompt + answer + 1 (EOS) <= seq_len`` and ``prompt <= max_prompt_tokens``
(when set), where ``answer`` lists every candidate (for test users too: inference must be able
to list them all). When a prompt is too long:

1. history is shortened as it would be WITHOUT in-prompt knowledge, keeping the items that
   come LAST in the interaction file (the most recent ones for time-ordered files; use
   ``split.max_history_*`` for timestamp-based caps), liked and disliked in proportion, by
   the smallest cut that fits;
2. in-prompt knowledge lines then fill what is left, dropped from the end as needed; so an
   ``in_prompt`` prompt is always the knowledge-free prompt plus a knowledge block, and the
   two placements compare on the same histories;
3. if it still does not fit with no history (too many candidates), it is kept whole and
   counted as ``exceeds_seq_len`` (cap candidates with ``split.max_candidates``, or rank
   by scoring).

Items whose display name is shorter than ``min_name_length`` characters (the original
drops names of <= 2 characters) are left out of prompt text: history, candidates, targets
and test candidates.
Documents of the ``text`` source are trimmed to ``text_max_tokens`` tokens at a sentence end.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from tqdm import tqdm

from rekalm.hf import load_tokenizer
from rekalm.io import read_jsonl, read_parquet, write_json, write_jsonl
from rekalm.prompts import (
    ANSWER_PREFIX,
    DEFAULT_SYSTEM_PROMPT,
    KNOWLEDGE_HEADER,
    RankingRequest,
    has_chat_template,
    ranking_answer,
    render_ranking_prompt,
)

log = logging.getLogger(__name__)

Placement = Literal["documents", "in_prompt"]
DocumentItems = Literal["interacted", "all"]
Row = dict[str, Any]
PLACEMENTS = ("documents", "in_prompt")
DOCUMENT_ITEMS = ("interacted", "all")


@dataclass(frozen=True)
class MixWeights:
    ranking: int
    documents: int = 0


@dataclass(frozen=True)
class BuildSettings:
    placement: Placement = "documents"
    seed: int = 22
    min_name_length: int = 3
    seq_len: int = 2048
    max_prompt_tokens: int | None = None
    text_max_tokens: int = 256
    document_items: DocumentItems = "interacted"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    no_sources: MixWeights = MixWeights(ranking=1)
    single_source: MixWeights = MixWeights(ranking=1, documents=3)
    several_sources: MixWeights = MixWeights(ranking=3, documents=1)
    in_prompt_weights: MixWeights = MixWeights(ranking=1)
    in_prompt_max_tokens: int = 512
    in_prompt_item_tokens: int = 64
    in_prompt_max_rules: int = 20

    @classmethod
    def from_config(cls, lexicalize: Mapping[str, Any], seq_len: int) -> BuildSettings:
        """Settings from the ``lexicalize:`` config block plus the training ``seq_len``."""
        placement = lexicalize.get("placement", cls.placement)
        if placement not in PLACEMENTS:
            raise ValueError(f"lexicalize.placement: expected one of {list(PLACEMENTS)}, got {placement!r}")
        document_items = lexicalize.get("document_items", cls.document_items)
        if document_items not in DOCUMENT_ITEMS:
            raise ValueError(
                f"lexicalize.document_items: expected one of {list(DOCUMENT_ITEMS)}, got {document_items!r}"
            )
        weights = lexicalize.get("weights", {})
        in_prompt = lexicalize.get("in_prompt", {})
        defaults = cls()
        settings = cls(
            placement=placement,
            seed=int(lexicalize.get("seed", defaults.seed)),
            min_name_length=int(lexicalize.get("min_name_length", defaults.min_name_length)),
            seq_len=int(seq_len),
            max_prompt_tokens=lexicalize.get("max_prompt_tokens"),
            text_max_tokens=int(lexicalize.get("text_max_tokens", defaults.text_max_tokens)),
            document_items=document_items,
            system_prompt=lexicalize.get("system_prompt", defaults.system_prompt),
            no_sources=_weights(weights, "no_sources", defaults.no_sources),
            single_source=_weights(weights, "single_source", defaults.single_source),
            several_sources=_weights(weights, "several_sources", defaults.several_sources),
            in_prompt_weights=_weights(weights, "in_prompt", defaults.in_prompt_weights),
            in_prompt_max_tokens=int(in_prompt.get("max_tokens", defaults.in_prompt_max_tokens)),
            in_prompt_item_tokens=int(in_prompt.get("item_tokens", defaults.in_prompt_item_tokens)),
            in_prompt_max_rules=int(in_prompt.get("max_rules", defaults.in_prompt_max_rules)),
        )
        if settings.seq_len < 1:
            raise ValueError(f"seq_len: expected a positive integer, got {seq_len!r}")
        if "{domain}" not in settings.system_prompt:
            raise ValueError("lexicalize.system_prompt: expected a '{domain}' placeholder")
        return settings

    def mix_for(self, sources: Sequence[str]) -> MixWeights:
        if self.placement == "in_prompt":
            return MixWeights(ranking=self.in_prompt_weights.ranking)
        if not sources:
            return MixWeights(ranking=self.no_sources.ranking)
        return self.single_source if len(sources) == 1 else self.several_sources


def _weights(weights: Mapping[str, Any], name: str, default: MixWeights) -> MixWeights:
    spec = weights.get(name, {})
    ranking = spec.get("ranking", default.ranking)
    documents = spec.get("documents", default.documents)
    for key, value in (("ranking", ranking), ("documents", documents)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(
                f"lexicalize.weights.{name}.{key}: expected a non-negative integer (copies), got {value!r}"
            )
    return MixWeights(ranking=ranking, documents=documents)


# ---------------------------------------------------------------- token counting


class TokenCounter:
    """Token counts and budget trimming with the base model's tokenizer (special tokens
    are part of the rendered text, so none are added)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[str, int] = {}

    def count(self, text: str) -> int:
        cached = self._cache.get(text)
        if cached is None:
            cached = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if len(text) < 2_000 and len(self._cache) < 200_000:  # facts and answers repeat; whole prompts don't
                self._cache[text] = cached
        return cached

    def count_many(self, texts: Sequence[str], batch_size: int = 1024) -> list[int]:
        counts: list[int] = []
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            counts.extend(len(ids) for ids in self.tokenizer(batch, add_special_tokens=False)["input_ids"])
        return counts

    def trim(self, text: str, budget: int) -> tuple[str, bool]:
        """``text`` cut to at most ``budget`` tokens, at the last sentence end that fits
        (else at a word boundary); returns (text, was_trimmed)."""
        if self.count(text) <= budget:
            return text, False
        ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        fitting = _last_fitting(ends, lambda end: self.count(text[:end].rstrip()) <= budget)
        if fitting is not None:
            return text[:fitting].rstrip(), True
        words = [m.end() for m in re.finditer(r"\S+", text)]
        fitting = _last_fitting(words, lambda end: self.count(text[:end]) <= budget)
        return (text[:fitting] if fitting is not None else ""), True


_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def _last_fitting(positions: list[int], fits: Callable[[int], bool]) -> int | None:
    """The largest position that fits, by binary search (token counts grow with the prefix)."""
    low, high, best = 0, len(positions) - 1, None
    while low <= high:
        middle = (low + high) // 2
        if fits(positions[middle]):
            best, low = positions[middle], middle + 1
        else:
            high = middle - 1
    return best


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


# ---------------------------------------------------------------- users


@dataclass
class UserLists:
    """One user's prompt material, item ids in prompt order, names already filtered."""

    user: str
    user_set: str
    liked_history: list[str]
    disliked_history: list[str]
    candidates: list[str]
    candidate_liked: list[bool]

    def target(self) -> list[str]:
        liked = [item for item, flag in zip(self.candidates, self.candidate_liked) if flag]
        disliked = [item for item, flag in zip(self.candidates, self.candidate_liked) if not flag]
        return liked + disliked


@dataclass
class Counts:
    values: Counter[str] = field(default_factory=Counter)

    def add(self, key: str, amount: int = 1) -> None:
        self.values[key] += amount

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.values.items()))


def load_user_lists(
    split: pd.DataFrame, candidates: pd.DataFrame, names: Mapping[str, str], settings: BuildSettings, counts: Counts
) -> list[UserLists]:
    """Per-user history (interaction row order) and candidates (shuffled position order),
    users in candidates.parquet order."""
    history = split[split["side"] == "history"].sort_values(["user", "row"], kind="stable")
    held_out = candidates.sort_values(["user", "position"], kind="stable")
    for table, where in ((history, "split.parquet"), (held_out, "candidates.parquet")):
        unknown = sorted(set(table["item"]) - set(names))
        if unknown:
            raise ValueError(f"{where}: {len(unknown)} item(s) not in items.parquet, e.g. {unknown[:3]}")
    history_by_user = {user: group for user, group in history.groupby("user", sort=False)}
    users = []
    for user, group in held_out.groupby("user", sort=False):
        users.append(_user_lists(str(user), group, history_by_user.get(user), names, settings, counts))
    return users


def _keep_name(item: str, names: Mapping[str, str], settings: BuildSettings) -> bool:
    return len(names[item].strip()) >= settings.min_name_length


def _user_lists(
    user: str,
    held_out: pd.DataFrame,
    history: pd.DataFrame | None,
    names: Mapping[str, str],
    settings: BuildSettings,
    counts: Counts,
) -> UserLists:
    candidate_items = held_out["item"].tolist()
    held_set = set(candidate_items)
    liked, disliked = [], []
    if history is not None:
        for item, flag in zip(history["item"], history["liked"]):
            if item in held_set:  # the same item on both sides would reveal its label
                counts.add("history_items_also_held_out")
                continue
            if not _keep_name(item, names, settings):
                counts.add("short_name_dropped_from_history")
                continue
            (liked if flag == 1 else disliked).append(item)
    kept, kept_liked = [], []
    for item, flag in zip(candidate_items, held_out["liked"]):
        if _keep_name(item, names, settings):
            kept.append(item)
            kept_liked.append(bool(flag == 1))
        else:
            counts.add("short_name_dropped_from_candidates")
    if len({names[i] for i in kept}) < len(kept):
        counts.add("users_with_duplicate_candidate_names")
    return UserLists(user, str(held_out["user_set"].iloc[0]), liked, disliked, kept, kept_liked)


# ---------------------------------------------------------------- in-prompt knowledge


@dataclass
class SourceRows:
    """One source's lexicalized rows, indexed for in-prompt selection."""

    name: str
    rows: list[Row]
    by_item: dict[str, str] = field(default_factory=dict)
    rules_by_consequent: dict[str, list[Row]] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, name: str, rows: list[Row]) -> SourceRows:
        source = cls(name, rows)
        for number, row in enumerate(rows):
            if not isinstance(row.get("text"), str):
                raise ValueError(f"lexicalize/{name}.jsonl: row {number} has no 'text' string")
            if "item" in row:
                source.by_item.setdefault(str(row["item"]), row["text"])
            elif "consequent" in row and "antecedent" in row:
                for item in row["consequent"]:
                    source.rules_by_consequent.setdefault(str(item), []).append(row)
            else:
                raise ValueError(
                    f"lexicalize/{name}.jsonl: row {number} needs an 'item' or 'antecedent'+'consequent' fields"
                )
        for rules in source.rules_by_consequent.values():
            rules.sort(key=lambda r: (-float(r.get("confidence", 0.0)), str(r.get("rule", ""))))
        return source


class KnowledgeSelector:
    """Facts and rules about a user's candidates, within the in-prompt token budgets."""

    def __init__(self, sources: Sequence[SourceRows], counter: TokenCounter, settings: BuildSettings) -> None:
        self.sources = sources
        self.counter = counter
        self.settings = settings
        self._trimmed: dict[tuple[str, str], str] = {}

    def _item_text(self, source: SourceRows, item: str) -> str | None:
        key = (source.name, item)
        if key not in self._trimmed:
            text = source.by_item.get(item)
            self._trimmed[key] = self.counter.trim(text, self.settings.in_prompt_item_tokens)[0] if text else ""
        return self._trimmed[key] or None

    def _rules(self, source: SourceRows, user: UserLists, liked_history: set[str]) -> list[str]:
        chosen: dict[str, Row] = {}
        for item in user.candidates:
            for rule in source.rules_by_consequent.get(item, ()):
                if set(map(str, rule["antecedent"])) <= liked_history:
                    chosen.setdefault(str(rule.get("rule", rule["text"])), rule)
        ordered = sorted(chosen.values(), key=lambda r: (-float(r.get("confidence", 0.0)), str(r.get("rule", ""))))
        return [r["text"] for r in ordered[: self.settings.in_prompt_max_rules]]

    def lines(self, user: UserLists, liked_history: set[str]) -> list[str]:
        if not self.sources:
            return []
        budget = self.settings.in_prompt_max_tokens // len(self.sources)
        lines: list[str] = []
        for source in self.sources:
            if source.by_item:
                texts = [t for t in (self._item_text(source, i) for i in user.candidates) if t]
            else:
                texts = self._rules(source, user, liked_history)
            used = 0
            for text in texts:
                cost = self.counter.count(text) + 2  # "- " and the newline
                if used + cost > budget:
                    break
                lines.append(text)
                used += cost
        return lines


# ---------------------------------------------------------------- prompts that fit


@dataclass(frozen=True)
class FittedPrompt:
    prompt: str
    prompt_tokens: int
    answer: str
    answer_tokens: int
    history_dropped: int
    knowledge_dropped: int
    exceeds_seq_len: bool


class PromptBuilder:
    """Builds one user's request, renders it with THE renderer and applies the length rule."""

    def __init__(
        self,
        tokenizer: Any,
        counter: TokenCounter,
        names: Mapping[str, str],
        domain_label: str,
        settings: BuildSettings,
        knowledge: KnowledgeSelector | None,
    ) -> None:
        self.tokenizer = tokenizer
        self.counter = counter
        self.names = names
        self.domain_label = domain_label
        self.settings = settings
        self.knowledge = knowledge

    def request(
        self,
        user: UserLists,
        keep_history: int | None = None,
        keep_knowledge: int | None = None,
        knowledge: Sequence[str] = (),
    ) -> RankingRequest:
        liked, disliked = _proportional_tail(user.liked_history, user.disliked_history, keep_history)
        facts = list(knowledge) if keep_knowledge is None else list(knowledge)[:keep_knowledge]
        return RankingRequest(
            domain_label=self.domain_label,
            liked=[self.names[i] for i in liked],
            disliked=[self.names[i] for i in disliked],
            candidates=[self.names[i] for i in user.candidates],
            knowledge=facts,
            system_prompt=self.settings.system_prompt,
        )

    def fit(self, user: UserLists) -> FittedPrompt:
        answer = ranking_answer([self.names[i] for i in user.target()])
        answer_tokens = self.counter.count(answer)
        limit = self.settings.seq_len - answer_tokens - 1
        if self.settings.max_prompt_tokens is not None:
            limit = min(limit, int(self.settings.max_prompt_tokens))
        knowledge = self.knowledge.lines(user, set(user.liked_history)) if self.knowledge else []

        history = len(user.liked_history) + len(user.disliked_history)
        rendered: dict[tuple[int, int], tuple[str, int]] = {}

        def render(keep_history: int | None, keep_knowledge: int | None) -> tuple[str, int]:
            key = (
                history if keep_history is None else keep_history,
                len(knowledge) if keep_knowledge is None else keep_knowledge,
            )
            if key not in rendered:  # the searches revisit prompts already encoded
                prompt = render_ranking_prompt(self.tokenizer, self.request(user, *key, knowledge))
                rendered[key] = (prompt, self.counter.count(prompt))
            return rendered[key]

        prompt, tokens = render(None, None)
        kept_history, kept_knowledge = history, len(knowledge)
        if tokens > limit:
            # History is cut as if there were no knowledge, so an in_prompt prompt is always
            # the knowledge-free prompt plus a (possibly shorter) knowledge block.
            plain_tokens = render(None, 0)[1] if knowledge else tokens
            if history and plain_tokens > limit:
                kept_history = self._history_that_fits(user, plain_tokens, limit, lambda k: render(k, 0)[1] <= limit)
                plain_tokens = render(kept_history, 0)[1] if knowledge else plain_tokens
            if knowledge:
                kept_knowledge = self._knowledge_that_fits(
                    knowledge, plain_tokens, limit, lambda k: render(kept_history, k)[1] <= limit
                )
            prompt, tokens = render(kept_history, kept_knowledge)
        return FittedPrompt(
            prompt,
            tokens,
            answer,
            answer_tokens,
            history - kept_history,
            len(knowledge) - kept_knowledge,
            tokens > limit,
        )

    # Encoding a long prompt is the slow part (ML-1M: 1-2k tokens, ~10 ms), so both searches
    # start from an estimate built from per-line token counts (short lines, cached) and
    # usually need two exact encodings instead of a full binary search.

    def _history_that_fits(self, user: UserLists, full_tokens: int, limit: int, fits: Callable[[int], bool]) -> int:
        """The largest number of history items (kept by the proportional tail rule) that fits."""
        liked_costs = np.cumsum([0] + [self.counter.count(self.names[i]) + 1 for i in user.liked_history])
        disliked_costs = np.cumsum([0] + [self.counter.count(self.names[i]) + 1 for i in user.disliked_history])
        n_liked, n_disliked = len(user.liked_history), len(user.disliked_history)

        def estimate(keep: int) -> int:
            keep_liked, keep_disliked = _proportional_counts(n_liked, n_disliked, keep)
            return int(full_tokens - liked_costs[n_liked - keep_liked] - disliked_costs[n_disliked - keep_disliked])

        return _largest_fitting_from_estimate(n_liked + n_disliked - 1, lambda k: estimate(k) <= limit, fits)

    def _knowledge_that_fits(
        self, knowledge: Sequence[str], plain_tokens: int, limit: int, fits: Callable[[int], bool]
    ) -> int:
        """The largest number of leading knowledge lines that fits after the plain prompt."""
        header = self.counter.count("\n\n" + KNOWLEDGE_HEADER)
        costs = np.cumsum([0] + [self.counter.count(line) + 2 for line in knowledge])

        def estimate(keep: int) -> int:
            return int(plain_tokens + (header + costs[keep] if keep else 0))

        return _largest_fitting_from_estimate(len(knowledge), lambda k: estimate(k) <= limit, fits)


def _largest_fitting_from_estimate(
    upper: int, estimated_fits: Callable[[int], bool], fits: Callable[[int], bool]
) -> int:
    """Largest k in [0, upper] with fits(k) (0 when none does), searching from the largest k
    the cheap ``estimated_fits`` accepts; exact for any estimate, fast for a close one."""
    guess = _largest_fitting(0, upper, estimated_fits)
    if not fits(guess):
        return _largest_fitting(0, guess - 1, fits) if guess > 0 else 0
    if guess < upper and fits(guess + 1):  # the estimate was pessimistic: search upwards
        return _largest_fitting(guess + 1, upper, fits)
    return guess


def _proportional_counts(n_liked: int, n_disliked: int, keep: int | None) -> tuple[int, int]:
    """How many liked and disliked history items to keep out of ``keep``, in proportion."""
    total = n_liked + n_disliked
    if keep is None or keep >= total:
        return n_liked, n_disliked
    keep_liked = min(n_liked, round(keep * n_liked / total))
    keep_disliked = min(n_disliked, keep - keep_liked)
    return keep - keep_disliked, keep_disliked


def _proportional_tail(liked: list[str], disliked: list[str], keep: int | None) -> tuple[list[str], list[str]]:
    """The last ``keep`` history items (the latest in the interaction file), in proportion."""
    keep_liked, keep_disliked = _proportional_counts(len(liked), len(disliked), keep)
    return liked[len(liked) - keep_liked :], disliked[len(disliked) - keep_disliked :]


def _largest_fitting(low: int, high: int, fits: Callable[[int], bool]) -> int:
    """Largest k in [low, high] with fits(k), by binary search (token counts grow with k);
    ``low`` when none does (the caller knows ``low`` fits, or it is the floor)."""
    best = low
    while low <= high:
        middle = (low + high) // 2
        if fits(middle):
            best, low = middle, middle + 1
        else:
            high = middle - 1
    return best


# ---------------------------------------------------------------- sets


@dataclass
class BuiltSets:
    train: list[Row]
    test: list[Row]
    stats: dict[str, Any]


SOURCES_THAT_MAY_BE_EMPTY = frozenset({"collab"})


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
    _require(split, ("user", "user_set", "item", "liked", "side", "row"), "split.parquet")
    _require(candidates, ("user", "user_set", "position", "item", "liked"), "candidates.parquet")
    _require(items, ("item", "name"), "items.parquet")
    names = dict(zip(items["item"].astype(str), items["name"].astype("string").fillna("").astype(str)))
    for name, rows in knowledge.items():
        # No association rule at the thresholds is a documented outcome (mine_rules warns);
        # an empty fact or text source would make the ablation no_kn under another name.
        if not rows and name not in SOURCES_THAT_MAY_BE_EMPTY:
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


def _require(frame: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    missing = sorted(set(columns) - set(frame.columns))
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; expected {list(columns)}")


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
