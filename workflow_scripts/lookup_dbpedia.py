from _common import start

log = start(snakemake)  # noqa: F821 (snakemake is injected by Snakemake)

import sys

from rekalm.lookup_dbpedia import lookup_dbpedia_files
from rekalm.sparql import SparqlError

try:
    result = lookup_dbpedia_files(
        items_path=snakemake.input.item_table,
        triples_path=snakemake.output.triples,
        abstracts_path=snakemake.output.abstracts,
        mapping_path=snakemake.output.mapping,
        stats_path=snakemake.output.stats,
        knowledge=snakemake.params.knowledge,
        domain_name=snakemake.params.domain_name,
        domain=snakemake.params.domain,
        dbpedia=snakemake.params.dbpedia,
    )
except SparqlError as error:
    # Unreachable endpoint, exhausted budget, rejected query: one line in the log, no
    # traceback (everything fetched so far is in the query cache for the next run).
    log.error("%s: %s", snakemake.wildcards.dataset, error)
    sys.exit(1)
log.info("lookup_dbpedia %s: %s", snakemake.wildcards.dataset, result.stats)
