# REKALM: knowledge lexicalization + knowledge-aware instruction tuning for LLM recommenders.
# This file reads like a table of contents; each stage lives in rules/<stage>.smk and its
# logic in the importable `rekalm` package.
import sys
from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, workflow.basedir)  # the `rekalm` package, installed or not

from rekalm.config import (
    check_config,
    check_config_files,
    read_config_strings,
    resolve_local_copies,
)
from rekalm.extensions import load_extensions, rule_files
from rekalm.replicates import SUFFIX_PATTERN

# Syntax errors and duplicate keys with file and line, before Snakemake reads the files.
check_config_files(
    [*workflow.overwrite_configfiles, "config/config.yaml", "config/domains.yaml"]
)


configfile: "config/config.yaml"
configfile: "config/domains.yaml"


report: "config/report/workflow.rst"  # the report's front page: the comparison first


# Extension modules register their units before the check (schema enums follow the registries).
load_extensions(config.get("extensions") or [])
# --config values arrive as strings: typed first, so `"path": null` is no path named "null".
read_config_strings(config, Path(workflow.basedir) / "config" / "schema.yaml")
for change in resolve_local_copies(config):  # a local `path` wins over a `url`
    logger.info(change)
# Validates, fills in the schema's defaults, checks cross-references (one-line errors).
check_config(config, Path(workflow.basedir) / "config" / "schema.yaml")


wildcard_constraints:
    dataset=f"({'|'.join(config['datasets'])}){SUFFIX_PATTERN}",  # + split replicates
    ablation="|".join(config["ablations"]),
    source="|".join(config["lexicalize"]["sources"]),


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/prepare.smk"
include: "rules/split.smk"
include: "rules/mine_rules.smk"
include: "rules/lookup_dbpedia.smk"
include: "rules/lexicalize.smk"
include: "rules/build_sets.smk"
include: "rules/prepare_model.smk"
include: "rules/train.smk"
include: "rules/merge.smk"
include: "rules/baselines.smk"
include: "rules/infer.smk"
include: "rules/evaluate.smk"
include: "rules/compare.smk"


for extension_rules in rule_files(config["extensions"]):  # a new stage's rule file

    include: extension_rules


localrules:
    all,
    download,


rule all:
    default_target: True
    input:
        get_all_targets,
