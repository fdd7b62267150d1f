"""REKALM library: every workflow stage as importable, typed functions.

Modules are named after the pipeline stages (download, prepare, split, mine_rules,
lookup_dbpedia, lexicalize, build_sets, prepare_model, train, merge, infer, evaluate,
compare); the Snakemake scripts in ``workflow_scripts/`` only read the ``snakemake``
object and call into them.
"""

__version__ = "0.1.0"
