"""Train/test sets of one dataset and ablation (rekalm.llm.build_sets)."""

from _common import start

log = start(snakemake)  # noqa: F821 (snakemake is injected by Snakemake)

from rekalm.llm.build_inputs import BuildSettings  # noqa: E402
from rekalm.llm.build_sets import build_sets_files  # noqa: E402

stats = build_sets_files(
    split_path=snakemake.input.split,  # noqa: F821
    candidates_path=snakemake.input.candidates,  # noqa: F821
    items_path=snakemake.input.item_names,  # noqa: F821
    knowledge_paths={source: snakemake.input[f"knowledge_{source}"] for source in snakemake.params.sources},  # noqa: F821
    tokenizer_dir=snakemake.input.tokenizer,  # noqa: F821
    settings=BuildSettings.from_config(snakemake.params.lexicalize, snakemake.params.seq_len),  # noqa: F821
    domain=snakemake.params.domain,  # noqa: F821
    train_path=snakemake.output.train,  # noqa: F821
    test_path=snakemake.output.test,  # noqa: F821
    stats_path=snakemake.output.stats,  # noqa: F821
    ablation=snakemake.wildcards.ablation,  # noqa: F821
    trust_remote_code=snakemake.params.trust_remote_code,  # noqa: F821
)
log.info(
    "build_sets %s/%s: %s",
    snakemake.wildcards.dataset,
    snakemake.wildcards.ablation,
    stats["train"]["examples_per_kind"],
)  # noqa: F821
