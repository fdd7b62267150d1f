"""Replicate names: the first seed keeps the plain name, the others add .seed<s>."""

import pytest

from rekalm.replicates import check_seeds, replicate_names, replicate_seed, replicate_suffix, split_replicate


def test_first_seed_keeps_the_plain_name_and_others_add_a_suffix():
    assert replicate_names("graph", [22]) == ["graph"]
    assert replicate_names("collab_graph", [22, 23, 24]) == [
        "collab_graph",
        "collab_graph.seed23",
        "collab_graph.seed24",
    ]
    assert replicate_suffix(24, [22, 23, 24]) == ".seed24"
    # adding a seed adds names and renames none: Snakemake plans only the new seed's jobs
    assert set(replicate_names("graph", [22, 23])) <= set(replicate_names("graph", [22, 23, 7]))


@pytest.mark.parametrize("name", ["graph", "graph.seed23", "collab_graph.seed7", "zero_shot_score", "bpr.seed0"])
def test_names_round_trip(name):
    system, suffix = split_replicate(name)
    assert system + suffix == name
    assert "." not in system


def test_suffix_to_seed():
    seeds = [22, 23]
    assert replicate_seed("", seeds) == 22
    assert replicate_seed(".seed23", seeds) == 23
    with pytest.raises(ValueError, match="seed 99 is not in run.seeds"):
        replicate_seed(".seed99", seeds)
    with pytest.raises(ValueError, match="first of run.seeds, whose replicate has no suffix"):
        replicate_seed(".seed22", seeds)  # one replicate, one name
    with pytest.raises(ValueError, match="expected '' or '.seed<integer>'"):
        replicate_seed("_23", seeds)


def test_seed_lists_are_checked():
    with pytest.raises(ValueError, match="at least one seed"):
        check_seeds([])
    with pytest.raises(ValueError, match=r"seed\(s\) \[23\] listed twice"):
        check_seeds([22, 23, 23])
    with pytest.raises(ValueError, match="not in run.seeds"):
        replicate_suffix(5, [22])
