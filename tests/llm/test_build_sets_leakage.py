"""build_sets: no test user and no held-out item reaches the training rows."""

from __future__ import annotations

from build_sets_world import NAMES, USERS, build, make_world, ranked_names, sections


def test_no_test_user_and_no_held_out_item_leaks_into_train(world, tokenizer):
    for placement in ("documents", "in_prompt"):
        built = build(world, tokenizer, ["collab", "graph", "text"], placement=placement)
        test_only = {NAMES["t1"], NAMES["t2"]}
        for row in built.train:
            if row["kind"] in ("ranking", "collab"):  # interaction-derived rows
                assert not any(name in row["prompt"] or name in row["completion"] for name in test_only), row
        held_out_sets = []
        for row in (r for r in built.train if r["kind"] == "ranking"):
            shown = sections(row["prompt"])
            held_out = set(shown["candidates"])
            assert held_out == set(ranked_names(row["completion"]))
            assert not held_out & (set(shown["liked"]) | set(shown["disliked"])), "a held-out item sits in the history"
            held_out_sets.append(frozenset(held_out))
        train_users = {u for u, spec in USERS.items() if spec[0] == "train"}
        expected = {frozenset(NAMES[i] for i, _ in USERS[u][3] if i != "m02") for u in train_users}
        assert (
            set(held_out_sets) == expected and len(held_out_sets) == len(expected) * built.stats["weights"]["ranking"]
        )
        # catalog knowledge is item-side, not interaction data: a test-only item may have a graph document
        if placement == "documents":
            assert any(NAMES["t2"] in row["completion"] for row in built.train if row["kind"] == "graph")


def test_an_item_on_both_sides_of_a_user_is_removed_from_the_history(tokenizer):
    users = dict(USERS)
    users["u1"] = ("train", ["m01", "m08"], ["m06"], [("m08", 1), ("m10", 0)])  # duplicate rating of m08
    built = build(make_world(users), tokenizer, [])
    row = next(
        r for r in built.train if set(sections(r["prompt"])["candidates"]) == {"Toy Story (1995)", "Balto (1995)"}
    )
    assert sections(row["prompt"])["liked"] == ["Matrix, The (1999)"]
    assert built.stats["counts"]["history_items_also_held_out"] == 1
