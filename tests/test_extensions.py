"""The extension recipes of the README, each proven by doing it: a toy unit is written in the
test (no project file is edited), named in the config's ``extensions:``, and planned and run
through the real Snakefile in a fresh ``snakemake`` process.

- a new dataset in a known format: config only;
- a new format: one parser registered with ``register_format`` (+ config);
- a new baseline: one fit function registered with ``register_baseline`` (+ config);
- a new knowledge source on an existing table: one registered lexicalizer (+ config);
- a source that needs a stage of its own: also its rule file, thin script and module.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake_helpers import CONFIG_FILES, REPO, run_snakemake, write_override

pytestmark = pytest.mark.slow


def snakemake(work: Path, override: dict, targets: list[str], dry_run: bool = False) -> subprocess.CompletedProcess:
    """The real Snakefile in a fresh process (what an extension registers stays in it)."""
    configfiles = [*CONFIG_FILES, write_override(work, override)]
    extra = ["--dry-run", "--quiet", "rules"] if dry_run else ["--show-failed-logs"]
    return run_snakemake(work, targets, configfiles, snakefile=REPO / "Snakefile", cores=2, extra=extra)


def succeeded(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout + done.stderr


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def planned_rules(output: str) -> set[str]:
    """The rule names of `snakemake --dry-run --quiet rules` (its job-count table)."""
    rules = set()
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            rules.add(parts[0])
    return rules


def test_a_new_dataset_in_a_known_format_is_config_only(tmp_path):
    mini = yaml.safe_load(CONFIG_FILES[0].read_text())["datasets"]["ml1m_mini"]
    other = {**mini, "max_users": 60, "slice_seed": 7}  # another seeded slice of the same files
    override = {"datasets": {"ml1m_other": other}, "run": {"datasets": ["ml1m_other"]}}
    planned = planned_rules(succeeded(snakemake(tmp_path, override, [], dry_run=True)))
    assert {"prepare", "split", "train", "infer", "baselines", "compare"} <= planned
    succeeded(snakemake(tmp_path, override, ["results/ml1m_other/split/split.parquet"]))
    stats = json.loads((tmp_path / "results/ml1m_other/prepare/stats.json").read_text())
    assert stats["users"] == 60


TOY_FORMAT = """
    # A dataset format of our own: user<TAB>item<TAB>stars, plus an item<TAB>title file.
    import pandas as pd

    from rekalm.registries import register_format
    from rekalm.data.raw_files import binarize


    @register_format("stars_tsv", roles=("ratings", "titles"))
    def parse_stars_tsv(files, options, repairs):
        ratings = pd.read_csv(files["ratings"], sep="\\t", names=["user", "item", "stars"], dtype=str)
        liked = binarize(ratings["stars"].astype(float), options.like_if, str(files["ratings"]))
        no_time = pd.array([None] * len(ratings), dtype="Int64")
        interactions = pd.DataFrame(
            {"user": ratings["user"], "item": ratings["item"], "liked": liked, "timestamp": no_time}
        )
        titles = pd.read_csv(files["titles"], sep="\\t", names=["item", "name"], dtype=str)
        items = pd.DataFrame(
            {
                "item": titles["item"],
                "name": titles["name"],
                "year": pd.array([None] * len(titles), dtype="Int64"),
                "genres": [[] for _ in range(len(titles))],
                "dbpedia_uri": pd.array([None] * len(titles), dtype="string"),
            }
        )
        return interactions, items
"""


def toy_ratings(work: Path) -> dict[str, dict[str, str]]:
    rng = np.random.default_rng(0)
    rows = [
        (f"u{user}", f"i{item}", int(rng.integers(1, 6)))
        for user in range(40)
        for item in rng.choice(30, size=14, replace=False)
    ]
    ratings = work / "data/ratings.tsv"
    ratings.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(ratings, sep="\t", header=False, index=False)
    titles = work / "data/titles.tsv"
    pd.DataFrame([(f"i{item}", f"Film number {item}") for item in range(30)]).to_csv(
        titles, sep="\t", header=False, index=False
    )
    return {"ratings": {"path": str(ratings)}, "titles": {"path": str(titles)}}


def test_a_new_format_is_one_registered_parser(tmp_path):
    write(tmp_path / "lab/stars.py", TOY_FORMAT)
    dataset = {
        "domain": "movie",
        "format": "stars_tsv",
        "files": toy_ratings(tmp_path),
        "like_if": ">= 4",
        "split": {"test_fraction": 0.2},
        "knowledge": {"collab": {"min_support": 0.1, "min_confidence": 0.3, "max_len": 2}},
        "model": "smollm2_135m",
        "training": "cpu_small",
        "inference": "cpu_small",
    }
    override = {"extensions": ["lab/stars.py"], "datasets": {"stars": dataset}, "run": {"datasets": ["stars"]}}
    planned = planned_rules(succeeded(snakemake(tmp_path, override, [], dry_run=True)))
    assert {"prepare", "mine_rules", "lexicalize", "train", "compare"} <= planned
    succeeded(snakemake(tmp_path, override, ["results/stars/split/split.parquet"]))
    interactions = pd.read_parquet(tmp_path / "results/stars/prepare/interactions.parquet")
    assert interactions["user"].nunique() == 40 and set(interactions["liked"]) == {0, 1}

    # The format declares its roles: one missing is a one-line error when the workflow starts.
    del dataset["files"]["titles"]
    failed = snakemake(tmp_path, override, [], dry_run=True)
    assert failed.returncode != 0
    message = "datasets.stars.files: format 'stars_tsv' needs the file role(s) ['titles']"
    assert message in failed.stdout + failed.stderr


TOY_BASELINE = """
    # A baseline of our own: items liked by more training users first, ties by item id.
    import numpy as np

    from rekalm.registries import register_baseline


    @register_baseline("most_liked")
    def fit_most_liked(data, seed, threads, damping=1.0):
        likes = np.asarray(data.matrix.sum(axis=0)).ravel() / (1.0 + damping)
        return lambda user_index, item_index: likes[item_index]
"""


def test_a_new_baseline_is_one_registered_fit_function(tmp_path):
    write(tmp_path / "lab/most_liked.py", TOY_BASELINE)
    override = {
        "extensions": ["lab/most_liked.py"],
        "baselines": {"names": ["popularity", "most_liked"], "grids": {"most_liked": {"damping": [0.5, 2.0]}}},
    }
    dry = succeeded(snakemake(tmp_path, override, ["results/ml1m_mini/compare/table.md"], dry_run=True))
    assert {"baselines", "evaluate", "compare"} <= planned_rules(dry)
    target = "results/ml1m_mini/metrics/most_liked.json"
    succeeded(snakemake(tmp_path, override, [target]))
    tuning = json.loads((tmp_path / "results/ml1m_mini/baselines/most_liked/tuning.json").read_text())
    assert len(tuning["grid"]) == 2
    metrics = json.loads((tmp_path / target).read_text())
    assert 0 < metrics["standard"]["ndcg@10"] <= 1


TOY_LEXICALIZER = """
    # A knowledge source on a table the workflow already makes (the graph facts): genres only.
    from rekalm.registries import register_lexicalizer


    @register_lexicalizer("genres", key="item", required_columns=("item", "relation", "value"))
    def lexicalize_genres(triples, names, domain):
        genres = triples[triples["relation"] == "genre"]
        rows = [
            {"item": item, "text": f"{names[item]} is a {' and '.join(group['value'])} film."}
            for item, group in genres.groupby("item", sort=False)
        ]
        return rows, {"items": len(rows)}
"""


def test_a_knowledge_source_on_an_existing_table_is_one_lexicalizer(tmp_path):
    write(tmp_path / "lab/genres.py", TOY_LEXICALIZER)
    override = {
        "extensions": ["lab/genres.py"],
        "lexicalize": {"sources": {"genres": {"input": "lookup_dbpedia.triples"}}},
        "ablations": {"genres_only": ["genres"]},
        "datasets": {"ml1m_mini": {"knowledge": {"genres": {}}}},
        "run": {"ablations": ["genres_only"]},
    }
    dry = succeeded(snakemake(tmp_path, override, ["results/ml1m_mini/train/genres_only/adapter"], dry_run=True))
    assert {"lookup_dbpedia", "lexicalize", "build_sets", "train"} <= planned_rules(dry)
    succeeded(snakemake(tmp_path, override, ["results/ml1m_mini/lexicalize/genres.jsonl"]))
    rows = [json.loads(line) for line in (tmp_path / "results/ml1m_mini/lexicalize/genres.jsonl").open()]
    assert rows and all(row["text"].endswith(" film.") for row in rows)


POPULARITY_MODULE = """
    # A knowledge source with a stage of its own: how many training users like each item.
    import pandas as pd

    from rekalm.registries import register_lexicalizer


    def like_counts(split):
        train = split[(split["user_set"] == "train") & (split["liked"] == 1)]
        return train.groupby("item").size().rename("likes").reset_index()


    @register_lexicalizer("crowd", key="item", required_columns=("item", "likes"))
    def lexicalize_crowd(counts, names, domain):
        pairs = zip(counts["item"], counts["likes"])
        rows = [{"item": item, "text": f"{names[item]} is liked by {n} viewers."} for item, n in pairs]
        return rows, {"items": len(rows)}
"""
POPULARITY_SCRIPT = """
    # Snakemake puts the script's folder on sys.path: its module is importable beside it.
    import pandas as pd
    from crowd import like_counts

    like_counts(pd.read_parquet(snakemake.input.split)).to_parquet(snakemake.output.table)
"""
POPULARITY_RULES = """
    rule crowd_counts:
        input:
            split="results/{dataset}/split/split.parquet",
        output:
            table="results/{dataset}/crowd_counts/likes.parquet",
        log:
            "logs/{dataset}/crowd_counts.log",
        script:
            "crowd_counts.py"
"""


def test_a_source_with_its_own_stage_is_its_rule_file_script_and_module(tmp_path):
    write(tmp_path / "lab/crowd.py", POPULARITY_MODULE)
    write(tmp_path / "lab/crowd_counts.py", POPULARITY_SCRIPT)
    write(tmp_path / "lab/crowd.smk", POPULARITY_RULES)
    override = {
        "extensions": ["lab/crowd.py", "lab/crowd.smk"],
        "lexicalize": {"sources": {"crowd": {"input": "crowd_counts.table"}}},
        "ablations": {"crowd_only": ["crowd"]},
        "datasets": {"ml1m_mini": {"knowledge": {"crowd": {}}}},
        "run": {"ablations": ["crowd_only"]},
    }
    dry = succeeded(snakemake(tmp_path, override, [], dry_run=True))
    assert {"crowd_counts", "lexicalize", "build_sets", "train", "compare"} <= planned_rules(dry)
    succeeded(snakemake(tmp_path, override, ["results/ml1m_mini/lexicalize/crowd.jsonl"]))
    rows = [json.loads(line) for line in (tmp_path / "results/ml1m_mini/lexicalize/crowd.jsonl").open()]
    assert rows and all(row["text"].endswith(" viewers.") for row in rows)
    assert (tmp_path / "results/ml1m_mini/crowd_counts/likes.parquet").is_file()
