"""REKALM library: every workflow stage as importable, typed functions.

Modules are named after the pipeline stages (download, prepare, split, mine_rules,
lookup_dbpedia, lexicalize, build_sets, prepare_model, train, merge, infer, evaluate,
compare); the Snakemake scripts in ``workflow_scripts/`` only read the ``snakemake``
object and call into them.

A concept a stage needs beside its own gets a module of its own (e.g. ``bitset_apriori``
for mine_rules; ``domains``, ``label_match``, ``dbpedia_facts`` and ``oxigraph_server`` for
lookup_dbpedia).
"""

__version__ = "0.1.0"
