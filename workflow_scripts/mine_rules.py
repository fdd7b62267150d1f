"""Snakemake script for rule mine_rules: split.parquet -> rules.parquet (see rekalm/knowledge/mine_rules.py)."""

from _common import start

log = start(snakemake)  # noqa: F821 (snakemake is injected by Snakemake); sends stderr to the log

from rekalm.knowledge.mine_rules import RuleMiningSettings, mine_rules_file

params = RuleMiningSettings(**snakemake.params.options)  # noqa: F821
log.info("mine_rules %s: %s", snakemake.wildcards.dataset, params)  # noqa: F821
rules = mine_rules_file(snakemake.input.split, snakemake.output.rules, params)  # noqa: F821
log.info("wrote %d rules to %s", len(rules), snakemake.output.rules)  # noqa: F821
