"""What one inference job is given: the preset and the test users' prompts.

:class:`InferenceSettings` is one ``inference:`` preset of the config (its ``resources``
block sizes the Snakemake job and is ignored here). :func:`read_test_prompts` reads
``test.jsonl`` (written by build_sets), one row per test user::

    {"user": "u7", "prompt": "...", "answer_prefix": "Here a list:\\n1. ",
     "candidates": [{"item": "i3", "name": "Heat (1995)"}, ...]}

into :class:`UserPrompt` records; a malformed row, a user listed twice or a candidate listed
twice for one user stops with one line naming the file, the row and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from rekalm.common.io import read_jsonl

# The preset's `resources` block sizes the Snakemake job (rules/infer.smk), not the computation.
RESOURCE_KEYS = frozenset({"resources"})


@dataclass(frozen=True)
class InferenceSettings:
    mode: Literal["score", "generate"] = "score"
    load: Literal["merged", "adapter"] = "merged"  # read by the rule: which folders to load
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    batch_size: int = 16  # candidates per forward pass (score) or prompts per batch (generate)
    chunk_size: int = 64  # users per resumable chunk
    tokens_per_candidate: int = 4  # generate: margin per candidate on top of the list's own tokens
    token_slack: int = 32  # generate: fixed margin per user
    max_new_tokens: int | None = None  # generate: a fixed budget instead (512 = the original)
    prefill_answer: bool = True  # generate: start the answer with the trained prefix
    fuzzy_threshold: float = 85  # generate: rapidfuzz ratio (0-100) to accept a name
    # generate: rank only the first N test users (a smoke test of the generate path; the
    # others stay unranked, and rules/common.smk keeps such a ranking out of `compare`)
    generate_max_users: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("score", "generate"):
            raise ValueError(f"inference.mode: expected 'score' or 'generate', got {self.mode!r}")
        if self.load not in ("merged", "adapter"):
            raise ValueError(f"inference.load: expected 'merged' or 'adapter', got {self.load!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"inference.dtype: expected auto, float32, bfloat16 or float16, got {self.dtype!r}")
        for name in ("batch_size", "chunk_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"inference.{name}: expected a positive integer, got {getattr(self, name)!r}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(
                f"inference.max_new_tokens: expected a positive integer or null, got {self.max_new_tokens!r}"
            )
        if self.generate_max_users is not None and (
            isinstance(self.generate_max_users, bool)
            or not isinstance(self.generate_max_users, int)
            or self.generate_max_users < 1
        ):
            raise ValueError(
                f"inference.generate_max_users: expected a positive integer or null, got {self.generate_max_users!r}"
            )
        if not 0 <= self.fuzzy_threshold <= 100:
            raise ValueError(f"inference.fuzzy_threshold: expected 0-100, got {self.fuzzy_threshold!r}")

    @classmethod
    def from_config(cls, preset: dict[str, Any]) -> InferenceSettings:
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(preset) - known - RESOURCE_KEYS)
        if unknown:
            raise ValueError(
                f"inference preset: unknown key(s) {unknown}; expected some of {sorted(known | RESOURCE_KEYS)}"
            )
        return cls(**{key: value for key, value in preset.items() if key in known})


@dataclass(frozen=True)
class UserPrompt:
    user: str
    prompt: str
    answer_prefix: str
    items: tuple[str, ...]
    names: tuple[str, ...]


def read_test_prompts(path: str | Path) -> list[UserPrompt]:
    """test.jsonl rows -> prompts; one-line ValueError naming the file, row and field."""
    prompts, seen_users = [], set()
    for number, row in enumerate(read_jsonl(path), start=1):
        where = f"{path}: row {number}"
        for key, kind in (("user", str), ("prompt", str), ("answer_prefix", str), ("candidates", list)):
            if not isinstance(row.get(key), kind):
                raise ValueError(
                    f"{where}: field {key!r} must be a {kind.__name__}, got {type(row.get(key)).__name__}"
                )
        if row["user"] in seen_users:
            raise ValueError(f"{where}: user {row['user']!r} appears twice")
        seen_users.add(row["user"])
        items, names = [], []
        for candidate in row["candidates"]:
            if not (
                isinstance(candidate, dict)
                and isinstance(candidate.get("item"), str)
                and isinstance(candidate.get("name"), str)
            ):
                raise ValueError(f"{where}: each candidate must be {{'item': str, 'name': str}}, got {candidate!r}")
            items.append(candidate["item"])
            names.append(candidate["name"])
        if len(set(items)) != len(items):
            raise ValueError(f"{where}: user {row['user']!r} lists a candidate item twice")
        prompts.append(UserPrompt(row["user"], row["prompt"], row["answer_prefix"], tuple(items), tuple(names)))
    return prompts
