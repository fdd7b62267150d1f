"""What build_sets works from: its settings and each user's prompt material.

:class:`BuildSettings` is the ``lexicalize:`` config block plus the training ``seq_len``;
:meth:`BuildSettings.mix_for` gives the copies of ranking examples and documents per
ablation (no source -> ranking x1; one source -> ranking x1 + documents x3; several ->
ranking x3 + each source's documents x1; ``in_prompt`` -> ranking x ``weights.in_prompt.ranking``).

:func:`load_user_lists` turns the split into one :class:`UserLists` per user of
``candidates.parquet`` (in its order): the history in interaction-row order, the candidates
in their shuffled position order. An item on both sides is removed from the history (it
would reveal its label), and items whose display name is shorter than ``min_name_length``
characters are left out of prompt text; both are counted in :class:`Counts`. Example::

    history   liked [m1, m2, m9], disliked [m3]     candidates [m9, m4, m5] (liked: m9, m5)
    UserLists liked_history [m1, m2], disliked_history [m3], candidates [m9, m4, m5]
              target() == [m9, m5, m4]              counts: history_items_also_held_out 1
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from rekalm.llm.prompts import DEFAULT_SYSTEM_PROMPT

Placement = Literal["documents", "in_prompt"]
DocumentItems = Literal["interacted", "all"]
Row = dict[str, Any]
PLACEMENTS = ("documents", "in_prompt")
DOCUMENT_ITEMS = ("interacted", "all")


# ---------------------------------------------------------------- settings


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
    liked: list[str] = []
    disliked: list[str] = []
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
