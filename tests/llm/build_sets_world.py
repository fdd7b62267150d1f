"""The toy world the build_sets tests share: 21 movies (one with a two-letter name, two rated
by test users only, one rated by nobody), four train and two test users, five association
rules, director/genre triples and abstracts; and the helpers that build sets from it and
read their prompts back. The fixtures over it are in conftest.py."""

from __future__ import annotations

import pandas as pd

from rekalm.knowledge.lexicalize import lexicalize
from rekalm.llm import build_inputs, prompts
from rekalm.llm import build_sets as bs

MOVIE = {
    "name": "movie",
    "item_noun": "movie",
    "item_intro": "{name} is a {item_noun}.",
    "relations": {
        "director": {"template": "Guiding the vision of this movie is the director, {values}."},
        "genre": {"template": "This movie belongs to the {values} genre."},
    },
}

NAMES = {
    "m01": "Matrix, The (1999)",
    "m02": "Up",  # two characters: never shown in prompt text
    "m03": "Heat (1995)",
    "m04": "Casino (1995)",
    "m05": "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)",
    "m06": "Jumanji (1995)",
    "m07": "Se7en (1995)",
    "m08": "Toy Story (1995)",
    "m09": "GoldenEye (1995)",
    "m10": "Balto (1995)",
    "m11": "Nixon (1995)",
    "m12": "Sabrina (1995)",
    "m13": "Ran (1985)",
    "m14": "Dracula: Dead and Loving It (1995)",
    "m15": "Cutthroat Island (1995)",
    "m16": "Sense and Sensibility (1995)",
    "m17": "Four Rooms (1995)",
    "m18": "Get Shorty (1995)",
    "t1": "Secret Test Film (2000)",  # rated by test users only
    "t2": "Hidden Gem (2001)",  # rated by test users only
    "m99": "Unrated Film (1990)",  # in the catalog, rated by nobody
}

# user -> (user_set, liked history, disliked history, candidates in shuffled order as (item, liked))
USERS = {
    "u1": ("train", ["m01", "m03", "m04", "m05"], ["m06", "m07"], [("m10", 0), ("m08", 1), ("m02", 1), ("m09", 1)]),
    "u2": ("train", ["m03", "m08"], ["m11"], [("m13", 0), ("m04", 1), ("m14", 0), ("m12", 1)]),
    "u3": ("train", ["m05", "m06", "m09"], ["m01"], [("m16", 0), ("m15", 1)]),
    "u4": ("train", ["m02", "m11", "m12"], ["m13"], [("m01", 1), ("m18", 0), ("m17", 1)]),
    "v1": ("test", ["t1", "m03"], ["m04"], [("m06", 0), ("t2", 1), ("m05", 1)]),
    "v2": ("test", ["m07", "m08"], ["m09"], [("t1", 0), ("m10", 1)]),
}

RULES = [  # antecedent, consequent, confidence (mined from train users' histories)
    (["m03"], ["m08"], 0.6),
    (["m03", "m04"], ["m09"], 0.5),
    (["m05"], ["m15"], 0.4),
    (["m11"], ["m12"], 0.3),
    (["m07"], ["m10"], 0.7),
]

LONG_ABSTRACT = " ".join(f"Sentence number {n} tells a little more about this film." for n in range(1, 60))


def make_world(users: dict = USERS) -> dict[str, pd.DataFrame]:
    split_rows, candidate_rows = [], []
    row = 0
    for user, (user_set, liked, disliked, candidates) in users.items():
        for item, flag in [(i, 1) for i in liked] + [(i, 0) for i in disliked]:
            split_rows.append((user, user_set, item, flag, "history", row))
            row += 1
        for position, (item, flag) in enumerate(candidates):
            split_rows.append((user, user_set, item, flag, "held_out", row))
            candidate_rows.append((user, user_set, position, item, flag))
            row += 1
    split = pd.DataFrame(split_rows, columns=["user", "user_set", "item", "liked", "side", "row"]).astype(
        {"liked": "int8", "row": "int64"}
    )
    candidates = pd.DataFrame(candidate_rows, columns=["user", "user_set", "position", "item", "liked"]).astype(
        {"liked": "int8", "position": "int32"}
    )
    items = pd.DataFrame({"item": list(NAMES), "name": list(NAMES.values())})
    rules = pd.DataFrame(
        {
            "antecedent": [a for a, _, _ in RULES],
            "consequent": [c for _, c, _ in RULES],
            "support": 0.1,
            "confidence": [f for _, _, f in RULES],
            "lift": 1.5,
        }
    )
    triples = pd.DataFrame(
        {
            "item": ["m08", "m09", "m10", "m15", "t2", "m08", "m99"],
            "relation": ["director", "director", "director", "director", "director", "genre", "director"],
            "value": [
                "John Lasseter",
                "Martin Campbell",
                "Simon Wells",
                "Renny Harlin",
                "Jane Doe",
                "Animation",
                "Nobody Known",
            ],
            "source": "dbpedia",
        }
    )
    abstracts = pd.DataFrame({"item": ["m08", "m09"], "abstract": [LONG_ABSTRACT, "GoldenEye is a 1995 spy film."]})
    return {
        "split": split,
        "candidates": candidates,
        "items": items,
        "collab": rules,
        "graph": triples,
        "text": abstracts,
    }


def knowledge_for(world: dict[str, pd.DataFrame], sources: list[str]) -> dict[str, list[dict]]:
    return {source: lexicalize(source, world[source], world["items"], MOVIE)[0] for source in sources}


def build(world, tokenizer, sources, **settings) -> bs.BuiltSets:
    config = {
        "placement": settings.pop("placement", "documents"),
        "text_max_tokens": settings.pop("text_max_tokens", 40),
        **settings.pop("config", {}),
    }
    options = build_inputs.BuildSettings.from_config(config, settings.pop("seq_len", 2048))
    return bs.build_sets(
        world["split"],
        world["candidates"],
        world["items"],
        knowledge_for(world, sources),
        tokenizer,
        options,
        "movie",
        "+".join(sources),
    )


def sections(prompt: str) -> dict[str, list[str]]:
    """Lines of each user-message section of a rendered prompt."""
    headers = {
        prompts.LIKED_HEADER: "liked",
        prompts.DISLIKED_HEADER: "disliked",
        prompts.CANDIDATES_HEADER: "candidates",
        prompts.KNOWLEDGE_HEADER: "knowledge",
    }
    user = prompt.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
    found: dict[str, list[str]] = {name: [] for name in headers.values()}
    current = None
    for line in user.split("\n"):
        if line in headers:
            current = headers[line]
        elif line and current:
            found[current].append(line)
    return found


def ranked_names(completion: str) -> list[str]:
    lines = completion.split("\n")
    assert lines[0] == "Here a list:"
    return [line.split(". ", 1)[1] for line in lines[1:]]
