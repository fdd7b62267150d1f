"""A user's ranking prompt, fitted into the training sequence: token counts, in-prompt
knowledge and the length rule.

The length rule, in one line: ``prompt + answer + 1 (EOS) <= seq_len`` (and ``prompt <=
max_prompt_tokens`` when set), where ``answer`` lists every candidate (for test users too:
inference must be able to list them all); history is cut first, in-prompt knowledge next,
candidates never. When a prompt is too long:

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

Example: ``seq_len`` 2048 and an answer of 300 tokens leave ``2048 - 300 - 1 = 1747`` tokens
for the prompt. A prompt of 1900 tokens with 40 liked and 20 disliked history items keeps
the largest number of items that fits, say 48: the last 32 liked and the last 16 disliked
(:func:`_proportional_counts`); ``history_dropped`` is 12.

In-prompt knowledge per candidate (:class:`KnowledgeSelector`, ``placement: in_prompt``):
the item's text from item-keyed sources (``graph``, ``text``; each trimmed to
``in_prompt.item_tokens``), and association rules whose consequent is a candidate AND whose
whole antecedent is in the user's liked history (highest confidence first, at most
``in_prompt.max_rules``). The knowledge block gets ``in_prompt.max_tokens`` tokens, split
evenly between the sources. Token counts (:class:`TokenCounter`) use the base model's
tokenizer on the rendered text, with no special tokens added.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rekalm.llm.build_inputs import BuildSettings, Row, UserLists
from rekalm.llm.prompts import KNOWLEDGE_HEADER, RankingRequest, ranking_answer, render_ranking_prompt

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
