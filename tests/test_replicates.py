"""Replicate names (the first seed keeps the plain name, the others add .seed<s>), and the
split replicates of run.resplit: a dataset variant (<dataset>.seed<s>) has no block of its
own in the config, so scripts read their rule's params and the rules reach a dataset's block
only through the variant-aware helper of rules/common.smk."""

import ast
import re
from pathlib import Path

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


@pytest.mark.slow
def test_llm_systems_of_a_split_replicate_run_to_their_metrics(tiny_llama_dir, tmp_path):
    """run.resplit: zero-shot ranking and a trained ablation of the second seed's split (the
    dataset variant ml1m_mini.seed23) run through Snakemake, a tiny model and a few steps,
    to their metrics: every script reads the variant's settings from its rule's params."""
    import json

    import pandas as pd
    from snakemake_helpers import run_workflow, write_override

    variant = "ml1m_mini.seed23"
    override = write_override(
        tmp_path,
        {
            "run": {"datasets": ["ml1m_mini"], "ablations": ["no_kn"], "seeds": [22, 23], "resplit": True},
            "models": {"tiny": {"source": "local", "path": str(tiny_llama_dir)}},
            "datasets": {"ml1m_mini": {"model": "tiny"}},
        },
    )
    systems = ("zero_shot_score", "no_kn")
    targets = [f"results/{variant}/metrics/{system}.json" for system in systems]
    run_workflow(tmp_path, targets=targets, overrides=[override], cores=2)
    candidates = pd.read_parquet(tmp_path / f"results/{variant}/split/candidates.parquet")
    test = candidates[candidates["user_set"] == "test"]
    for system in systems:
        ranked = pd.read_parquet(tmp_path / f"results/{variant}/infer/{system}/predictions.parquet")
        assert sorted(zip(ranked["user"], ranked["item"])) == sorted(zip(test["user"], test["item"])), system
        metrics = json.loads((tmp_path / f"results/{variant}/metrics/{system}.json").read_text())
        assert (metrics["dataset"], metrics["system"]) == (variant, system)
        assert (metrics["users"]["ranked"], metrics["users"]["not_ranked"]) == (test["user"].nunique(), 0), system
    assert (tmp_path / f"results/{variant}/train/no_kn/adapter/adapter_config.json").is_file()
    assert not (tmp_path / "results/ml1m_mini/train").exists()  # the variant trained on its own split


REPO = Path(__file__).resolve().parents[1]
# What a script may read of snakemake.config: keys that are the same for every job (the
# extension modules its start-up imports). Everything per dataset, system or preset comes
# from the rule's params, computed by the variant-aware helpers of rules/common.smk.
SCRIPT_CONFIG_KEYS = {"extensions"}
# The one helper that reads config["datasets"][...]: it maps a split replicate to its base.
DATASET_BLOCK_OWNER = "dataset_block"


def raw_config_reads_in_script(source: str) -> list[str]:
    """`snakemake.config` reads of a script other than SCRIPT_CONFIG_KEYS, as 'line N: code'."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Attribute)
            and node.attr == "config"
            and isinstance(node.value, ast.Name)
            and node.value.id == "snakemake"
        ):
            continue
        parent, key = parents.get(node), None
        if isinstance(parent, ast.Subscript) and parent.value is node:
            key = parent.slice
        elif isinstance(parent, ast.Attribute) and parent.attr == "get" and isinstance(parents.get(parent), ast.Call):
            key = (parents[parent].args or [None])[0]
        if not (isinstance(key, ast.Constant) and key.value in SCRIPT_CONFIG_KEYS):
            found.append(f"line {node.lineno}: {ast.get_source_segment(source, parent or node)}")
    return found


def dataset_block_reads_in_helpers(source: str) -> list[str]:
    """config["datasets"][...] outside the variant-aware owner, or config[...] indexed by the
    dataset wildcard (which may name a split replicate), in rules/common.smk, as 'line N: code'.
    Other wildcards (model, ablation, source) name config keys one to one."""
    tree = ast.parse(source)
    owner = {
        child
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name == DATASET_BLOCK_OWNER
        for child in ast.walk(node)
    }

    def is_config(node: ast.AST) -> bool:
        while isinstance(node, ast.Subscript):
            node = node.value
        return isinstance(node, ast.Name) and node.id == "config"

    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Subscript) and is_config(node.value)):
            continue
        by_datasets = (
            isinstance(node.value, ast.Subscript)
            and isinstance(node.value.value, ast.Name)
            and isinstance(node.value.slice, ast.Constant)
            and node.value.slice.value == "datasets"
        )
        by_wildcard = any(
            isinstance(part, ast.Attribute)
            and part.attr == "dataset"
            and isinstance(part.value, ast.Name)
            and part.value.id == "wildcards"
            for part in ast.walk(node.slice)
        )
        if (by_datasets and node not in owner) or by_wildcard:
            found.append((node.lineno, f"line {node.lineno}: {ast.get_source_segment(source, node)}"))
    return [text for _, text in sorted(found)]


# In the rule files (Snakemake syntax, not Python): the same two reads, by pattern.
RAW_DATASET_READ = re.compile(
    r"""config\[\s*["']datasets["']\s*\]\s*\[|config(\[[^\]]+\])+\s*\[\s*wildcards\.dataset"""
)


def test_scripts_read_their_rules_params_never_the_raw_config():
    """A script that looks up config["datasets"][wildcards.dataset] breaks on a split
    replicate (KeyError 'ml1m_mini.seed23'); what it needs is a param of its rule."""
    offenders = {
        path.name: found
        for path in sorted((REPO / "workflow_scripts").glob("*.py"))
        if (found := raw_config_reads_in_script(path.read_text()))
    }
    assert not offenders, f"scripts reading snakemake.config (use the rule's params): {offenders}"
    helpers = dataset_block_reads_in_helpers((REPO / "rules/common.smk").read_text())
    assert not helpers, f"rules/common.smk: dataset blocks read past {DATASET_BLOCK_OWNER}(): {helpers}"
    rule_files = [REPO / "Snakefile", *(path for path in (REPO / "rules").glob("*.smk") if path.name != "common.smk")]
    raw = [
        f"{path.name}:{number}: {line.strip()}"
        for path in rule_files
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if RAW_DATASET_READ.search(line.split("#")[0])
    ]
    assert not raw, f"rule files reading a dataset's block by name (use a rules/common.smk helper): {raw}"


def test_the_raw_config_checks_catch_a_lookup_by_wildcard():
    # The line that crashed every ranking job of a split replicate, and its kin.
    script = "where = snakemake.config['datasets'][snakemake.wildcards.dataset]['inference']\n"
    assert raw_config_reads_in_script(script) == [
        "line 1: snakemake.config['datasets']",
    ]
    assert raw_config_reads_in_script("modules = snakemake.config.get('extensions') or []\n") == []
    assert raw_config_reads_in_script("x = snakemake.config.get('training')\n")
    helpers = (
        "def dataset_block(dataset):\n    return config['datasets'][dataset]\n"
        "def get_preset(wildcards):\n    return config['datasets'][wildcards.dataset]['training']\n"
        "def get_resource(wildcards):\n    return config['inference'][wildcards.dataset]\n"
        "def get_model_source(wildcards):\n    return config['models'][wildcards.model]\n"
    )
    found = dataset_block_reads_in_helpers(helpers)
    assert [line.split(":")[0] for line in found] == ["line 4", "line 6"]
    assert RAW_DATASET_READ.search('        preset=config["datasets"][wildcards.dataset]["training"],')
    assert RAW_DATASET_READ.search('        gpu=config["inference"][wildcards.dataset],')
    assert not RAW_DATASET_READ.search('        source=config["models"][wildcards.model],')
    assert not RAW_DATASET_READ.search('        metrics=config["metrics"],')
