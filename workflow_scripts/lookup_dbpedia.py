"""Factual knowledge of one dataset: triples, abstracts, mapping, stats (rekalm.knowledge.lookup_dbpedia).

A lookup error (endpoint, budget, malformed knowledge file) is one line in the log.
"""

from _common import start

log = start(snakemake)  # noqa: F821 (snakemake is injected by Snakemake)

import json
import sys
from pathlib import Path

from rekalm.knowledge.lookup_dbpedia import lookup_dbpedia_files
from rekalm.knowledge.sparql import SparqlError

downloads = snakemake.input.downloads
manifest = json.loads(Path(downloads).read_text()) if downloads else {}
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
        original_files={role: Path(entry["path"]) for role, entry in manifest.items()},
    )
except (SparqlError, ValueError) as error:
    # Unreachable endpoint, exhausted budget, rejected query, a malformed knowledge file:
    # one line in the log, no traceback (answers fetched so far stay in the query cache).
    log.error("%s: %s", snakemake.wildcards.dataset, error)
    sys.exit(1)
log.info("lookup_dbpedia %s: %s", snakemake.wildcards.dataset, result.stats)
