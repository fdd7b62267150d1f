"""Lexicalize one knowledge source of one dataset (rekalm.knowledge.lexicalize)."""

from _common import start

log = start(snakemake)  # noqa: F821 (snakemake is injected by Snakemake)

from rekalm.knowledge.lexicalize import lexicalize_files  # noqa: E402

stats = lexicalize_files(
    source=snakemake.wildcards.source,  # noqa: F821
    knowledge_path=snakemake.input.knowledge,  # noqa: F821
    items_path=snakemake.input.item_names,  # noqa: F821
    domain=snakemake.params.domain,  # noqa: F821
    output_path=snakemake.output.texts,  # noqa: F821
    stats_path=snakemake.output.stats,  # noqa: F821
)
log.info("lexicalize %s/%s: %s", snakemake.wildcards.dataset, snakemake.wildcards.source, stats)  # noqa: F821
